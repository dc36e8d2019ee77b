"""The ledger contract, written once over a transactional store.

:class:`TransactionalLedger` is what the ``memory://`` and ``sqlite://`` backends subclass: the
steps of :mod:`.steps` (budgets, balances, reserve, admit, settle, release, reap, events) plus
direct meter charges, manual adjustments, and the queries of the records the steps write
(threshold events, shadow denials, stop markers), calibration aggregates, and virtual keys and the
audit log (:mod:`.admin`). A backend supplies only the primitives of :mod:`.primitives`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenward.clock import utc
from tokenward.core.budgets import SCOPES, Subject, applicable, is_scope
from tokenward.core.calibration import EstimateStats, calibration_key
from tokenward.core.decide import admission_check
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.errors import BudgetError, ValidationError
from tokenward.ledger.base import new_id
from tokenward.ledger.denials import check_denial_query, record_denial_in
from tokenward.ledger.records import (
    DENIAL_RATE,
    IDEMPOTENCY_RUNNING,
    Adjustment,
    Denial,
    IdempotentAnswer,
    ShadowDenial,
    StopMarker,
    ThresholdEvent,
    check_lookup,
)
from tokenward.ledger.rows import check_amounts, page, stop_of, stopped_error, subject_matches
from tokenward.ledger.steps import LedgerSteps

__all__ = ["TransactionalLedger"]


class TransactionalLedger(LedgerSteps):
    """The whole ledger contract over a backend's primitives."""

    denial_rate: int = DENIAL_RATE
    """Denials of one subject, budget and minute recorded one by one before the rest are folded."""

    def charge_meter(
        self,
        subject: Subject,
        amounts: Mapping[str, Decimal],
        *,
        request_id: str | None = None,
        at: datetime | None = None,
        enforce: bool = True,
        metadata: Mapping[str, Any] | None = None,
    ) -> UsageEvent:
        """Charge meters directly (custom ones such as ``tool_calls`` or ``gpu_seconds``, or any
        built-in one) and record it as a usage event (``endpoint`` ``"meter"``, no token usage).

        With ``enforce`` (default) the charge is admitted like a hold first: it must fit every
        hard budget of its meters, and a stopped session or task refuses it.

        Args:
            subject: whom to charge.
            amounts: by meter, non-negative (GPU-seconds, calls, tokens, USD...).
            request_id: idempotency key (one event per id); a fresh one by default.
            at: the instant whose windows are charged (default now).
            enforce: refuse a charge that does not fit (False records it regardless, as an
                overage would be).
            metadata: kept on the event.

        Returns:
            The stored event (the earlier one for a repeated ``request_id``).

        Raises:
            BudgetExceeded: a hard budget cannot take the charge; nothing is charged.
            Stopped: the subject's session or task was ended by a ``stop`` budget.
            ValidationError: a bad amount.
        """
        check_amounts(amounts, "charge amounts")
        now = self.clock.now()
        at = utc(at) if at else now
        event = UsageEvent(
            request_id=request_id or new_id("chg"),
            at=at,
            subject=subject,
            usage=Usage(),
            endpoint="meter",
            cost_usd=amounts.get("cost_usd"),
            charged=dict(amounts),
            metadata=dict(metadata or {}),
        )
        denial: BudgetError | None = None
        with self._write():
            existing = self._get_event(event.request_id)
            if existing is not None:
                return existing
            snapshot = self._snapshot()
            if enforce:
                self._reap(now)
                marker = stop_of(snapshot.stops, subject)
                balances = [] if marker else self._state(snapshot, subject, at)[0]
                denial = stopped_error(marker) if marker else admission_check(balances, amounts)
                if denial is not None:
                    self._refuse(denial, balances, subject, now, snapshot, event.request_id)
            if denial is None:
                self._insert_event(event)
                self._apply(
                    snapshot,
                    applicable(snapshot.budgets, subject),
                    amounts,
                    at,
                    now,
                    subject=subject,
                    request_id=event.request_id,
                )
                return event
        raise denial

    def adjust(
        self,
        target: Subject | str,
        amounts: Mapping[str, Decimal],
        *,
        reason: str,
        actor: str,
        subject_id: str | None = None,
        at: datetime | None = None,
        adjustment_id: str | None = None,
    ) -> Adjustment:
        """Record a manual adjustment (credit, refund, correction) as an entry of its own.

        Past usage events are never changed: the adjustment moves the spend of the windows at
        ``at`` by ``amounts`` and is listed by :meth:`adjustments`.

        Args:
            target: a :class:`Subject` (every budget that applies to it), or a budget's name
                (that budget only; a template also needs ``subject_id``).
            amounts: by meter, signed: negative for a credit or refund, positive for a charge
                that was missed.
            reason: why (required).
            actor: who (required).
            subject_id: the instance of a template ``target``.
            at: the instant whose windows are adjusted (default now).
            adjustment_id: idempotency key; a repeated id with the same request returns the first
                adjustment, with another request raises ValidationError (:meth:`Adjustment.repeated`).

        Raises:
            ValidationError: no reason or actor, a bad amount, an unknown budget, or a template
                without ``subject_id``.
        """
        for meter, amount in amounts.items():
            if (
                isinstance(amount, bool)
                or not isinstance(amount, Decimal | int)
                or (isinstance(amount, Decimal) and not amount.is_finite())
            ):
                raise ValidationError(
                    f"adjustment: {meter} must be a finite Decimal, got {amount!r}", field=meter
                )
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError("an adjustment needs a reason", field="reason")
        if not isinstance(actor, str) or not actor.strip():
            raise ValidationError("an adjustment needs an actor", field="actor")
        now = self.clock.now()
        window_at = utc(at) if at else now
        signed = {m: Decimal(a) for m, a in amounts.items()}
        with self._write():
            if adjustment_id is not None:
                existing = self._get_adjustment(adjustment_id)
                if existing is not None:
                    return existing.repeated(target, amounts, reason=reason, actor=actor)
            snapshot = self._snapshot()
            budget_name: str | None = None
            if isinstance(target, Subject):
                subject, targets = target, applicable(snapshot.budgets, target)
            else:
                budget = next((b for b in snapshot.budgets if b.name == target), None)
                if budget is None:
                    raise ValidationError(f"no budget named {target!r}", field="target")
                value = budget.subject_id or subject_id
                if value is None or (budget.subject_id and subject_id and subject_id != budget.subject_id):
                    raise ValidationError(
                        f"budget {target!r} is a template: name the instance with subject_id"
                        if value is None
                        else f"budget {target!r} applies to {budget.subject_id!r}, not {subject_id!r}",
                        field="subject_id",
                    )
                budget_name, targets = budget.name, [(budget, value)]
                subject = _subject_of(budget.scope, value)
            applied = tuple(
                (b.name, sid, b.window.key(window_at), b.meter, signed[b.meter])
                for b, sid in targets
                if signed.get(b.meter)
            )
            adjustment = self._insert_adjustment(
                Adjustment(
                    id=adjustment_id or new_id("adj"),
                    seq=0,
                    at=now,
                    window_at=window_at,
                    actor=actor.strip(),
                    reason=reason.strip(),
                    amounts=signed,
                    subject=subject,
                    budget=budget_name,
                    subject_id=targets[0][1] if budget_name else None,
                    applied=applied,
                )
            )
            self._apply(snapshot, targets, signed, window_at, now, subject=subject, request_id=adjustment.id)
            return adjustment

    def adjustments(
        self,
        *,
        subject: Subject | None = None,
        budget: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[Adjustment]:
        """Adjustments in the order they were made, filtered by the scopes set in ``subject``,
        by the budget they changed, and by when they were made (``since`` inclusive, ``until``
        exclusive)."""
        since = utc(since) if since is not None else None
        until = utc(until) if until is not None else None
        limit = page(None, limit)[1]
        with self._transaction(write=False):
            found = self._query_adjustments(since, until)
        out = [
            a
            for a in found
            if (subject is None or (a.subject is not None and subject_matches(a.subject, subject)))
            and (budget is None or a.budget == budget or any(row[0] == budget for row in a.applied))
        ]
        return out[:limit] if limit is not None else out

    # -- records ---------------------------------------------------------------------------------
    def threshold_events(self, after: int | None = None, limit: int | None = 100) -> list[ThresholdEvent]:
        """Threshold events with an id above ``after`` (all without it), oldest first, at most
        ``limit`` (None: all). A consumer remembers the last id it handled and asks for those
        after it."""
        after, limit = page(after, limit)
        with self._transaction(write=False):
            return self._query_thresholds(after, limit)

    def shadow_denials(
        self, after: int | None = None, limit: int | None = 100, *, budget: str | None = None
    ) -> list[ShadowDenial]:
        """Would-be denials of shadow budgets with an id above ``after``, oldest first, at most
        ``limit``, optionally of one budget."""
        after, limit = page(after, limit)
        with self._transaction(write=False):
            return self._query_shadow(after, limit, budget)

    def record_denial(self, denial: Denial) -> Denial:
        """Record a refused call (see :class:`~tokenward.ledger.records.Denial`). Past
        ``denial_rate`` (:data:`~tokenward.ledger.records.DENIAL_RATE`) denials of one subject,
        budget and minute, it is folded into that minute's aggregated record
        (:mod:`tokenward.ledger.denials`), never dropped.

        Returns:
            The record as stored (numbered; an aggregated one past the rate).
        """
        with self._write():
            return record_denial_in(self, denial, self.denial_rate)

    def denials(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        subject: Subject | None = None,
        budget: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[Denial]:
        """Recorded denials, **newest first** (by id), filtered by when they happened (``since``
        inclusive, ``until`` exclusive, on :attr:`Denial.at`), by the scopes and tags set in
        ``subject`` (as :meth:`events`), and by the refusing budget's name; ``offset`` records
        skipped, then at most ``limit`` (None: all). An aggregated record counts as one record
        (its ``count`` says how many refusals it stands for).

        Raises:
            ValidationError: a bad argument (not a datetime, not a Subject, a negative limit).
        """
        query = check_denial_query(since, until, subject, budget, limit, offset)
        with self._transaction(write=False):
            return self._query_denials(query)

    def begin_idempotent(
        self, namespace: str, key: str, body_sha256: str, request_id: str
    ) -> IdempotentAnswer | None:
        """Claim an ``Idempotency-Key`` for a request, atomically: returns None when the key is
        free (now marked running for ``request_id``), else the live record that holds it (still
        running, or done with its stored answer; compare its ``body_sha256``). Expired records
        are forgotten first."""
        now = self.clock.now()
        with self._write():
            self._purge_idempotent(now)
            found = self._get_idempotent(namespace, key)
            if found is not None and found.expires_at > now:
                return found
            self._put_idempotent(
                IdempotentAnswer(
                    namespace, key, body_sha256, "running", request_id, now,
                    now + timedelta(seconds=IDEMPOTENCY_RUNNING),
                )
            )  # fmt: skip
            return None

    def finish_idempotent(
        self, namespace: str, key: str, request_id: str, response: Mapping[str, Any], ttl: timedelta
    ) -> bool:
        """Store the answer of the request that holds an ``Idempotency-Key``, kept ``ttl`` from
        now; False when the key is no longer held by ``request_id`` (it expired meanwhile)."""
        now = self.clock.now()
        with self._write():
            found = self._get_idempotent(namespace, key)
            if found is None or found.request_id != request_id or found.state != "running":
                return False
            self._put_idempotent(replace(found, state="done", expires_at=now + ttl, response=dict(response)))
            return True

    def drop_idempotent(self, namespace: str, key: str, request_id: str) -> bool:
        """Free an ``Idempotency-Key`` whose request ended without an answer worth storing (an
        error, a refusal, a client gone); False when ``request_id`` does not hold it."""
        with self._write():
            found = self._get_idempotent(namespace, key)
            if found is None or found.request_id != request_id or found.state != "running":
                return False
            self._delete_idempotent(namespace, key)
            return True

    def stops(self) -> list[StopMarker]:
        """Every session and task ended by a ``stop`` budget, oldest first."""
        with self._transaction(write=False):
            return sorted(self._snapshot().stops.values(), key=lambda m: (m.at, m.scope, m.subject_id))

    def stop_of(self, subject: Subject) -> StopMarker | None:
        """The marker that ended ``subject``'s session or task, or None."""
        with self._transaction(write=False):
            return stop_of(self._snapshot().stops, subject)

    def event_by_metadata(self, key: str, value: str) -> UsageEvent | None:
        """The most recently recorded usage event whose ``metadata[key]`` is ``value``, or None:
        the call that answered response ``value`` (``key="response_id"``), the latest call of
        conversation ``value`` (``"conversation"``), the call that created cached content
        ``value`` (``"cached_content"``).

        Raises:
            ValidationError: ``key`` is not one of :data:`~tokenward.ledger.records.EVENT_LOOKUPS`.
        """
        check_lookup(key, value)
        with self._transaction(write=False):
            return self._find_event(key, value)

    def record_estimate(self, model: str, estimated: int, actual: int) -> None:
        """Add one ``(estimated, actual)`` prompt observation to ``model``'s calibration
        aggregates (kept under :func:`~tokenward.core.calibration.calibration_key`), atomically."""
        key = calibration_key(model)
        with self._write():
            current = self._estimate_stats(key) or EstimateStats(key)
            updated = current.add(int(estimated), int(actual))
            if updated is not current:
                self._store_estimate_stats(updated)

    def estimate_stats(self, model: str) -> EstimateStats | None:
        """``model``'s calibration aggregates, or None when nothing was observed."""
        with self._transaction(write=False):
            return self._estimate_stats(calibration_key(model))


def _subject_of(scope: str, value: str) -> Subject:
    """The subject a budget instance stands for (``user`` ``alice`` -> ``Subject(user="alice")``)."""
    if scope in SCOPES:
        return Subject(**{scope: value})  # type: ignore[arg-type]
    if is_scope(scope):
        return Subject(tags=((scope[4:], value),))
    return Subject()
