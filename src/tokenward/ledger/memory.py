"""``memory://``: the ledger in this process's memory (tests, replays, one-off runs).

Its transaction is a process-wide lock, which is the whole store here. Nothing survives the
process. The logic never writes before a step can still fail, so the lock needs no rollback.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from tokenward.clock import Clock
from tokenward.core.budgets import Budget, Subject
from tokenward.core.calibration import EstimateStats
from tokenward.core.events import UsageEvent
from tokenward.ledger.admin import KeyIndex
from tokenward.ledger.base import Reservation
from tokenward.ledger.denials import DenialQuery, matches, paged
from tokenward.ledger.records import (
    EVENT_LOOKUPS,
    Adjustment,
    AuditEntry,
    BudgetInstance,
    Denial,
    IdempotentAnswer,
    KeyRecord,
    LeaseGroup,
    ShadowDenial,
    StopMarker,
    ThresholdEvent,
)
from tokenward.ledger.rollups import RollupRow, SessionSummary, rollup_rows, select_rows, summarise_sessions
from tokenward.ledger.rows import Rows, Snapshot, Span, event_disputed, subject_matches
from tokenward.ledger.transactional import TransactionalLedger
from tokenward.numbers import plain

__all__ = ["MemoryLedger", "subject_matches"]


class MemoryLedger(TransactionalLedger):
    """The in-memory ledger.

    Args:
        url: ``memory://`` (kept for display).
        clock: where time comes from.
    """

    def __init__(self, url: str = "memory://", *, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.url = url
        self._lock = threading.RLock()
        self._budgets: dict[str, Budget] = {}
        self._rows: dict[tuple[str, str], dict[str, tuple[Decimal, Decimal]]] = {}
        self._reservations: dict[str, Reservation] = {}
        self._by_key: dict[str, str] = {}
        self._active: set[str] = set()
        self._events: list[UsageEvent] = []
        self._by_metadata: dict[tuple[str, str], UsageEvent] = {}
        self._by_request: dict[str, UsageEvent] = {}
        self._estimates: dict[str, EstimateStats] = {}
        self._thresholds: list[ThresholdEvent] = []
        self._threshold_keys: set[tuple[str, str, str, str]] = set()
        self._shadow: list[ShadowDenial] = []
        self._denials: list[Denial] = []
        self._idempotent: dict[tuple[str, str], IdempotentAnswer] = {}
        self._denial_counts: dict[tuple[str, str, str], int] = {}
        self._folded: dict[tuple[str, str, str], int] = {}  # -> index in _denials
        self._stops: dict[tuple[str, str], StopMarker] = {}
        self._adjustments: list[Adjustment] = []
        self._instances: dict[tuple[str, str], BudgetInstance] = {}
        self._keys: dict[str, KeyRecord] = {}
        self._audit: list[AuditEntry] = []
        self._lease_groups: dict[str, LeaseGroup] = {}
        self._leases: dict[str, dict[str, datetime]] = {}
        self._ids = itertools.count(1)
        self._secrets: dict[str, str] = {}

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[None]:
        with self._lock:
            yield

    # -- budgets, stops --------------------------------------------------------------------------
    def _snapshot(self) -> Snapshot:
        return Snapshot(list(self._budgets.values()), dict(self._stops))

    def _store_budget(self, budget: Budget) -> None:
        self._budgets[budget.name] = budget

    def _remove_budget(self, name: str) -> bool:
        return self._budgets.pop(name, None) is not None

    def _store_stops(self, markers: Sequence[StopMarker]) -> None:
        for marker in markers:
            self._stops.setdefault((marker.scope, marker.subject_id), marker)

    # -- balance rows ----------------------------------------------------------------------------
    def _read_rows(self, spans: Sequence[Span]) -> Rows:
        out: Rows = {}
        for budget, subject_id, first, last in spans:
            rows = self._rows.get((budget, subject_id), {})
            if first == last:
                if first in rows:
                    out[(budget, subject_id, first)] = rows[first]
                continue
            for key, value in rows.items():
                if first <= key <= last:
                    out[(budget, subject_id, key)] = value
        return out

    def _write_rows(self, rows: Rows) -> None:
        for (budget, subject_id, key), value in rows.items():
            self._rows.setdefault((budget, subject_id), {})[key] = value

    # -- reservations ----------------------------------------------------------------------------
    def _get_reservation(self, reservation_id: str) -> Reservation | None:
        return self._reservations.get(reservation_id)

    def _find_idempotent(self, key: str) -> Reservation | None:
        found = self._by_key.get(key)
        return None if found is None else self._reservations[found]

    def _put_reservation(self, reservation: Reservation) -> bool:
        key = reservation.idempotency_key
        if key is not None and (key in self._by_key or key in self._by_request):
            return False
        self._reservations[reservation.id] = reservation
        self._active.add(reservation.id)
        if reservation.idempotency_key is not None:
            self._by_key[reservation.idempotency_key] = reservation.id
        return True

    def _set_state(self, reservation_id: str, state: str) -> None:
        self._reservations[reservation_id] = replace(self._reservations[reservation_id], state=state)
        if state != "active":
            self._active.discard(reservation_id)

    def _drop_reservation(self, reservation_id: str) -> None:
        reservation = self._reservations.pop(reservation_id, None)
        self._active.discard(reservation_id)
        key = reservation.idempotency_key if reservation is not None else None
        if key is not None and self._by_key.get(key) == reservation_id:
            del self._by_key[key]

    def _set_expiry(self, reservation_id: str, expires_at: datetime) -> None:
        self._reservations[reservation_id] = replace(
            self._reservations[reservation_id], expires_at=expires_at
        )

    def _expire(self, now: datetime) -> list[Reservation]:
        expired = [self._reservations[i] for i in self._active if self._reservations[i].expires_at <= now]
        for reservation in expired:
            self._set_state(reservation.id, "expired")
        return expired

    def _active_owners(self) -> list[str]:
        return sorted({o for i in self._active if (o := self._reservations[i].owner) is not None})

    def _owned_active(self, owners: Sequence[str]) -> list[Reservation]:
        wanted = set(owners)
        return [r for i in sorted(self._active) if (r := self._reservations[i]).owner in wanted]

    # -- leases ----------------------------------------------------------------------------------
    def _lease_group(self, key: str) -> LeaseGroup | None:
        return self._lease_groups.get(key)

    def _store_lease_group(self, group: LeaseGroup) -> None:
        self._lease_groups[group.key] = group

    def _drop_lease_group(self, key: str) -> None:
        self._lease_groups.pop(key, None)

    def _lease_holders(self, key: str) -> dict[str, datetime]:
        return dict(self._leases.get(key, {}))

    def _put_lease(self, key: str, holder: str, expires_at: datetime) -> None:
        self._leases.setdefault(key, {})[holder] = expires_at

    def _drop_leases(self, key: str, holders: Sequence[str]) -> None:
        leases = self._leases.get(key, {})
        for holder in holders:
            leases.pop(holder, None)
        if not leases:
            self._leases.pop(key, None)

    def _expired_lease_keys(self, now: datetime) -> list[str]:
        return sorted(k for k, leases in self._leases.items() if any(e <= now for e in leases.values()))

    # -- events ----------------------------------------------------------------------------------
    def _get_event(self, request_id: str) -> UsageEvent | None:
        return self._by_request.get(request_id)

    def _query_disputed(self, since: datetime | None, limit: int | None) -> list[UsageEvent]:
        out = [e for e in self._events if event_disputed(e) and (since is None or e.at >= since)]
        return out[:limit] if limit is not None else out

    def _insert_event(self, event: UsageEvent) -> bool:
        if event.request_id in self._by_request:
            return False
        # Kept in time order (insertion order among equal instants), as the SQLite index reads.
        index = (
            bisect.bisect_right([e.at for e in self._events], event.at)
            if self._events and event.at < self._events[-1].at
            else len(self._events)
        )
        self._events.insert(index, event)
        self._by_request[event.request_id] = event
        for key in EVENT_LOOKUPS:
            value = event.metadata.get(key)
            if isinstance(value, str):
                self._by_metadata[(key, value)] = event
        return True

    def _find_event(self, key: str, value: str) -> UsageEvent | None:
        return self._by_metadata.get((key, value))

    def _query_events(
        self, subject: Subject | None, since: datetime | None, until: datetime | None, limit: int | None
    ) -> list[UsageEvent]:
        out = [
            e
            for e in self._events
            if subject_matches(e.subject, subject)
            and (since is None or e.at >= since)
            and (until is None or e.at < until)
        ]
        return out[:limit] if limit is not None else out

    # -- records ---------------------------------------------------------------------------------
    def _insert_threshold(self, event: ThresholdEvent) -> bool:
        key = (event.budget, event.subject_id, event.window_key, plain(event.threshold))
        if key in self._threshold_keys:
            return False
        self._threshold_keys.add(key)
        self._thresholds.append(replace(event, id=next(self._ids)))
        return True

    def _query_thresholds(self, after: int | None, limit: int | None) -> list[ThresholdEvent]:
        out = [e for e in self._thresholds if after is None or e.id > after]
        return out[:limit] if limit is not None else out

    def _insert_shadow(self, denials: Sequence[ShadowDenial]) -> None:
        self._shadow.extend(replace(d, id=next(self._ids)) for d in denials)

    def _query_shadow(self, after: int | None, limit: int | None, budget: str | None) -> list[ShadowDenial]:
        out = [
            d
            for d in self._shadow
            if (after is None or d.id > after) and (budget is None or d.budget == budget)
        ]
        return out[:limit] if limit is not None else out

    def _count_denials(self, subject_key: str, budget: str, minute: str) -> int:
        return self._denial_counts.get((subject_key, budget, minute), 0)

    def _insert_denial(self, denial: Denial) -> Denial:
        stored = replace(denial, id=next(self._ids))
        self._denials.append(stored)
        key = (denial.subject_key, denial.budget, denial.minute)
        self._denial_counts[key] = self._denial_counts.get(key, 0) + 1
        return stored

    def _fold_denial(self, denial: Denial) -> Denial:
        key = (denial.subject_key, denial.budget, denial.minute)
        index = self._folded.get(key)
        if index is None:
            self._folded[key] = len(self._denials)
            stored = replace(denial, id=next(self._ids), aggregated=True, count=1)
            self._denials.append(stored)
            return stored
        current = self._denials[index]
        stored = replace(
            current, count=current.count + 1, last_at=max(current.last_at or current.at, denial.at)
        )
        self._denials[index] = stored
        return stored

    def _query_denials(self, query: DenialQuery) -> list[Denial]:
        return paged([d for d in reversed(self._denials) if matches(d, query)], query)

    def _get_idempotent(self, namespace: str, key: str) -> IdempotentAnswer | None:
        return self._idempotent.get((namespace, key))

    def _put_idempotent(self, record: IdempotentAnswer) -> None:
        self._idempotent[(record.namespace, record.key)] = record

    def _delete_idempotent(self, namespace: str, key: str) -> None:
        self._idempotent.pop((namespace, key), None)

    def _purge_idempotent(self, now: datetime) -> None:
        for found in [k for k, r in self._idempotent.items() if r.expires_at <= now]:
            del self._idempotent[found]

    def _insert_adjustment(self, adjustment: Adjustment) -> Adjustment:
        stored = adjustment.with_seq(next(self._ids))
        self._adjustments.append(stored)
        return stored

    def _get_adjustment(self, adjustment_id: str) -> Adjustment | None:
        return next((a for a in self._adjustments if a.id == adjustment_id), None)

    def _query_adjustments(self, since: datetime | None, until: datetime | None) -> list[Adjustment]:
        return [
            a
            for a in self._adjustments
            if (since is None or a.at >= since) and (until is None or a.at < until)
        ]

    def _store_instances(self, instances: Sequence[BudgetInstance]) -> None:
        for instance in instances:
            self._instances.setdefault((instance.budget, instance.subject_id), instance)

    def _query_instances(self, budget: str) -> list[BudgetInstance]:
        return [i for (name, _), i in self._instances.items() if name == budget]

    def spend_rollup(
        self,
        since: str,
        until: str | None = None,
        project: str | None = None,
        *,
        dim: str | None = None,
        values: Sequence[str] | None = None,
        by_day: bool = True,
    ) -> list[RollupRow]:
        """Daily spend rows (:mod:`tokenward.ledger.rollups`), summed from the events now."""
        with self._lock:
            events = [e for e in self._events if e.at.date().isoformat() >= since]
        rows = rollup_rows(events)
        return select_rows(rows, since, until, project, dim=dim, values=values, by_day=by_day)

    def session_summaries(self, since: datetime, project: str | None = None) -> list[SessionSummary]:
        """Every session with a call at or after ``since`` (of one ``project`` when named)."""
        with self._lock:
            events = sorted(
                (
                    e
                    for e in self._events
                    if e.at >= since
                    and e.subject.session
                    and (project is None or e.subject.project == project)
                ),
                key=lambda e: e.at,
            )
        return summarise_sessions(
            (
                e.subject.session or "",
                e.subject.user,
                e.at,
                e.usage.input_tokens,
                e.usage.output_tokens,
                e.cost_usd,
                e.status,
            )
            for e in events
        )

    def backfill_rollup(self, batch: int = 2000) -> int:
        """Nothing to roll up: the memory ledger sums its events when asked."""
        return 0

    def _keep_secret(self, name: str, candidate: str) -> str:
        return self._secrets.setdefault(name, candidate)

    def _estimate_stats(self, model: str) -> EstimateStats | None:
        return self._estimates.get(model)

    def _store_estimate_stats(self, stats: EstimateStats) -> None:
        self._estimates[stats.model] = stats

    # -- keys and audit --------------------------------------------------------------------------
    def _key_index(self) -> KeyIndex:
        return KeyIndex.of(list(self._keys.values()))

    def _store_key(self, record: KeyRecord) -> None:
        self._keys[record.id] = record

    def _insert_audit(self, entry: AuditEntry) -> AuditEntry:
        stored = replace(entry, id=next(self._ids))
        self._audit.append(stored)
        return stored

    def _query_audit(
        self, since: datetime | None, after: int | None, limit: int | None, project: str | None
    ) -> list[AuditEntry]:
        out = [
            e
            for e in self._audit
            if (since is None or e.at >= since)
            and (after is None or e.id > after)
            and (project is None or e.project == project)
        ]
        return out[:limit] if limit is not None else out
