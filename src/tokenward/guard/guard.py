"""The guard: estimate, decide, reserve, then settle, for the SDK and the gateway alike.

:class:`Guard` (sync) and :class:`AsyncGuard` share their logic through :mod:`tokenward.guard.flow`
and the pure core; they differ only in how they call the ledger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from tokenward.core.budgets import Subject
from tokenward.core.calibration import Calibration
from tokenward.core.decide import CallPlan
from tokenward.core.events import UsageEvent
from tokenward.core.floor import floor_ratio
from tokenward.core.pricebook import PriceBook
from tokenward.errors import BudgetError, ConfigError
from tokenward.guard.flow import (
    Admission,
    CalibrationCache,
    GuardSettings,
    Outcome,
    build_event,
    calibrated_plan,
    observation,
)
from tokenward.guard.observers import Observers
from tokenward.guard.renewal import Renewer
from tokenward.guard.wire.degrade import Degrade, degrade_body
from tokenward.guard.wire.exchange import PreparedCall, degraded, prepare_body
from tokenward.ledger import AsyncLedger, Ledger, open_async_ledger, open_ledger
from tokenward.ledger.base import ThreadedAsyncLedger, new_id

__all__ = ["AsyncGuard", "Guard"]

log = logging.getLogger("tokenward.guard")


def _check_settings(settings: GuardSettings, prices: PriceBook) -> None:
    """Refuse an unknown-model policy the price book cannot serve, when the guard is built."""
    if settings.unknown_model not in ("flag", "default", "deny"):
        raise ConfigError(f"unknown_model must be flag, default or deny, got {settings.unknown_model!r}")
    if settings.unknown_model == "default" and prices.default_price is None:
        raise ConfigError("unknown_model: default needs a 'default' row in the price-override file")


def call_plan(
    call: PreparedCall, guard: Any, provider: str, held_back: Mapping[str, Decimal] | None
) -> CallPlan:
    """A prepared call's plan, with a final-answer reserve held back when given."""
    plan = call.plan(guard.prices, guard.settings, provider)
    return replace(plan, held_back=dict(held_back)) if held_back else plan


