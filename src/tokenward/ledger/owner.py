"""Who owns a reservation or a lease: this process, named so another process can tell whether it
still runs.

An owner is ``host/pid/start``: the machine's host name, the process id and the process's start
time (clock ticks since boot, from ``/proc/<pid>/stat`` field 22 on Linux; on systems without
``/proc`` the time this module was imported). The start time tells a process apart from a later one
that reused its id (a restarted container, where the gateway is process 1 again).

A process can only judge owners on its own machine: :func:`is_dead` answers True only for an
owner of this host whose process is gone (or was replaced); an owner of another host is never
judged dead here (its own restart, or the time to live, reclaims what it held).
"""

from __future__ import annotations

import functools
import os
import socket
import time

__all__ = ["is_dead", "this_process"]


def _stat(pid: int) -> list[bytes]:
    """Fields 3 onwards of ``/proc/<pid>/stat`` (Linux; empty when unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    # the command name (field 2) is in parentheses and may hold spaces: split after its end
    return raw[raw.rfind(b")") + 2 :].split()


def _start_ticks(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None when unknown."""
    fields = _stat(pid)
    return fields[19].decode() if len(fields) > 19 else None  # field 22 of the whole line


def _exited(pid: int) -> bool:
    """Whether process ``pid`` has exited but is not reaped yet (a zombie, state Z or X): a
    gateway worker killed with its supervisor stays one until something reaps it, and still
    answers ``kill(pid, 0)``."""
    fields = _stat(pid)
    return bool(fields) and fields[0] in (b"Z", b"X")


_IMPORTED = f"t{int(time.time() * 1000)}"


@functools.cache
def _host() -> str:
    return socket.gethostname().replace("/", "_") or "localhost"


_OWNER: tuple[int, str] | None = None


def this_process() -> str:
    """This process's owner string (computed again after a fork)."""
    global _OWNER
    pid = os.getpid()
    if _OWNER is None or _OWNER[0] != pid:
        _OWNER = (pid, f"{_host()}/{pid}/{_start_ticks(pid) or _IMPORTED}")
    return _OWNER[1]


def is_dead(owner: str | None) -> bool:
    """Whether ``owner`` names a process of this host that no longer runs (False when unknown:
    another host, a malformed owner, or a process that cannot be examined)."""
    if not owner:
        return False
    host, _, rest = owner.partition("/")
    pid_text, _, start = rest.partition("/")
    if host != _host() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if owner == this_process():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process runs under that id: judge by its start
        pass
    except OSError:
        return False
    if _exited(pid):
        return True
    if start.startswith("t"):  # no /proc where it was written: the id alone cannot say more
        return False
    current = _start_ticks(pid)
    return current is not None and current != start
