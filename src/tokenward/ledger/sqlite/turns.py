"""Turns at SQLite's write lock, taken without sleeping through them (issue 17).

SQLite's busy handler waits for a write lock by sleeping (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50,
100 ms, then 100 ms at a time) and trying again. Two gateway workers writing all the time hand the
lock back and forth within a fraction of a millisecond, so a waiter that went to sleep for 25 or
100 ms keeps finding it taken: one in a hundred calls waited a second and more (p99 1.2 s at ten
clients, where p50 was 50 ms). Each write transaction first takes its turn here: a lock between
the threads of one process, then an ``flock`` on ``<ledger>-turn`` between processes, which the
waiter polls every few hundred microseconds (the kernel drops it when its holder dies, so a
killed worker never keeps it). Past the ledger's busy time-out the transaction goes ahead without
its turn and meets SQLite's own lock and time-out, as before: a process that stopped while holding
a turn delays the others by the time-out, never forever.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

__all__ = ["WriteTurns"]

_FIRST_WAIT = 0.0001
_LONGEST_WAIT = 0.001


class WriteTurns:
    """Whose turn it is to write a SQLite file, across threads and processes.

    Args:
        path: the ledger file (the turn file is ``<path>-turn`` beside it).
        timeout: seconds to wait for a turn before going ahead without one.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.timeout = timeout
        self.path = f"{path}-turn"
        self._threads = threading.Lock()
        self._fd: int | None = None  # opened on the first turn, again after close()

    def take(self) -> bool:
        """Wait for the turn (up to the time-out); True when this thread has it (call
        :meth:`give_back` after the transaction), False when it goes ahead without."""
        deadline = time.monotonic() + self.timeout
        if not self._threads.acquire(timeout=self.timeout):
            return False
        wait = _FIRST_WAIT
        while True:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._threads.release()
                    return False
                time.sleep(wait)
                wait = min(wait * 2, _LONGEST_WAIT)
            except OSError:  # a file system without flock: SQLite's own lock only
                self._threads.release()
                return False

    def give_back(self) -> None:
        """End this thread's turn."""
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        """Close the turn file (a later turn opens it again)."""
        with self._threads:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
