"""The guard: estimate, decide, reserve, then settle, for the SDK and the gateway alike.

:class:`Guard` (sync) and :class:`AsyncGuard` share their logic through :mod:`tokenward.guard.flow`
and the pure core; they differ only in how they call the ledger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

from tokenward.core.budgets import Subject
from tokenward.core.calibration import Calibration
from tokenward.core.decide import CallPlan, hold_amounts
from tokenward.core.events import UsageEvent
from tokenward.core.floor import floor_ratio
from tokenward.core.pricebook import PriceBook
from tokenward.errors import BudgetError, ConfigError
from tokenward.guard.context import context_total, conversation_size, looked_up
from tokenward.guard.flow import (
    TOOL_DEFINITION_TOKENS,
    Admission,
    CalibrationCache,
    GuardSettings,
    Outcome,
    build_event,
    calibrated_plan,
    held_too_little,
    observation,
)
from tokenward.guard.observers import Observers
from tokenward.guard.renewal import Renewer
from tokenward.guard.waiting import (
    Admit,
    ReadBalances,
    ReadCalibration,
    SettleSignal,
    Step,
    calibration_flow,
    reserve_flow,
)
from tokenward.guard.wire.degrade import Degrade, degrade_body
from tokenward.guard.wire.exchange import PreparedCall, degraded, prepare_body
from tokenward.ledger import AsyncLedger, Ledger, open_async_ledger, open_ledger
from tokenward.ledger.base import ThreadedAsyncLedger, new_id
from tokenward.ledger.records import Denial

__all__ = ["AsyncGuard", "Guard", "check_settings"]

log = logging.getLogger("tokenward.guard")

T = TypeVar("T")


def check_settings(settings: GuardSettings, prices: PriceBook) -> None:
    """Refuse an unknown-model policy the price book cannot serve, when the guard is built."""
    if settings.unknown_model not in ("flag", "default", "deny"):
        raise ConfigError(f"unknown_model must be flag, default or deny, got {settings.unknown_model!r}")
    if settings.unknown_model == "default" and prices.default_price is None:
        raise ConfigError("unknown_model: default needs a 'default' row in the price-override file")
    _check_settings_values(settings)


def call_plan(
    call: PreparedCall,
    guard: Any,
    provider: str,
    held_back: Mapping[str, Decimal] | None,
    context_tokens: int = 0,
    default_tier: str | None = None,
    whole: bool = False,
) -> CallPlan:
    """A prepared call's plan, with a final-answer reserve held back when given, the stored
    context it continues and its upstream's default service tier; ``whole``: never clamped
    (:attr:`~tokenward.core.decide.CallPlan.whole`)."""
    plan = call.plan(
        guard.prices, guard.settings, provider, context_tokens=context_tokens, default_tier=default_tier
    )
    if whole:
        plan = replace(plan, whole=True)
    return replace(plan, held_back=dict(held_back)) if held_back else plan


def event_of(guard: Any, admission: Admission, outcome: Outcome) -> UsageEvent:
    """The usage event to settle ``outcome`` with: priced by the guard's book, floored at the
    lower ratio of the model (lowered by a fresh calibration only; :mod:`tokenward.core.floor`)."""
    model = admission.plan.model
    cached = guard.calibration.cached(admission.calibration_key or model)
    return build_event(
        admission,
        outcome,
        guard.prices,
        unknown_model=guard.settings.unknown_model,
        floor_ratio=floor_ratio(model, cached),
    )


def _check_settings_values(settings: GuardSettings) -> None:
    policy = settings.unknown_context
    if policy != "deny" and (isinstance(policy, bool) or not isinstance(policy, int) or policy < 0):
        raise ConfigError(f"unknown_context must be 'deny' or a number of tokens >= 0, got {policy!r}")
    if settings.admission_wait_seconds < 0:
        raise ConfigError(
            f"admission_wait_seconds must be 0 or more, got {settings.admission_wait_seconds!r}"
        )


def degraded_on_denial(call: PreparedCall, policy: Degrade | None) -> tuple[PreparedCall, dict[str, Any]]:
    """The call degraded after the budgets refused it (explicit policies only)."""
    if policy is None or policy.marked_only:
        return call, {}
    body, changes = degrade_body(call.endpoint.dialect, call.body, policy)
    return (prepare_body(call.endpoint, body), changes) if changes else (call, {})


def hold_metadata(plan: CallPlan, endpoint: str | None, provider: str | None) -> dict[str, str]:
    """What a reservation keeps of its call, so a reclaimed hold's event names the call
    (:mod:`tokenward.ledger.reclaim`)."""
    out = {"model": plan.model}
    if endpoint:
        out["endpoint"] = endpoint
    if provider:
        out["provider"] = provider
    return out


def request_metadata(call: PreparedCall) -> dict[str, Any]:
    """What the call's event keeps from its request: the endpoint's own (a Responses
    conversation...) and the tool definitions' tokens as the estimator counted them (issue 16
    item 8; :attr:`~tokenward.core.events.UsageEvent.tool_definition_tokens`)."""
    out = call.endpoint.request_metadata(call.body)
    if call.estimate.tool_definition_tokens is not None:
        out = {**out, TOOL_DEFINITION_TOKENS: call.estimate.tool_definition_tokens}
    return out


def denial_of(
    guard: Any,
    subject: Subject,
    error: BudgetError,
    *,
    plan: CallPlan | None = None,
    amounts: Mapping[str, Decimal] | None = None,
    request_id: str | None = None,
    endpoint: str | None = None,
    provider: str | None = None,
) -> Denial:
    """The :class:`~tokenward.ledger.records.Denial` of a refused call, stamped by the ledger's
    clock: its estimate is what ``plan`` would have held at its full output bound
    (:func:`~tokenward.core.decide.hold_amounts`), or the ``amounts`` of a direct charge."""
    estimate = hold_amounts(plan, plan.max_output_tokens) if plan is not None else dict(amounts or {})
    return Denial.of(
        error,
        subject,
        guard.ledger.clock.now(),
        model=plan.model if plan is not None else None,
        request_id=request_id,
        estimate=estimate,
        endpoint=endpoint,
        provider=provider,
    )


def _with_model(event: UsageEvent) -> UsageEvent:
    """The event with its model in its subject, so per-model budgets apply to a recorded call."""
    subject = event.subject.with_model(event.model) if event.model else event.subject
    return event if subject is event.subject else replace(event, subject=subject)


def _ttl_of(admission: Admission) -> timedelta:
    """The time to live the call's reservation was made with (renewals keep it)."""
    return admission.reservation.expires_at - admission.reservation.created_at


