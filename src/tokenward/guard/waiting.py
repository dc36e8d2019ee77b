"""Waiting for holds to settle instead of refusing a call that would fit against what is spent.

A burst of calls on one budget reserves before any of them settles: a call refused only because
of amounts *held* by calls still in flight (``used + requested <= limit``, so the budget would
take it once those holds turn into their real, usually smaller, charges) waits for them, up to
``GuardSettings.admission_wait_seconds``, then is admitted or refused on the settled figures
(:func:`worth_waiting`). The first call of a model and upstream never observed before is waited
for the same way, so the calls behind it are planned with the calibration it teaches.

While waiting, a call reads the budget's balances (a read, never the write lock), each time a
call of this guard settles or releases (:class:`SettleSignal`, in-process) and otherwise after a
backoff of 10 ms doubling to 250 ms with jitter (:func:`backoff`): so calls settled by other
processes sharing the ledger (gateway workers, replicas) are seen too, without polling the store
faster than four times a second per waiting call once the wait is long.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tokenward.core.calibration import Calibration
from tokenward.core.decide import Balance, CallPlan, Decision, decide
from tokenward.errors import BudgetError, BudgetExceeded, Stopped
from tokenward.guard.flow import CalibrationCache
from tokenward.ledger.base import Reservation

__all__ = [
    "Admit",
    "ReadBalances",
    "ReadCalibration",
    "SettleSignal",
    "Step",
    "Wait",
    "backoff",
    "blocked_by",
    "calibration_flow",
    "reserve_flow",
    "worth_waiting",
]

MAX_PROBE_POLL = 0.25
"""Seconds between two looks at whether the first call of a model and upstream has settled."""

FIRST_DELAY = 0.01
"""Seconds before the first re-read of the balances."""

MAX_DELAY = 0.25
"""The longest pause between two reads while waiting, in seconds."""


def worth_waiting(exc: BaseException) -> bool:
    """Whether a refusal may turn into an admission once the holds in flight settle: a hard
    budget (not a stop) refused it, amounts are held on it, and the call would fit against what
    is spent alone (``used + requested <= limit``)."""
    if not isinstance(exc, BudgetExceeded) or isinstance(exc, Stopped):
        return False
    if exc.mode != "hard" or exc.held <= 0:
        return False
    return exc.used + exc.requested <= exc.limit


def blocked_by(plan: CallPlan, balances: Sequence[Balance]) -> BudgetError | None:
    """The refusal ``plan`` meets on ``balances`` (read again while waiting), or None when it
    would be admitted now (the ledger then decides, atomically)."""
    try:
        decide(plan, balances)
    except BudgetError as exc:
        return exc
    return None


def backoff(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """The pause before read number ``attempt`` (0-based) while waiting, in seconds: 10 ms
    doubling to 250 ms, each with up to 50 % jitter so waiters do not read in step."""
    delay = min(MAX_DELAY, FIRST_DELAY * 2.0**attempt)
    return delay * (0.5 + rng() / 2)


class SettleSignal:
    """Wakes the calls of one guard waiting for holds to settle, when any call settles or
    releases (thread-safe; works for threads and for any number of event loops)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        self._generation = 0
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def generation(self) -> int:
        """How many settles and releases were signalled so far."""
        return self._generation

    def notify(self) -> None:
        """A hold was settled or released: wake every waiter."""
        with self._condition:
            self._generation += 1
            futures, self._futures = self._futures, []
            self._condition.notify_all()
        for loop, future in futures:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)

    def wait(self, since: int, timeout: float) -> None:
        """Block until a signal after generation ``since``, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._generation == since:
                left = deadline - time.monotonic()
                if left <= 0 or not self._condition.wait(left):
                    return

    async def wait_async(self, since: int, timeout: float) -> None:
        """The async twin of :meth:`wait`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._generation != since:
                return
            self._futures.append((loop, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._futures = [(lp, f) for lp, f in self._futures if f is not future]


@dataclass(frozen=True, slots=True)
class Admit:
    """Step: ``ledger.admit`` this plan; reply with ``(decision, reservation)`` or the
    :class:`~tokenward.errors.BudgetError` it raised."""

    plan: CallPlan


@dataclass(frozen=True, slots=True)
class ReadBalances:
    """Step: reply with ``ledger.balances(subject)``."""


@dataclass(frozen=True, slots=True)
class ReadCalibration:
    """Step: reply with the calibration of the call's key (the guard's cache, else the ledger)."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Step: wait for a settle after generation ``since``, at most ``seconds``; reply None."""

    since: int
    seconds: float


Step = Admit | ReadBalances | ReadCalibration | Wait
"""What a flow asks its guard to do; the sync and async guards drive the same flows."""


def reserve_flow(
    plan: CallPlan, wait_seconds: float, signal: SettleSignal
) -> Generator[Step, Any, tuple[Decision, Reservation]]:
    """Admit ``plan``, waiting for holds in flight to settle while that may let it in (up to
    ``wait_seconds``); returns the decision and reservation.

    Raises:
        BudgetError: the refusal the call meets once waiting cannot help (or time is up).
    """
    deadline = time.monotonic() + wait_seconds
    attempt = 0
    while True:
        since = signal.generation
        answer = yield Admit(plan)
        if not isinstance(answer, BudgetError):
            return answer  # type: ignore[no-any-return]
        if not worth_waiting(answer) or time.monotonic() >= deadline:
            raise answer
        while (left := deadline - time.monotonic()) > 0:
            yield Wait(since, min(backoff(attempt), left))
            attempt, since = attempt + 1, signal.generation
            plan = replace(plan, contended=True)
            blocked = blocked_by(plan, (yield ReadBalances()))
            if blocked is None:
                break
            if not worth_waiting(blocked):
                raise blocked


def calibration_flow(
    cache: CalibrationCache, key: str, request_id: str, wait_seconds: float, signal: SettleSignal
) -> Generator[Step, Any, Calibration | None]:
    """The calibration to plan with; for a key never observed, the call behind another's first
    call waits for it to settle (this process only, up to ``wait_seconds``), then reads what it
    taught."""
    calibration: Calibration | None = yield ReadCalibration()
    if calibration is None or calibration.observations or wait_seconds <= 0:
        return calibration
    deadline = time.monotonic() + wait_seconds
    waited = False
    while not cache.probe(key, request_id):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        waited = True
        yield Wait(signal.generation, min(left, MAX_PROBE_POLL))
    if not waited:
        return calibration
    cache.forget(key)
    return (yield ReadCalibration())  # type: ignore[no-any-return]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
