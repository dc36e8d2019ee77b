"""A queue drained by one daemon thread: how observers stay quick on the guard's path."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Worker"]

log = logging.getLogger("tokenward.observe")


class Worker:
    """Runs ``handle(item)`` for each submitted item, in order, in one background thread.

    Args:
        handle: the function; an exception is logged and the worker goes on.
        name: the thread's name.
        max_queue: items waiting at most; beyond it :meth:`submit` drops the item and logs it
            (an observer must never block the call it watches).
    """

    def __init__(self, handle: Callable[[Any], None], *, name: str, max_queue: int = 100_000) -> None:
        self.handle = handle
        self.name = name
        self._queue: queue.Queue[Any] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self.handle(item)
            except Exception:
                log.exception("%s failed on %r", self.name, item)
            finally:
                self._queue.task_done()

    def submit(self, item: Any) -> bool:
        """Queue ``item``; starts the thread on first use.

        Returns:
            True when ``item`` was queued, False when it was dropped (the queue held
            ``max_queue`` items): a caller remembering what it queued must forget this one.
        """
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            log.error("%s: queue full, dropped one item (%d so far)", self.name, self.dropped)
            return False
        return True

    def flush(self) -> None:
        """Wait until every queued item has been handled."""
        self._queue.join()

    def stop(self, timeout: float = 10.0) -> None:
        """Handle what is queued, then end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)


_STOP = object()
