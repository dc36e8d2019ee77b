"""Settling a call after its answer is sent, not before (issue 17).

A call's usage event is priced when its answer is complete, so the answer's budget headers are
exact; the ledger write that makes the event durable (and releases the hold) runs once the last
byte has been handed to the server, off the response path. Until then the call's hold stays in the
ledger, so a hard budget counts the call at its hold meanwhile: never less than it cost.

What a process can have waiting to settle is bounded (:data:`SETTLE_QUEUE`): past it, new
admissions wait until settles catch up, so a stalled ledger slows admissions instead of piling up
unsettled calls. An admission waits at most :data:`SETTLE_WAIT` seconds for room; past that it is
refused as the ledger being unavailable (503 ``ledger_unavailable``), not left hanging. *Settle lag* is the time from the end of an answer to its event being durable;
with Prometheus on it is reported as ``tokenward_settle_lag_seconds``.

A process killed between an answer and its settle leaves the call's reservation marked forwarded;
the restart charges it at its hold (:mod:`tokenward.ledger.reclaim`): the call is charged, at most
what was held, never lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

from tokenward.errors import StoreUnavailable

__all__ = ["SETTLE_QUEUE", "SETTLE_WAIT", "SettleAfter", "Settlements", "defer", "settle_now"]

SETTLE_QUEUE = 1024
"""Calls a gateway process may have answered but not yet settled; past this, admissions wait."""

SETTLE_WAIT = 30.0
"""Seconds an admission waits for room among the calls waiting to settle before it is refused."""

_SCOPE_KEY = "tokenward.settle_after"


class Settlements:
    """The calls of one process answered and waiting to settle, and their settle lag.

    Args:
        limit: answered calls that may wait to settle at once.
        observe_lag: called with each settle lag, in seconds (a Prometheus histogram).
        wait: seconds :meth:`room` waits for room before it gives up.
    """

    def __init__(
        self,
        limit: int = SETTLE_QUEUE,
        observe_lag: Callable[[float], None] | None = None,
        wait: float = SETTLE_WAIT,
    ) -> None:
        self.limit = limit
        self.wait = wait
        self.pending = 0
        self.observe_lag = observe_lag
        self._room = asyncio.Event()
        self._room.set()

    async def room(self) -> None:
        """Wait until fewer than ``limit`` answered calls are waiting to settle.

        Raises:
            StoreUnavailable: when there is still no room after ``wait`` seconds (the ledger is
                stalled or far behind: the call is refused, not made).
        """
        if self.pending < self.limit:
            return
        deadline = time.monotonic() + self.wait
        while self.pending >= self.limit:
            self._room.clear()
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                await asyncio.wait_for(self._room.wait(), left)
            except TimeoutError:
                raise StoreUnavailable(
                    f"the ledger is behind: {self.pending} answered calls are waiting to settle,"
                    f" and none was settled in the {self.wait:g} s this call waited for room"
                ) from None

    def waiting(self) -> None:
        """One more answered call waits to settle."""
        self.pending += 1

    def settled(self, ended: float) -> None:
        """An answered call whose answer ended at ``ended`` (``time.monotonic()``) was settled."""
        self.pending -= 1
        if self.pending < self.limit:
            self._room.set()
        if self.observe_lag is not None:
            self.observe_lag(max(0.0, time.monotonic() - ended))


def defer(scope: Scope, settle: Callable[[float], Awaitable[None]]) -> None:
    """Have ``settle`` run once the answer to the request of ``scope`` has been sent (or has
    failed to be), called with the answer's end (``time.monotonic()``): :class:`SettleAfter`
    or :func:`settle_now` runs it."""
    scope.setdefault(_SCOPE_KEY, []).append(settle)


async def settle_now(scope: Scope) -> None:
    """Run the settles waiting on ``scope``'s answer now (shielded from cancellation): the
    request ended without an answer being sent."""
    ended = time.monotonic()
    with anyio.CancelScope(shield=True):
        for settle in scope.pop(_SCOPE_KEY, []):
            await settle(ended)


class SettleAfter:
    """An ASGI answer that sends ``response`` and then settles the calls deferred on its request,
    whatever way sending ended (a client gone included)."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.status_code = response.status_code

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            await settle_now(scope)
