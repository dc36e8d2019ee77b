"""Saying a repeated thing once a minute: a log line per outage, not one per call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["Throttle"]


class Throttle:
    """Lets one message per key through every ``every`` seconds and counts the ones held back.

    Args:
        every: seconds between two messages of one key (default 60).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._next: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def due(self, key: Hashable = None) -> int | None:
        """None when a message of ``key`` went through less than ``every`` seconds ago (this one
        is counted as held back); else how many were held back since the last one (0 or more),
        and this one goes through."""
        now = self._clock()
        with self._lock:
            if now < self._next.get(key, 0.0):
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._next[key] = now + self.every
            return self._held.pop(key, 0)
