"""The ledger contract, written once over a transactional store.

:class:`TransactionalLedger` holds the whole reserve / settle / release / reap logic. A backend
supplies a transaction (a process lock for ``memory://``, ``BEGIN IMMEDIATE`` for SQLite) and a
handful of primitive reads and writes that run inside it; every contract step is one
transaction, so the check and the hold are atomic wherever the store's transaction is.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenward.clock import Clock, SystemClock, utc
from tokenward.core.budgets import Budget, Subject, applicable
from tokenward.core.decide import Balance, CallPlan, Decision, admission_check, decide, decision_of
from tokenward.core.events import UsageEvent
from tokenward.errors import ValidationError
from tokenward.ledger.base import DEFAULT_TTL, Hold, Reservation, new_id

__all__ = ["TransactionalLedger"]

ZERO = Decimal(0)


class TransactionalLedger(abc.ABC):
    """Base class: the contract over primitives that run inside ``_transaction()``."""

    url: str

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()

    # -- primitives a backend provides ----------------------------------------------------------
    @abc.abstractmethod
    def _transaction(self, write: bool = True) -> AbstractContextManager[None]:
        """A transaction; with ``write=True`` it excludes every other writer until it ends."""

    @abc.abstractmethod
    def _load_budgets(self) -> list[Budget]: ...

    @abc.abstractmethod
    def _store_budget(self, budget: Budget) -> None: ...

    @abc.abstractmethod
    def _remove_budget(self, name: str) -> bool: ...

    @abc.abstractmethod
    def _balance(self, budget: str, subject_id: str, window_key: str) -> tuple[Decimal, Decimal]:
        """(spent, held) of one budget instance; zeros when it has none yet."""

    @abc.abstractmethod
    def _adjust(self, budget: str, subject_id: str, window_key: str, spent: Decimal, held: Decimal) -> None:
        """Add the deltas to one budget instance's spent and held."""

    @abc.abstractmethod
    def _get_reservation(self, reservation_id: str) -> Reservation | None: ...

    @abc.abstractmethod
    def _find_idempotent(self, key: str) -> Reservation | None: ...

    @abc.abstractmethod
    def _put_reservation(self, reservation: Reservation) -> None: ...

    @abc.abstractmethod
    def _set_state(self, reservation_id: str, state: str) -> None: ...

    @abc.abstractmethod
    def _expired(self, now: datetime) -> list[Reservation]:
        """Active reservations whose ``expires_at`` is at or before ``now``."""

    @abc.abstractmethod
    def _get_event(self, request_id: str) -> UsageEvent | None: ...

    @abc.abstractmethod
    def _insert_event(self, event: UsageEvent) -> None: ...

    @abc.abstractmethod
    def _query_events(
        self, subject: Subject | None, since: datetime | None, until: datetime | None, limit: int | None
    ) -> list[UsageEvent]: ...

    def close(self) -> None:  # noqa: B027 - a hook; the memory store has nothing to release
        """Release connections (nothing to do by default)."""

    # -- the contract ------------------------------------------------------------------------------
    def put_budget(self, budget: Budget) -> None:
        """Create or replace a budget by name; its balances are kept."""
        with self._transaction():
            self._store_budget(budget)

    def get_budget(self, name: str) -> Budget | None:
        """The budget called ``name``, or None."""
        with self._transaction(write=False):
            return next((b for b in self._load_budgets() if b.name == name), None)

    def delete_budget(self, name: str) -> bool:
        """Delete a budget; returns whether it existed. Its events stay."""
        with self._transaction():
            return self._remove_budget(name)

    def budgets(self) -> list[Budget]:
        """Every budget, sorted by name."""
        with self._transaction(write=False):
            return sorted(self._load_budgets(), key=lambda b: b.name)

    def _balances(self, subject: Subject, at: datetime) -> list[Balance]:
        pairs = sorted(applicable(self._load_budgets(), subject), key=lambda p: (p[0].name, p[1]))
        out = []
        for budget, subject_id in pairs:
            key = budget.window.key(at)
            spent, held = self._balance(budget.name, subject_id, key)
            out.append(Balance(budget, subject_id, key, spent, held, budget.window.reset_at(at)))
        return out

    def balances(self, subject: Subject, at: datetime | None = None) -> list[Balance]:
        """Every budget instance applying to ``subject`` in the window containing ``at`` (now)."""
        with self._transaction(write=False):
            return self._balances(subject, utc(at) if at else self.clock.now())

    def _reap(self, now: datetime) -> int:
        expired = self._expired(now)
        for reservation in expired:
            for hold in reservation.holds:
                self._adjust(hold.budget, hold.subject_id, hold.window_key, ZERO, -hold.amount)
            self._set_state(reservation.id, "expired")
        return len(expired)

    def reap(self) -> int:
        """Expire reservations past their time to live, releasing their holds; returns how many."""
        with self._transaction():
            return self._reap(self.clock.now())

    def _hold(
        self,
        subject: Subject,
        balances: list[Balance],
        amounts: Mapping[str, Decimal],
        now: datetime,
        ttl: timedelta,
        idempotency_key: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> Reservation:
        holds = tuple(
            Hold(b.budget.name, b.subject_id, b.window_key, b.budget.meter, amounts[b.budget.meter])
            for b in balances
            if b.budget.meter in amounts
        )
        for hold in holds:
            self._adjust(hold.budget, hold.subject_id, hold.window_key, ZERO, hold.amount)
        reservation = Reservation(
            id=new_id(),
            subject=subject,
            amounts=dict(amounts),
            holds=holds,
            created_at=now,
            expires_at=now + ttl,
            idempotency_key=idempotency_key,
            metadata=dict(metadata or {}),
        )
        self._put_reservation(reservation)
        return reservation

    def reserve(
        self,
        subject: Subject,
        amounts: Mapping[str, Decimal],
        *,
        ttl: timedelta = DEFAULT_TTL,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Reservation:
        """Hold ``amounts`` (by meter) on every applicable budget, all or nothing.

        Raises:
            BudgetExceeded: the first hard budget that cannot take the hold; nothing is held.
        """
        now = self.clock.now()
        with self._transaction():
            self._reap(now)
            if idempotency_key is not None:
                earlier = self._find_idempotent(idempotency_key)
                if earlier is not None:
                    return earlier
            balances = self._balances(subject, now)
            denial = admission_check(balances, amounts)
            if denial is not None:
                raise denial
            return self._hold(subject, balances, amounts, now, ttl, idempotency_key, metadata)

    def admit(
        self,
        subject: Subject,
        plan: CallPlan,
        *,
        ttl: timedelta = DEFAULT_TTL,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[Decision, Reservation]:
        """Decide (clamp or deny, :func:`~tokenward.core.decide.decide`) and reserve, in one
        transaction: the decision is made on the balances the hold is taken against.

        Raises:
            BudgetExceeded: a hard budget cannot pay even for the plan's minimum output.
            UnpricedCall: a hard cost budget applies and the model is unpriced.
        """
        now = self.clock.now()
        with self._transaction():
            self._reap(now)
            if idempotency_key is not None:
                earlier = self._find_idempotent(idempotency_key)
                if earlier is not None:
                    return decision_of(earlier), earlier
            balances = self._balances(subject, now)
            decision = decide(plan, balances)
            return decision, self._hold(
                subject, balances, decision.amounts, now, ttl, idempotency_key, metadata
            )

    def settle(self, reservation_id: str | None, event: UsageEvent) -> UsageEvent:
        """Replace the hold with ``event.charged`` and append ``event``, once per request id."""
        with self._transaction():
            existing = self._get_event(event.request_id)
            if existing is not None:
                return existing
            reservation = self._get_reservation(reservation_id) if reservation_id else None
            at = event.at
            deltas: dict[tuple[str, str, str], list[Decimal]] = {}
            if reservation is not None:
                at = reservation.created_at
                if reservation.state == "active":
                    for hold in reservation.holds:
                        deltas.setdefault((hold.budget, hold.subject_id, hold.window_key), [ZERO, ZERO])[
                            1
                        ] -= hold.amount
                self._set_state(reservation.id, "settled")
                event = event.with_reservation(reservation.id, reservation.amounts)
            for budget, subject_id in applicable(self._load_budgets(), event.subject):
                amount = event.charged.get(budget.meter)
                if amount:
                    deltas.setdefault((budget.name, subject_id, budget.window.key(at)), [ZERO, ZERO])[0] += (
                        amount
                    )
            for (budget_name, subject_id, window_key), (spent, held) in deltas.items():
                if spent or held:
                    self._adjust(budget_name, subject_id, window_key, spent, held)
            self._insert_event(event)
            return event

    def release(self, reservation_id: str) -> bool:
        """Drop an active hold without charging; returns whether anything was released."""
        with self._transaction():
            reservation = self._get_reservation(reservation_id)
            if reservation is None or reservation.state != "active":
                return False
            for hold in reservation.holds:
                self._adjust(hold.budget, hold.subject_id, hold.window_key, ZERO, -hold.amount)
            self._set_state(reservation_id, "released")
            return True

    def reservation(self, reservation_id: str) -> Reservation | None:
        """A reservation by id, in any state."""
        with self._transaction(write=False):
            return self._get_reservation(reservation_id)

    def events(
        self,
        *,
        subject: Subject | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[UsageEvent]:
        """Usage events in time order, filtered by the scopes set in ``subject`` and by time."""
        since = utc(since) if since is not None else None
        until = utc(until) if until is not None else None
        with self._transaction(write=False):
            return self._query_events(subject, since, until, limit)


def _check_amounts(amounts: Mapping[str, Decimal], what: str) -> None:
    """Refuse amounts that would corrupt balances: a negative hold would lift a hard cap.

    Raises:
        ValidationError: an amount that is not a finite, non-negative Decimal (or int).
    """
    for meter, amount in amounts.items():
        if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
            raise ValidationError(f"{what}: {meter} must be a Decimal, got {amount!r}", field=meter)
        if (isinstance(amount, Decimal) and not amount.is_finite()) or amount < 0:
            raise ValidationError(
                f"{what}: {meter} must be finite and non-negative, got {amount}", field=meter
            )
