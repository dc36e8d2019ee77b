"""The guard: estimate, decide, reserve, then settle, for the SDK and the gateway alike.

:class:`Guard` (sync) and :class:`AsyncGuard` share their logic through :mod:`tokenward.guard.flow`
and the pure core; they differ only in how they call the ledger.
"""

from __future__ import annotations

from tokenward.core.budgets import Subject
from tokenward.core.decide import CallPlan
from tokenward.core.events import UsageEvent
from tokenward.core.pricebook import PriceBook
from tokenward.guard.flow import Admission, GuardSettings, Outcome, build_event
from tokenward.ledger import AsyncLedger, Ledger, open_async_ledger, open_ledger
from tokenward.ledger.base import new_id

__all__ = ["AsyncGuard", "Guard"]


class Guard:
    """Enforces budgets around calls, synchronously.

    Args:
        ledger: a :class:`~tokenward.ledger.Ledger` or its URL.
        prices: the price book (default: the pinned genai-prices table).
        settings: output bounds, reservation lifetime.
    """

    def __init__(
        self,
        ledger: Ledger | str | None = None,
        *,
        prices: PriceBook | None = None,
        settings: GuardSettings | None = None,
    ) -> None:
        self.ledger: Ledger = ledger if isinstance(ledger, Ledger) else open_ledger(ledger)
        self.prices = prices or PriceBook.default()
        self.settings = settings or GuardSettings()

    def admit(
        self,
        subject: Subject,
        plan: CallPlan,
        *,
        request_id: str | None = None,
        endpoint: str | None = None,
        provider: str | None = None,
    ) -> Admission:
        """Decide (clamp the output bound, or deny) and reserve, in one atomic ledger step.

        Raises:
            BudgetExceeded: a hard budget cannot pay even for the minimum output.
            UnpricedCall: a cost budget applies and the model has no price.
        """
        request_id = request_id or new_id("req")
        decision, reservation = self.ledger.admit(
            subject, plan, ttl=self.settings.ttl, idempotency_key=request_id
        )
        return Admission(
            request_id, subject, plan, decision, reservation, reservation.created_at, endpoint, provider
        )

    def settle(self, admission: Admission, outcome: Outcome) -> UsageEvent:
        """Charge the real usage in place of the hold and record the event (once per request)."""
        return self.ledger.settle(admission.reservation.id, build_event(admission, outcome, self.prices))

    def release(self, admission: Admission) -> bool:
        """Drop the hold of a call that never reached a provider."""
        return self.ledger.release(admission.reservation.id)

    def charge(self, event: UsageEvent) -> UsageEvent:
        """Charge a call whose usage is already known (a recorded call, a custom meter).

        The charge ``event.charged`` is held on every applicable budget at once, exactly as a
        reservation, then settled, so it is admitted only if it still fits every hard budget.

        Raises:
            BudgetExceeded: the charge does not fit; nothing is charged or recorded.
        """
        reservation = self.ledger.reserve(
            event.subject, event.charged, ttl=self.settings.ttl, idempotency_key=event.request_id
        )
        return self.ledger.settle(reservation.id, event)

    def close(self) -> None:
        """Close the ledger."""
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
    ) -> None:
        self.ledger: AsyncLedger = (
            open_async_ledger(ledger) if ledger is None or isinstance(ledger, str) else ledger
        )
        self.prices = prices or PriceBook.default()
        self.settings = settings or GuardSettings()

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
        decision, reservation = await self.ledger.admit(
            subject, plan, ttl=self.settings.ttl, idempotency_key=request_id
        )
        return Admission(
            request_id, subject, plan, decision, reservation, reservation.created_at, endpoint, provider
        )

    async def settle(self, admission: Admission, outcome: Outcome) -> UsageEvent:
        """As :meth:`Guard.settle`."""
        return await self.ledger.settle(
            admission.reservation.id, build_event(admission, outcome, self.prices)
        )

    async def release(self, admission: Admission) -> bool:
        """As :meth:`Guard.release`."""
        return await self.ledger.release(admission.reservation.id)

    async def charge(self, event: UsageEvent) -> UsageEvent:
        """As :meth:`Guard.charge`."""
        reservation = await self.ledger.reserve(
            event.subject, event.charged, ttl=self.settings.ttl, idempotency_key=event.request_id
        )
        return await self.ledger.settle(reservation.id, event)

    async def close(self) -> None:
        """Close the ledger."""
        await self.ledger.close()
