"""The ledger's steps over a store's primitives: budgets, balances, admission, settlement.

Every step is one transaction of the store, so the check and the hold are atomic wherever the
store's transaction is, and the records a step writes (threshold events, stop markers, shadow
denials, template instances) are written in the same transaction as the charge that caused them.
Balance rows are read in one batch and written in one batch per step (:mod:`.rows`), so a
reservation or a settlement costs a fixed handful of store round trips whatever the number of
budgets that apply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenward.clock import utc
from tokenward.core.budgets import Budget, Subject, applicable
from tokenward.core.decide import (
    Balance,
    CallPlan,
    Decision,
    admission_check,
    decide,
    decision_of,
    shadow_check,
)
from tokenward.core.events import UsageEvent
from tokenward.errors import BudgetError, BudgetExceeded, ValidationError
from tokenward.ledger.base import DEFAULT_TTL, Hold, Reservation, new_id
from tokenward.ledger.normalise import check_subject, storable_event
from tokenward.ledger.owner import this_process
from tokenward.ledger.reclaim import ReclaimSteps, is_late_settlement
from tokenward.ledger.records import BudgetInstance, StopMarker, ThresholdEvent
from tokenward.ledger.rows import (
    ZERO,
    Rows,
    Snapshot,
    Span,
    balance_of,
    check_amounts,
    crossed,
    merge,
    page,
    refusing_balance,
    shadow_denials,
    span_of,
    stop_of,
    stop_targets,
    stopped_error,
    window_spent,
)
from tokenward.numbers import plain

__all__ = ["LedgerSteps"]


class LedgerSteps(ReclaimSteps):
    """Budgets, balances, reserve / admit / settle / release, usage events; reaping and
    reclaiming (:mod:`.reclaim`) and the leases of shared sessions (:mod:`.leases`)."""

    # -- budgets ---------------------------------------------------------------------------------
    def put_budget(self, budget: Budget) -> None:
        """Create or replace a budget by name; its balances are kept (a new limit applies to the
        current window at once)."""
        with self._write():
            self._store_budget(budget)

    def get_budget(self, name: str) -> Budget | None:
        """The budget called ``name``, or None."""
        with self._transaction(write=False):
            return next((b for b in self._snapshot().budgets if b.name == name), None)

    def delete_budget(self, name: str) -> bool:
        """Delete a budget; returns whether it existed. Its events stay; holds taken on it stay
        with their reservations and are released, settled or reaped as usual."""
        with self._write():
            return self._remove_budget(name)

    def budgets(self) -> list[Budget]:
        """Every budget, sorted by name."""
        with self._transaction(write=False):
            return sorted(self._snapshot().budgets, key=lambda b: b.name)

    # -- balances --------------------------------------------------------------------------------
    def _state(
        self, snapshot: Snapshot, subject: Subject, at: datetime, *, listing: bool = False
    ) -> tuple[list[Balance], Rows]:
        pairs = sorted(
            applicable(snapshot.budgets, subject, every_model=listing), key=lambda p: (p[0].name, p[1])
        )
        rows = self._read_rows([span_of(b, sid, at) for b, sid in pairs]) if pairs else {}
        return [balance_of(b, sid, at, rows) for b, sid in pairs], rows

    def balances(self, subject: Subject, at: datetime | None = None) -> list[Balance]:
        """Every budget instance applying to ``subject`` in the window containing ``at`` (now),
        sorted by budget name (per-model budgets too when ``subject`` names no model)."""
        at = utc(at) if at else self.clock.now()
        with self._transaction(write=False):
            return self._state(self._snapshot(), subject, at, listing=True)[0]

    def budget_balances(self, name: str, at: datetime | None = None) -> list[Balance]:
        """Every instance of budget ``name`` in the window containing ``at`` (now): one for a
        fixed budget, one per instance made so far for a template (by scope value)."""
        at = utc(at) if at else self.clock.now()
        with self._transaction(write=False):
            budget = next((b for b in self._snapshot().budgets if b.name == name), None)
            if budget is None:
                return []
            ids = (
                [budget.subject_id]
                if budget.subject_id
                else [i.subject_id for i in self._query_instances(name)]
            )
            rows = self._read_rows([span_of(budget, sid, at) for sid in ids]) if ids else {}
            return [balance_of(budget, sid, at, rows) for sid in sorted(ids)]

    def instances(self, budget: str) -> list[BudgetInstance]:
        """The instances template ``budget`` has made so far (one per scope value, made on its
        first hold or charge), oldest first."""
        with self._transaction(write=False):
            return sorted(self._query_instances(budget), key=lambda i: (i.created_at, i.subject_id))

    # -- releasing -------------------------------------------------------------------------------
    def _release(self, holds: Sequence[Hold]) -> None:
        if not holds:
            return
        rows = self._read_rows([(h.budget, h.subject_id, h.window_key, h.window_key) for h in holds])
        self._write_rows(
            merge(rows, [((h.budget, h.subject_id, h.window_key), ZERO, -h.amount) for h in holds])
        )

    # -- admission -------------------------------------------------------------------------------
    def _refuse(
        self,
        denial: BudgetError,
        balances: list[Balance],
        subject: Subject,
        now: datetime,
        snapshot: Snapshot,
        request_id: str | None,
    ) -> None:
        """Side effects of a denial: a hard ``stop`` budget that refused ends the work for good."""
        balance = refusing_balance(denial, balances)
        if balance is not None:
            self._stop(balance, balance.spent, subject, now, snapshot, request_id)

    def _stop(
        self,
        balance: Balance,
        used: Decimal,
        subject: Subject,
        now: datetime,
        snapshot: Snapshot,
        request_id: str | None,
    ) -> None:
        budget = balance.budget
        if budget.action != "stop" or budget.mode != "hard":
            return
        markers = [
            StopMarker(
                scope,
                value,
                now,
                budget.name,
                budget.scope,
                balance.subject_id,
                budget.meter,
                budget.limit,
                used,
                request_id,
            )
            for scope, value in stop_targets(budget, balance.subject_id, subject)
            if (scope, value) not in snapshot.stops
        ]
        if markers:
            self._store_stops(markers)

    def _take(
        self,
        subject: Subject,
        balances: list[Balance],
        rows: Rows,
        amounts: Mapping[str, Decimal],
        now: datetime,
        ttl: timedelta,
        idempotency_key: str | None,
        metadata: Mapping[str, Any] | None,
        shadow: Sequence[BudgetExceeded] = (),
        forwarded: bool = False,
    ) -> tuple[Reservation, bool]:
        """Hold ``amounts``; returns the reservation and whether it is new (False: the
        idempotency key was already taken, and that reservation is returned, holding nothing)."""
        holds = tuple(
            Hold(b.budget.name, b.subject_id, b.window_key, b.budget.meter, amounts[b.budget.meter])
            for b in balances
            if b.budget.meter in amounts
        )
        reservation = Reservation(
            id=new_id(),
            subject=subject,
            amounts=dict(amounts),
            holds=holds,
            created_at=now,
            expires_at=now + ttl,
            idempotency_key=idempotency_key,
            metadata=dict(metadata or {}),
            forwarded=forwarded,
            owner=this_process(),
        )
        if not self._put_reservation(reservation):  # the key is taken or settled: hold nothing
            return self._earlier(idempotency_key), False  # type: ignore[arg-type,return-value]
        changes = [((h.budget, h.subject_id, h.window_key), ZERO, h.amount) for h in holds if h.amount]
        if changes:
            self._write_rows(merge(rows, changes))
        self._note_instances([(b.budget, b.subject_id) for b in balances if b.budget.meter in amounts], now)
        if shadow:
            self._record_shadow(shadow, balances, subject, now, idempotency_key, reservation.id)
        return reservation, True

    def _earlier(self, key: str) -> Reservation | None:
        """What an idempotency key already stands for: its reservation while it is kept, else the
        answer of the usage event recorded under it (its call was settled and its reservation
        deleted: :meth:`~tokenward.ledger.base.Reservation.answered`), else None."""
        found = self._find_idempotent(key)
        if found is not None:
            return found
        event = self._get_event(key)
        return None if event is None else Reservation.answered(event)

    def _record_shadow(
        self,
        shadow: Sequence[BudgetExceeded],
        balances: list[Balance],
        subject: Subject,
        now: datetime,
        request_id: str | None,
        reservation_id: str | None,
    ) -> None:
        self._insert_shadow(shadow_denials(shadow, balances, subject, now, request_id, reservation_id))

    def _note_instances(self, pairs: Sequence[tuple[Budget, str]], now: datetime) -> None:
        known = self._known_instances
        new = [
            BudgetInstance(b.name, sid, now)
            for b, sid in pairs
            if b.subject_id is None and (b.name, sid) not in known
        ]
        if new:
            self._store_instances(new)
            for instance in new:
                self._remember(self._known_instances, (instance.budget, instance.subject_id))

    def _admission(
        self,
        subject: Subject,
        idempotency_key: str | None,
        judge: Callable[[list[Balance]], tuple[BudgetError | None, Any]],
        take: Callable[[list[Balance], Rows, datetime, Any], Any],
    ) -> Any:
        """One admission transaction: reap, stop markers, the check (``judge``), the hold
        (``take``), or the denial's side effects. The denial is raised after the commit, so the
        reap and any stop marker are kept on every backend."""
        now = self.clock.now()
        with self._write():
            self._reap(now)
            snapshot = self._snapshot()
            marker = stop_of(snapshot.stops, subject)
            balances, rows = ([], {}) if marker else self._state(snapshot, subject, now)
            denial, verdict = (stopped_error(marker), None) if marker else judge(balances)
            if denial is None:
                return take(balances, rows, now, verdict)
            earlier = self._earlier(idempotency_key) if idempotency_key is not None else None
            if earlier is not None:
                return earlier
            self._refuse(denial, balances, subject, now, snapshot, idempotency_key)
        raise denial

    def reserve(
        self,
        subject: Subject,
        amounts: Mapping[str, Decimal],
        *,
        ttl: timedelta = DEFAULT_TTL,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        forwarded: bool = False,
    ) -> Reservation:
        """Hold ``amounts`` (by meter) on every applicable budget, all or nothing.

        Only the meters in ``amounts`` are checked: for each hard budget of such a meter,
        ``spent + held + amount <= limit`` (a zero amount always fits). Shadow budgets that would
        refuse are recorded (:meth:`shadow_denials`). With ``forwarded`` the reservation is
        marked, in the same write, as made for a call that goes to a provider: never settled, it
        is charged its hold (:mod:`.reclaim`), never released for free.

        An ``idempotency_key`` already used holds nothing more: it answers its reservation while
        it is kept (active, expired, reclaimed), or, once its call was settled and the reservation
        deleted, :meth:`~tokenward.ledger.base.Reservation.answered` of the usage event recorded
        under the key (a retry of a settled call never takes a second hold; this is checked in
        the statement that stores the reservation, at no extra round trip). A key whose
        reservation was released and that has no event holds afresh: that call never happened.

        Raises:
            BudgetExceeded: the first hard budget that cannot take the hold; nothing is held.
            Stopped: the subject's session or task was ended by a ``stop`` budget.
            ValidationError: an amount that is not a finite, non-negative Decimal; a subject
                value no store can keep (NUL).
        """
        check_amounts(amounts, "reserve amounts")
        check_subject(subject)

        def judge(balances: list[Balance]) -> tuple[BudgetError | None, Any]:
            return admission_check(balances, amounts), None

        def take(balances: list[Balance], rows: Rows, now: datetime, _: Any) -> Reservation:
            return self._take(
                subject,
                balances,
                rows,
                amounts,
                now,
                ttl,
                idempotency_key,
                metadata,
                shadow_check(balances, amounts),
                forwarded,
            )[0]

        return self._admission(subject, idempotency_key, judge, take)  # type: ignore[no-any-return]

    def admit(
        self,
        subject: Subject,
        plan: CallPlan,
        *,
        ttl: timedelta = DEFAULT_TTL,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        forwarded: bool = False,
    ) -> tuple[Decision, Reservation]:
        """Decide (clamp or deny, :func:`~tokenward.core.decide.decide`) and reserve, in one
        transaction: the decision is made on the balances the hold is taken against. With
        ``forwarded`` and ``idempotency_key``, as :meth:`reserve` (a key already used answers
        the decision its reservation, or its settled call, held).

        Raises:
            BudgetExceeded: a hard budget cannot pay even for the plan's minimum output.
            Stopped: the subject's session or task was ended by a ``stop`` budget.
            UnpricedCall: a hard cost budget applies and the model is unpriced.
            ValidationError: a subject value no store can keep (NUL).
        """
        check_subject(subject)

        def judge(balances: list[Balance]) -> tuple[BudgetError | None, Any]:
            try:
                return None, decide(plan, balances)
            except BudgetError as exc:
                return exc, None

        def take(balances: list[Balance], rows: Rows, now: datetime, decision: Decision) -> Any:
            reservation, fresh = self._take(
                subject,
                balances,
                rows,
                decision.amounts,
                now,
                ttl,
                idempotency_key,
                metadata,
                decision.shadow,
                forwarded,
            )
            return (decision, reservation) if fresh else (decision_of(reservation), reservation)

        result = self._admission(subject, idempotency_key, judge, take)
        return (decision_of(result), result) if isinstance(result, Reservation) else result

    # -- charging --------------------------------------------------------------------------------
    def _apply(
        self,
        snapshot: Snapshot,
        targets: Sequence[tuple[Budget, str]],
        amounts: Mapping[str, Decimal],
        at: datetime,
        now: datetime,
        *,
        subject: Subject,
        request_id: str | None,
        releases: Sequence[Hold] = (),
    ) -> None:
        """Charge ``amounts`` (signed for adjustments) to the windows at ``at`` of ``targets``,
        drop ``releases``, and record the thresholds crossed, the stops reached and the template
        instances made."""
        ordered = sorted(targets, key=lambda t: (t[0].name, t[1]))  # one fixed order everywhere
        charges = [(b, sid, b.window.key(at), amounts[b.meter]) for b, sid in ordered if amounts.get(b.meter)]
        spans: list[Span] = [(h.budget, h.subject_id, h.window_key, h.window_key) for h in releases]
        spans += [
            span_of(b, sid, at) if b.window.rolling else (b.name, sid, key, key) for b, sid, key, _ in charges
        ]
        if not spans:
            return
        rows = self._read_rows(spans)
        changes = [((h.budget, h.subject_id, h.window_key), ZERO, -h.amount) for h in releases]
        changes += [((b.name, sid, key), amount, ZERO) for b, sid, key, amount in charges]
        self._write_rows(merge(rows, changes))
        for budget, sid, key, amount in charges:
            if amount <= 0 or (not budget.thresholds and budget.action != "stop"):
                continue
            before = window_spent(budget, sid, at, key, rows)
            after = before + amount
            self._record_thresholds(budget, sid, key, before, after, at, now, request_id)
            if after >= budget.limit and budget.action == "stop":
                balance = Balance(budget, sid, key, after, ZERO, None)
                self._stop(balance, after, subject, now, snapshot, request_id)
        self._note_instances([(b, sid) for b, sid, _, _ in charges], now)

    def _record_thresholds(
        self,
        budget: Budget,
        subject_id: str,
        window_key: str,
        before: Decimal,
        after: Decimal,
        at: datetime,
        now: datetime,
        request_id: str | None,
    ) -> None:
        for threshold in crossed(budget, before, after):
            key = (budget.name, subject_id, window_key, plain(threshold))
            if key in self._known_thresholds and not budget.window.rolling:
                continue
            self._insert_threshold(
                ThresholdEvent(
                    id=0,
                    at=now,
                    budget=budget.name,
                    scope=budget.scope,
                    subject_id=subject_id,
                    meter=budget.meter,
                    mode=budget.mode,
                    window_key=window_key,
                    threshold=threshold,
                    limit=budget.limit,
                    spent=after,
                    reset_at=budget.window.reset_at(at),
                    request_id=request_id,
                )
            )
            self._remember(self._known_thresholds, key)

    def settle(self, reservation_id: str | None, event: UsageEvent) -> UsageEvent:
        """Replace the hold with ``event.charged`` and append ``event``, once per request id.

        The charge lands in the windows of the reservation's admission (or of ``event.at`` without
        a reservation) on every budget applying to ``event.subject`` then; a charge above the
        hold is recorded as overage (``event.overage``) and counts in full. Settling a
        reservation that expired still charges (the call happened); so does settling one that is
        gone (released, or settled under another request id: charged in the windows of
        ``event.at``). Threshold events and stop markers the charge causes are written in the same
        transaction.

        The reservation is deleted in that same transaction: a settled call leaves its usage
        event, not a reservation row (:meth:`reservation` is then None). A second settle of the
        same request id changes nothing (the event insert is refused first, so nothing is deleted).

        Strings no store can keep (NUL) are replaced and flagged (:mod:`.normalise`). The real
        settlement of a call whose hold was reclaimed meanwhile is recorded as a correction
        (:func:`~tokenward.ledger.reclaim.correction_event`): the call is charged what it cost,
        once.

        Returns:
            The stored event (the earlier one, when this request id was already settled; the
            event as settled, when it corrected a reclaimed hold).

        Raises:
            ValidationError: a charged amount that is not a finite, non-negative Decimal.
        """
        check_amounts(event.charged, f"event {event.request_id!r}: charged")
        event = storable_event(event)
        now = self.clock.now()
        with self._write():
            reservation = self._get_reservation(reservation_id) if reservation_id else None
            at = event.at
            if reservation is not None:
                at = reservation.created_at
                event = event.with_reservation(reservation.id, reservation.amounts)
            if not self._insert_event(event):
                stored = self._get_event(event.request_id)
                if stored is not None and is_late_settlement(stored, event):
                    self._correct(stored, event, stored.at, now)
                    return event
                return stored  # type: ignore[return-value]
            releases: Sequence[Hold] = ()
            if reservation is not None:
                releases = reservation.holds if reservation.state == "active" else ()
                self._drop_reservation(reservation.id)
            snapshot = self._snapshot()
            self._apply(
                snapshot,
                applicable(snapshot.budgets, event.subject),
                event.charged,
                at,
                now,
                subject=event.subject,
                request_id=event.request_id,
                releases=releases,
            )
            return event

    def release(self, reservation_id: str) -> bool:
        """Drop an active hold without charging, deleting its reservation; returns whether
        anything was released (an expired or reclaimed reservation is left as it is)."""
        with self._write():
            reservation = self._get_reservation(reservation_id)
            if reservation is None or reservation.state != "active":
                return False
            self._release(reservation.holds)
            self._drop_reservation(reservation_id)
            return True

    def extend(self, reservation_id: str, ttl: timedelta) -> bool:
        """As :meth:`tokenward.ledger.Ledger.extend`."""
        if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
            raise ValidationError(f"ttl must be a positive timedelta, got {ttl!r}")
        now = self.clock.now()
        with self._write():
            reservation = self._get_reservation(reservation_id)
            if reservation is None or reservation.state != "active" or reservation.expires_at <= now:
                return False
            if now + ttl > reservation.expires_at:
                self._set_expiry(reservation_id, now + ttl)
            return True

    def reservation(self, reservation_id: str) -> Reservation | None:
        """A reservation by id while it is kept (active, expired, reclaimed); None once it was
        settled or released (deleted in that transaction), or when there never was one."""
        with self._transaction(write=False):
            return self._get_reservation(reservation_id)

    def disputed_events(self, *, since: datetime | None = None, limit: int | None = None) -> list[UsageEvent]:
        """Usage events marked disputed (charged at our own count because the provider reported
        less), in time order, from ``since`` (inclusive) on."""
        since = utc(since) if since is not None else None
        limit = page(None, limit)[1]
        with self._transaction(write=False):
            return self._query_disputed(since, limit)

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
        limit = page(None, limit)[1]
        with self._transaction(write=False):
            return self._query_events(subject, since, until, limit)