def event_of(guard: Any, admission: Admission, outcome: Outcome) -> UsageEvent:
    """The usage event to settle ``outcome`` with: priced by the guard's book, floored at the
    lower ratio of the model (lowered by a fresh calibration only; :mod:`tokenward.core.floor`)."""
    model = admission.plan.model
    return build_event(
        admission,
        outcome,
        guard.prices,
        unknown_model=guard.settings.unknown_model,
        floor_ratio=floor_ratio(model, guard.calibration.cached(model)),
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
        _check_settings(self.settings, self.prices)
        self.calibration = CalibrationCache()
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
    ) -> Admission:
        """Decide (clamp the output bound, or deny) and reserve, in one atomic ledger step. The
        reservation is marked forwarded in that same step: a call admitted here goes to a
        provider, so if it is never settled (the process dies, an SDK stream is dropped unread)
        the ledger charges its hold instead of releasing it (:mod:`tokenward.ledger.reclaim`).

        Raises:
            BudgetExceeded: a hard budget cannot pay even for the minimum output.
            UnpricedCall: a cost budget applies and the model has no price.
        """
        request_id = request_id or new_id("req")
        estimated = plan.input_tokens
        plan = calibrated_plan(plan, self._calibration(plan.model))
        try:
            decision, reservation = self.ledger.admit(
                subject, plan, ttl=self.settings.ttl, idempotency_key=request_id,
                metadata=hold_metadata(plan, endpoint, provider), forwarded=True,
            )  # fmt: skip
        except BudgetError as exc:
            self.observers.deny(subject, plan, exc)
            raise
        admission = Admission(
            request_id, subject, plan, decision, reservation, reservation.created_at, endpoint, provider
        )
        admission = replace(admission, estimated_input_tokens=estimated)
        self._watch(admission)
        self.observers.admit(admission)
        return admission

    def _watch(self, admission: Admission) -> None:
        self.renewer.watch(admission.reservation.id, _ttl_of(admission), admission)

    def settle(self, admission: Admission, outcome: Outcome) -> UsageEvent:
        """Charge the real usage in place of the hold and record the event (once per request)."""
        self.renewer.done(admission.reservation.id)
        event = self.ledger.settle(
            admission.reservation.id,
            event_of(self, admission, outcome),
        )
        self.observers.settle(event)
        seen = observation(admission, outcome)
        if seen is not None and hasattr(self.ledger, "record_estimate"):
            try:
                self.ledger.record_estimate(*seen)
            except Exception:  # calibration is best effort; the call is settled
                log.exception("could not record the estimate observation of %s", admission.request_id)
            if seen[2] > admission.plan.input_tokens:  # held too little for the prompt: learn now
                self.calibration.forget(seen[0])
        return event

    def _calibration(self, model: str) -> Calibration | None:
        if not self.calibration.wanted(model) or not hasattr(self.ledger, "estimate_stats"):
            return None
        cached = self.calibration.cached(model)
        if cached is not None:
            return cached
        return self.calibration.store(model, self.ledger.estimate_stats(model))

    def release(self, admission: Admission) -> bool:
        """Drop the hold of a call that never reached a provider."""
        self.renewer.done(admission.reservation.id)
        return self.ledger.release(admission.reservation.id)

    def admit_call(
        self,
        subject: Subject,
        call: PreparedCall,
        provider: str,
        *,
        request_id: str | None = None,
        degrade: Degrade | None = None,
        held_back: Mapping[str, Decimal] | None = None,
    ) -> tuple[PreparedCall, Admission, dict[str, Any]]:
        """Plan and admit a prepared API call, applying ``degrade`` when a budget runs low.

        The degrade check reads the balances the admission was decided on (no second read);
        when it changes the call (a cheaper model, less reasoning) the first hold is released and
        the degraded call admitted in its place. A call the budgets refuse outright is tried once
        degraded (explicit policies only) before the denial is raised.

        Returns:
            (the call as it will be sent, its admission, what degrading changed or ``{}``).

        Raises:
            BudgetExceeded, UnpricedCall: as :meth:`admit`.
        """
        request_id = request_id or new_id("req")
        try:
            admission = self.admit(
                subject, call_plan(call, self, provider, held_back), request_id=request_id,
                endpoint=call.endpoint.dialect, provider=provider,
            )  # fmt: skip
        except BudgetError:
            rescued, changes = degraded_on_denial(call, degrade)
            if not changes:
                raise
            admission = self.admit(
                subject, call_plan(rescued, self, provider, held_back), request_id=f"{request_id}:degraded",
                endpoint=call.endpoint.dialect, provider=provider,
            )  # fmt: skip
            return rescued, admission, changes
        cheaper, changes = degraded(call, admission.decision.balances, degrade)
        if not changes:
            return call, admission, {}
        self.release(admission)
        admission = self.admit(
            subject, call_plan(cheaper, self, provider, held_back), request_id=f"{request_id}:degraded",
            endpoint=call.endpoint.dialect, provider=provider,
        )  # fmt: skip
        return cheaper, admission, changes

    def charge(self, event: UsageEvent) -> UsageEvent:
        """Charge a call whose usage is already known (a recorded call, a custom meter).

        The charge ``event.charged`` is held on every applicable budget at once, exactly as a
        reservation, then settled, so it is admitted only if it still fits every hard budget.

        Raises:
            BudgetExceeded: the charge does not fit; nothing is charged or recorded.
        """
        try:
            reservation = self.ledger.reserve(
                event.subject, event.charged, ttl=self.settings.ttl, idempotency_key=event.request_id
            )
        except BudgetError as exc:
            self.observers.deny(event.subject, None, exc)
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
            raise
        self.observers.settle(stored)
        return stored

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
        _check_settings(self.settings, self.prices)
        self.calibration = CalibrationCache()
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
    ) -> Admission:
        """As :meth:`Guard.admit`."""
        request_id = request_id or new_id("req")
        estimated = plan.input_tokens
        plan = calibrated_plan(plan, await self._calibration(plan.model))
        try:
            decision, reservation = await self.ledger.admit(
                subject, plan, ttl=self.settings.ttl, idempotency_key=request_id,
                metadata=hold_metadata(plan, endpoint, provider), forwarded=True,
            )  # fmt: skip
        except BudgetError as exc:
            self.observers.deny(subject, plan, exc)
            raise
        admission = Admission(
            request_id, subject, plan, decision, reservation, reservation.created_at, endpoint, provider
        )
        admission = replace(admission, estimated_input_tokens=estimated)
        self._watch(admission)
        self.observers.admit(admission)
        return admission

    def _watch(self, admission: Admission) -> None:
        loop = None if isinstance(self.ledger, ThreadedAsyncLedger) else asyncio.get_running_loop()
        self.renewer.watch(admission.reservation.id, _ttl_of(admission), admission, loop)

    async def settle(self, admission: Admission, outcome: Outcome) -> UsageEvent:
        """As :meth:`Guard.settle`."""
        self.renewer.done(admission.reservation.id)
        event = await self.ledger.settle(
            admission.reservation.id,
            event_of(self, admission, outcome),
        )
        self.observers.settle(event)
        seen = observation(admission, outcome)
        if seen is not None and hasattr(self.ledger, "record_estimate"):
            try:
                await self.ledger.record_estimate(*seen)
            except Exception:  # calibration is best effort; the call is settled
                log.exception("could not record the estimate observation of %s", admission.request_id)
            if seen[2] > admission.plan.input_tokens:  # held too little for the prompt: learn now
                self.calibration.forget(seen[0])
        return event

    async def _calibration(self, model: str) -> Calibration | None:
        if not self.calibration.wanted(model) or not hasattr(self.ledger, "estimate_stats"):
            return None
        cached = self.calibration.cached(model)
        if cached is not None:
            return cached
        return self.calibration.store(model, await self.ledger.estimate_stats(model))

    async def release(self, admission: Admission) -> bool:
        """As :meth:`Guard.release`."""
        self.renewer.done(admission.reservation.id)
        return await self.ledger.release(admission.reservation.id)

    async def admit_call(
        self,
        subject: Subject,
        call: PreparedCall,
        provider: str,
        *,
        request_id: str | None = None,
        degrade: Degrade | None = None,
        held_back: Mapping[str, Decimal] | None = None,
    ) -> tuple[PreparedCall, Admission, dict[str, Any]]:
        """As :meth:`Guard.admit_call`."""
        request_id = request_id or new_id("req")
        try:
            admission = await self.admit(
                subject, call_plan(call, self, provider, held_back), request_id=request_id,
                endpoint=call.endpoint.dialect, provider=provider,
            )  # fmt: skip
        except BudgetError:
            rescued, changes = degraded_on_denial(call, degrade)
            if not changes:
                raise
            admission = await self.admit(
                subject, call_plan(rescued, self, provider, held_back), request_id=f"{request_id}:degraded",
                endpoint=call.endpoint.dialect, provider=provider,
            )  # fmt: skip
            return rescued, admission, changes
        cheaper, changes = degraded(call, admission.decision.balances, degrade)
        if not changes:
            return call, admission, {}
        await self.release(admission)
        admission = await self.admit(
            subject, call_plan(cheaper, self, provider, held_back), request_id=f"{request_id}:degraded",
            endpoint=call.endpoint.dialect, provider=provider,
        )  # fmt: skip
        return cheaper, admission, changes

    async def charge(self, event: UsageEvent) -> UsageEvent:
        """As :meth:`Guard.charge`."""
        try:
            reservation = await self.ledger.reserve(
                event.subject, event.charged, ttl=self.settings.ttl, idempotency_key=event.request_id
            )
        except BudgetError as exc:
            self.observers.deny(event.subject, None, exc)
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
            raise
        self.observers.settle(stored)
        return stored

    async def close(self) -> None:
        """Stop renewing holds and close the ledger."""
        self.renewer.close()
        await self.ledger.close()
