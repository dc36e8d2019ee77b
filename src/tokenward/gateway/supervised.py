"""What a worker of ``tokenward serve --workers N`` knows of its supervisor
(:mod:`tokenward.gateway.workers`); imports nothing of the gateway."""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["SUPERVISOR_ENV", "ask_supervisor_to_reload"]

SUPERVISOR_ENV = "TOKENWARD_SUPERVISOR_PID"
"""Set in each worker's environment to the supervisor's pid (a reload asks it to reload all)."""


def ask_supervisor_to_reload() -> bool:
    """From a worker: have the supervisor reload every worker (SIGHUP); False when this process
    is not a supervised worker."""
    pid = os.environ.get(SUPERVISOR_ENV)
    if not pid or int(pid) != os.getppid():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(pid), signal.SIGHUP)
        return True
    return False