class Guard:
    """Enforces budgets around calls, synchronously.

    Args:
        ledger: a :class:`~tokenward.ledger.Ledger` or its URL.
        prices: the price book (default: the pinned genai-prices table).
        settings: output bounds, reservation lifetime.
        observers: :class:`~tokenward.guard.observers.Observer` objects told about every
            admission, denial and settled event.
    """

    def __init__(
        self,
        ledger: Ledger | str | None = None,
        *,
        prices: PriceBook | None = None,
        settings: GuardSettings | None = None,
        observers: Sequence[object] = (),
    ) -> None:
        self.ledger: Ledger = ledger if isinstance(ledger, Ledger) else open_ledger(ledger)
        self.prices = prices or PriceBook.default()
        self.settings = settings or GuardSettings()
        self.observers = Observers(observers)
        check_settings(self.settings, self.prices)
        self.calibration = CalibrationCache()
        self.signal = SettleSignal()
        """Wakes the calls waiting for holds to settle when one of this guard's calls settles."""
        self.renewer = Renewer(lambda rid, ttl, _: self.ledger.extend(rid, ttl))
        """Extends the reservations of running calls each third of their time to live."""

    def admit(
        self,
        subject: Subject,
        plan: CallPlan,
        *,
        request_id: str | None = None,
        endpoint: str | None = None,
        provider: str | None = None,
        upstream: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        record: bool = True,
    ) -> Admission:
        """Decide (clamp the output bound, or deny) and reserve, in one atomic ledger step. The
        reservation is marked forwarded in that same step: a call admitted here goes to a
        provider, so if it is never settled (the process dies, an SDK stream is dropped unread)
        the ledger charges its hold instead of releasing it (:mod:`tokenward.ledger.reclaim`).

        The prompt estimate is calibrated for ``plan.model`` on ``upstream`` first (the calls
        behind the first call of a model and upstream never observed wait for it to settle, up to
        ``settings.admission_wait_seconds``). A call refused only because of amounts held by calls
        in flight waits for them to settle, up to the same time (:mod:`tokenward.guard.waiting`).
        A refusal (after any wait) is recorded in the ledger as a
        :class:`~tokenward.ledger.records.Denial` (``record=False``: it is left on the exception as ``denial`` for the caller to record).

        Raises:
            BudgetExceeded: a hard budget cannot pay even for the minimum output.
            UnpricedCall: a cost budget applies and the model has no price.
        """
        request_id = request_id or new_id("req")
        subject = subject.with_model(plan.model)  # per-model budgets judge the model sent
        estimated = plan.input_tokens
        key, exact = self.calibration.key(plan.model, upstream)
        wait = self.settings.admission_wait_seconds
        flow = calibration_flow(self.calibration, key, request_id, wait, self.signal)
        plan = calibrated_plan(plan, self._drive(flow, subject, request_id, key, exact))
        try:
            decision, reservation = self._drive(
                reserve_flow(plan, wait, self.signal), subject, request_id, key, exact,
                hold=hold_metadata(plan, endpoint, provider),
            )  # fmt: skip
        except BudgetError as exc:
            self.calibration.probe_dropped(key, request_id)
            self.observers.deny(subject, plan, exc)
            denial = denial_of(
                self, subject, exc, plan=plan, request_id=request_id, endpoint=endpoint, provider=provider
            )
            if record:
                self.record_denial(denial)
            else:
                exc.denial = denial  # type: ignore[attr-defined]  # for the caller to record
            raise
        except BaseException:
            self.calibration.probe_dropped(key, request_id)
            raise
        admission = Admission(
            request_id,
            subject,
            plan,
            decision,
            reservation,
            reservation.created_at,
            endpoint,
            provider,
            estimated_input_tokens=estimated,
            calibration_key=key,
            metadata=dict(metadata or {}),
        )
        self._watch(admission)
        self.observers.admit(admission)
        return admission

    def _drive(
        self,
        flow: Generator[Step, Any, T],
        subject: Subject,
        request_id: str,
        key: str,
        exact: bool,
        *,
        hold: Mapping[str, str] | None = None,
    ) -> T:
        """Run a flow of :mod:`tokenward.guard.waiting` against the ledger. An admission is
        reserved forwarded, with ``hold`` (:func:`hold_metadata`) kept on the reservation: a call
        still waiting holds nothing, so nothing of it is left to reclaim."""
        reply: Any = None
        while True:
            try:
                step = flow.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            reply = None
            if isinstance(step, Admit):
                try:
                    reply = self.ledger.admit(
                        subject, step.plan, ttl=self.settings.ttl, idempotency_key=request_id,
                        metadata=hold, forwarded=True,
                    )  # fmt: skip
                except BudgetError as exc:
                    reply = exc
            elif isinstance(step, ReadBalances):
                reply = self.ledger.balances(subject)
            elif isinstance(step, ReadCalibration):
                reply = self._calibration(key, exact)
            else:
                self.signal.wait(step.since, step.seconds)

    def _watch(self, admission: Admission) -> None:
        self.renewer.watch(admission.reservation.id, _ttl_of(admission), admission)

    def usage_event(self, admission: Admission, outcome: Outcome) -> UsageEvent:
        """The usage event :meth:`settle` would record for ``outcome`` (priced by the guard's
        book, floored at the model's own count), without writing anything: what an answer's
        budget headers are computed from before its settle is durable."""
        return event_of(self, admission, outcome)

    def settle(
        self, admission: Admission, outcome: Outcome, *, event: UsageEvent | None = None
    ) -> UsageEvent:
        """Charge the real usage in place of the hold and record the event (once per request).
        ``event``: the one :meth:`usage_event` made for ``outcome`` (not priced again)."""
        self.renewer.done(admission.reservation.id)
        try:
            priced = event if event is not None else event_of(self, admission, outcome)
            seen = observation(admission, outcome)
            together = seen is not None and hasattr(self.ledger, "settle_observed")
            if together:  # one write transaction for both (SQLite)
                event = self.ledger.settle_observed(admission.reservation.id, priced, seen)
            else:
                event = self.ledger.settle(admission.reservation.id, priced)
            self.observers.settle(event)
            if seen is not None and hasattr(self.ledger, "record_estimate"):
                if not together:
                    try:
                        self.ledger.record_estimate(*seen)
                    except Exception:  # calibration is best effort; the call is settled
                        log.exception("could not record the estimate observation of %s", admission.request_id)
                if held_too_little(admission, outcome):  # learn now, not at the cache's expiry
                    self.calibration.forget(seen[0])
        finally:
            self.calibration.probe_settled(admission.calibration_key, admission.request_id)
            self.signal.notify()
        return event

    def _calibration(self, key: str, exact: bool = False) -> Calibration | None:
        if not hasattr(self.ledger, "estimate_stats"):
            return None
        cached = self.calibration.cached(key)
        if cached is not None:
            return cached
        return self.calibration.store(key, self.ledger.estimate_stats(key), exact)

    def release(self, admission: Admission) -> bool:
        """Drop the hold of a call that never reached a provider."""
        self.renewer.done(admission.reservation.id)
        try:
            return self.ledger.release(admission.reservation.id)
        finally:
            self.calibration.probe_dropped(admission.calibration_key, admission.request_id)
            self.signal.notify()

    def stored_context(self, call: PreparedCall) -> int:
        """The stored context ``call`` continues, in tokens, from the events the ledger recorded
        (:mod:`tokenward.guard.context`).

        Raises:
            ValidationError: a reference the ledger does not know, under ``unknown_context: deny``.
        """
        refs = call.endpoint.stored_context(call.body)
        if not refs:
            return 0
        find = getattr(self.ledger, "event_by_metadata", None)
        return context_total(
            looked_up(ref, find(ref.kind, ref.id) if find else None, self.settings) for ref in refs
        )

    def record_conversation(
        self, subject: Subject, conversation: str, added: int, new: bool
    ) -> UsageEvent | None:
        """Record a conversation made or grown through tokenward (:func:`conversation_growth`):
        an event of no charge standing for its items so far, so a call adding to it is held for
        them. Items added to a conversation the ledger never saw are not recorded (its size stays
        unknown). Returns the event, or None."""
        find = getattr(self.ledger, "event_by_metadata", None)
        known = find("conversation", conversation) if find and not new else None
        total = conversation_size(new, added, known)
        if total is None:
            return None
        return self.charge_meter(
            subject, {}, metadata={"conversation": conversation, "context_tokens": total}
        )

    def admit_call(
        self,
        subject: Subject,
        call: PreparedCall,
        provider: str,
        *,
        request_id: str | None = None,
        degrade: Degrade | None = None,
        held_back: Mapping[str, Decimal] | None = None,
        upstream: str | None = None,
        default_tier: str | None = None,
        whole: bool = False,
    ) -> tuple[PreparedCall, Admission, dict[str, Any]]:
        """Plan and admit a prepared API call, applying ``degrade`` when a budget runs low.

        The plan holds the stored context the call continues (:meth:`stored_context`) and is
        priced at the service tier the request names, else ``default_tier`` (its upstream's),
        else the model's dearest. The degrade check reads the balances the admission was decided
        on (no second read); when it changes the call (a cheaper model, less reasoning) the first
        hold is released and the degraded call admitted in its place. A call the budgets refuse
        outright is tried once degraded (explicit policies only) before the denial is raised.

        Returns:
            (the call as it will be sent, its admission, what degrading changed or ``{}``).

        Raises:
            BudgetExceeded, UnpricedCall: as :meth:`admit`.
            ValidationError: stored context the ledger does not know (``unknown_context: deny``).
        """
        request_id = request_id or new_id("req")
        context = self.stored_context(call)

        def admit(prepared: PreparedCall, rid: str, record: bool = True) -> Admission:
            return self.admit(
                subject, call_plan(prepared, self, provider, held_back, context, default_tier, whole),
                request_id=rid, endpoint=call.endpoint.dialect, provider=provider, upstream=upstream,
                metadata=request_metadata(call), record=record,
            )  # fmt: skip

        try:
            admission = admit(call, request_id, record=False)
        except BudgetError as exc:
            rescued, changes = degraded_on_denial(call, degrade)
            if not changes:  # refused for good: recorded (a call degraded instead is not a denial)
                denial = getattr(exc, "denial", None)
                if denial is not None:
                    self.record_denial(denial)
                raise
            return rescued, admit(rescued, f"{request_id}:degraded"), changes
        cheaper, changes = degraded(call, admission.decision.balances, degrade)
        if not changes:
            return call, admission, {}
        self.release(admission)
        return cheaper, admit(cheaper, f"{request_id}:degraded"), changes

    def charge(self, event: UsageEvent) -> UsageEvent:
        """Charge a call whose usage is already known (a recorded call, a custom meter).

        The charge ``event.charged`` is held on every applicable budget at once, exactly as a
        reservation, then settled, so it is admitted only if it still fits every hard budget.

        Raises:
            BudgetExceeded: the charge does not fit; nothing is charged or recorded.
        """
        event = _with_model(event)
        try:
            reservation = self.ledger.reserve(
                event.subject, event.charged, ttl=self.settings.ttl, idempotency_key=event.request_id
            )
        except BudgetError as exc:
            self.observers.deny(event.subject, None, exc)
            self.record_denial(
                denial_of(self, event.subject, exc, amounts=event.charged, request_id=event.request_id)
            )
            raise
        stored = self.ledger.settle(reservation.id, event)
        self.observers.settle(stored)
        return stored

    def charge_meter(
        self,
        subject: Subject,
        amounts: Mapping[str, Decimal],
        *,
        request_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> UsageEvent:
        """Charge meters directly, custom ones included (``{"gpu_seconds": Decimal("12.5")}``,
        ``{"tool_calls": Decimal(1)}``), through :meth:`Ledger.charge_meter`: admitted against every
        hard budget of those meters, recorded as one usage event per ``request_id``.

        Raises:
            BudgetExceeded: the charge does not fit; nothing is charged or recorded.
        """
        try:
            stored = self.ledger.charge_meter(subject, amounts, request_id=request_id, metadata=metadata)
        except BudgetError as exc:
            self.observers.deny(subject, None, exc)
            self.record_denial(denial_of(self, subject, exc, amounts=amounts, request_id=request_id))
            raise
        self.observers.settle(stored)
        return stored

    def record_denial(self, denial: Denial) -> None:
        """Record a refusal in the ledger (:meth:`Ledger.record_denial`); a ledger that cannot
        take it is logged, never raised over the refusal itself."""
        record = getattr(self.ledger, "record_denial", None)
        if record is None:
            return
        try:
            record(denial)
        except Exception:
            log.exception("could not record the denial of %s", denial.request_id)

    def close(self) -> None:
        """Stop renewing holds and close the ledger."""
        self.renewer.close()
        self.ledger.close()


class AsyncGuard:
    """The async twin of :class:`Guard`: the same methods, awaited.

    Args:
        ledger: an :class:`~tokenward.ledger.AsyncLedger` or its URL.
        prices, settings: as for :class:`Guard`.
    """

    def __init__(
        self,
        ledger: AsyncLedger | str | None = None,
        *,
        prices: PriceBook | None = None,
        settings: GuardSettings | None = None,
        observers: Sequence[object] = (),
    ) -> None:
        self.observers = Observers(observers)
        self.ledger: AsyncLedger = (
            open_async_ledger(ledger) if ledger is None or isinstance(ledger, str) else ledger
        )
        self.prices = prices or PriceBook.default()
        self.settings = settings or GuardSettings()
        check_settings(self.settings, self.prices)
        self.calibration = CalibrationCache()
        self.signal = SettleSignal()
        """Wakes the calls waiting for holds to settle when one of this guard's calls settles."""
        self.renewer = Renewer(self._sync_extend)
        """Extends the reservations of running calls each third of their time to live."""

    def _sync_extend(
        self, reservation_id: str, ttl: timedelta, loop: asyncio.AbstractEventLoop | None
    ) -> bool:
        """The ledger's ``extend``, called from the renewer's thread: directly on the sync ledger
        under a :class:`ThreadedAsyncLedger`, else on the event loop that admitted the call."""
        if isinstance(self.ledger, ThreadedAsyncLedger):
            return self.ledger.sync.extend(reservation_id, ttl)
        if loop is None or loop.is_closed():
            return False
        future = asyncio.run_coroutine_threadsafe(self.ledger.extend(reservation_id, ttl), loop)
        return bool(future.result(timeout=max(ttl.total_seconds(), 1.0)))

    async def admit(
        self,
        subject: Subject,
        plan: CallPlan,
        *,
        request_id: str | None = None,
        endpoint: str | None = None,
        provider: str | None = None,
        upstream: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        record: bool = True,
    ) -> Admission:
        """As :meth:`Guard.admit`."""
        request_id = request_id or new_id("req")
        subject = subject.with_model(plan.model)  # per-model budgets judge the model sent
        estimated = plan.input_tokens
        key, exact = self.calibration.key(plan.model, upstream)
        wait = self.settings.admission_wait_seconds
        flow = calibration_flow(self.calibration, key, request_id, wait, self.signal)
        plan = calibrated_plan(plan, await self._drive(flow, subject, request_id, key, exact))
        try:
            decision, reservation = await self._drive(
                reserve_flow(plan, wait, self.signal), subject, request_id, key, exact,
                hold=hold_metadata(plan, endpoint, provider),
            )  # fmt: skip
        except BudgetError as exc:
            self.calibration.probe_dropped(key, request_id)
            self.observers.deny(subject, plan, exc)
            denial = denial_of(
                self, subject, exc, plan=plan, request_id=request_id, endpoint=endpoint, provider=provider
            )
            if record:
                await self.record_denial(denial)
            else:
                exc.denial = denial  # type: ignore[attr-defined]  # for the caller to record
            raise
        except BaseException:
            self.calibration.probe_dropped(key, request_id)
            raise
        admission = Admission(
            request_id,
            subject,
            plan,
            decision,
            reservation,
            reservation.created_at,
            endpoint,
            provider,
            estimated_input_tokens=estimated,
            calibration_key=key,
            metadata=dict(metadata or {}),
        )
        self._watch(admission)
        self.observers.admit(admission)
        return admission

    async def _drive(
        self,
        flow: Generator[Step, Any, T],
        subject: Subject,
        request_id: str,
        key: str,
        exact: bool,
        *,
        hold: Mapping[str, str] | None = None,
    ) -> T:
        """As :meth:`Guard._drive`."""
        reply: Any = None
        while True:
            try:
                step = flow.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            reply = None
            if isinstance(step, Admit):
                try:
                    reply = await self.ledger.admit(
                        subject, step.plan, ttl=self.settings.ttl, idempotency_key=request_id,
                        metadata=hold, forwarded=True,
                    )  # fmt: skip
                except BudgetError as exc:
                    reply = exc
            elif isinstance(step, ReadBalances):
                reply = await self.ledger.balances(subject)
            elif isinstance(step, ReadCalibration):
                reply = await self._calibration(key, exact)
            else:
                await self.signal.wait_async(step.since, step.seconds)

    def _watch(self, admission: Admission) -> None:
        loop = None if isinstance(self.ledger, ThreadedAsyncLedger) else asyncio.get_running_loop()
        self.renewer.watch(admission.reservation.id, _ttl_of(admission), admission, loop)

    def usage_event(self, admission: Admission, outcome: Outcome) -> UsageEvent:
        """As :meth:`Guard.usage_event`."""
        return event_of(self, admission, outcome)

    async def settle(
        self, admission: Admission, outcome: Outcome, *, event: UsageEvent | None = None
    ) -> UsageEvent:
        """As :meth:`Guard.settle`."""
        self.renewer.done(admission.reservation.id)
        try:
            priced = event if event is not None else event_of(self, admission, outcome)
            seen = observation(admission, outcome)
            together = seen is not None and hasattr(self.ledger, "settle_observed")
            if together:  # one write transaction for both (SQLite)
                event = await self.ledger.settle_observed(admission.reservation.id, priced, seen)
            else:
                event = await self.ledger.settle(admission.reservation.id, priced)
            self.observers.settle(event)
            if seen is not None and hasattr(self.ledger, "record_estimate"):
                if not together:
                    try:
                        await self.ledger.record_estimate(*seen)
                    except Exception:  # calibration is best effort; the call is settled
                        log.exception("could not record the estimate observation of %s", admission.request_id)
                if held_too_little(admission, outcome):  # learn now, not at the cache's expiry
                    self.calibration.forget(seen[0])
        finally:
            self.calibration.probe_settled(admission.calibration_key, admission.request_id)
            self.signal.notify()
        return event

    async def _calibration(self, key: str, exact: bool = False) -> Calibration | None:
        if not hasattr(self.ledger, "estimate_stats"):
            return None
        cached = self.calibration.cached(key)
        if cached is not None:
            return cached
        return self.calibration.store(key, await self.ledger.estimate_stats(key), exact)

    async def release(self, admission: Admission) -> bool:
        """As :meth:`Guard.release`."""
        self.renewer.done(admission.reservation.id)
        try:
            return await self.ledger.release(admission.reservation.id)
        finally:
            self.calibration.probe_dropped(admission.calibration_key, admission.request_id)
            self.signal.notify()

    async def stored_context(self, call: PreparedCall) -> int:
        """As :meth:`Guard.stored_context`."""
        refs = call.endpoint.stored_context(call.body)
        if not refs:
            return 0
        find = getattr(self.ledger, "event_by_metadata", None)
        found = [await find(ref.kind, ref.id) if find else None for ref in refs]
        return context_total(
            looked_up(ref, event, self.settings) for ref, event in zip(refs, found, strict=True)
        )

    async def record_conversation(
        self, subject: Subject, conversation: str, added: int, new: bool
    ) -> UsageEvent | None:
        """As :meth:`Guard.record_conversation`."""
        find = getattr(self.ledger, "event_by_metadata", None)
        known = await find("conversation", conversation) if find and not new else None
        total = conversation_size(new, added, known)
        if total is None:
            return None
        return await self.charge_meter(
            subject, {}, metadata={"conversation": conversation, "context_tokens": total}
        )

    async def admit_call(
        self,
        subject: Subject,
        call: PreparedCall,
        provider: str,
        *,
        request_id: str | None = None,
        degrade: Degrade | None = None,
        held_back: Mapping[str, Decimal] | None = None,
        upstream: str | None = None,
        default_tier: str | None = None,
        whole: bool = False,
    ) -> tuple[PreparedCall, Admission, dict[str, Any]]:
        """As :meth:`Guard.admit_call`."""
        request_id = request_id or new_id("req")
        context = await self.stored_context(call)

        async def admit(prepared: PreparedCall, rid: str, record: bool = True) -> Admission:
            return await self.admit(
                subject, call_plan(prepared, self, provider, held_back, context, default_tier, whole),
                request_id=rid, endpoint=call.endpoint.dialect, provider=provider, upstream=upstream,
                metadata=request_metadata(call), record=record,
            )  # fmt: skip

        try:
            admission = await admit(call, request_id, record=False)
        except BudgetError as exc:
            rescued, changes = degraded_on_denial(call, degrade)
            if not changes:  # refused for good: recorded (a call degraded instead is not a denial)
                denial = getattr(exc, "denial", None)
                if denial is not None:
                    await self.record_denial(denial)
                raise
            return rescued, await admit(rescued, f"{request_id}:degraded"), changes
        cheaper, changes = degraded(call, admission.decision.balances, degrade)
        if not changes:
            return call, admission, {}
        await self.release(admission)
        return cheaper, await admit(cheaper, f"{request_id}:degraded"), changes

    async def charge(self, event: UsageEvent) -> UsageEvent:
        """As :meth:`Guard.charge`."""
        event = _with_model(event)
        try:
            reservation = await self.ledger.reserve(
                event.subject, event.charged, ttl=self.settings.ttl, idempotency_key=event.request_id
            )
        except BudgetError as exc:
            self.observers.deny(event.subject, None, exc)
            await self.record_denial(
                denial_of(self, event.subject, exc, amounts=event.charged, request_id=event.request_id)
            )
            raise
        stored = await self.ledger.settle(reservation.id, event)
        self.observers.settle(stored)
        return stored

    async def charge_meter(
        self,
        subject: Subject,
        amounts: Mapping[str, Decimal],
        *,
        request_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> UsageEvent:
        """As :meth:`Guard.charge_meter`."""
        try:
            stored = await self.ledger.charge_meter(
                subject, amounts, request_id=request_id, metadata=metadata
            )
        except BudgetError as exc:
            self.observers.deny(subject, None, exc)
            await self.record_denial(denial_of(self, subject, exc, amounts=amounts, request_id=request_id))
            raise
        self.observers.settle(stored)
        return stored

    async def record_denial(self, denial: Denial) -> None:
        """As :meth:`Guard.record_denial`."""
        record = getattr(self.ledger, "record_denial", None)
        if record is None:
            return
        try:
            await record(denial)
        except Exception:
            log.exception("could not record the denial of %s", denial.request_id)

    async def close(self) -> None:
        """Stop renewing holds and close the ledger."""
        self.renewer.close()
        await self.ledger.close()
