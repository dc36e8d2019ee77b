"""The Redis ledger's records: what it keeps in the durable store (budgets, keys, the audit log,
adjustments, threshold events, shadow denials, template instances, calibration, usage events for
queries) and what its hot path writes there through the spool (shadow denials, instances, stop
markers).

Queries of what the drainer moves (events, thresholds, shadow denials, instances, the audit log)
move this process's spool first, so a process reads what it wrote.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenward.clock import utc
from tokenward.core.budgets import Budget, Subject
from tokenward.core.calibration import EstimateStats
from tokenward.core.decide import Balance
from tokenward.core.events import UsageEvent
from tokenward.errors import (
    BudgetError,
    BudgetExceeded,
    LedgerError,
    StoreUnavailable,
)
from tokenward.ledger.admin import KeyIndex
from tokenward.ledger.denials import check_denial_query
from tokenward.ledger.records import (
    DENIAL_RATE,
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
    check_lookup,
    iso,
)
from tokenward.ledger.redis.state import ATTEMPTS, Again, RedisState, View, span_keys
from tokenward.ledger.redis.units import field as row_field
from tokenward.ledger.redis.units import from_units
from tokenward.ledger.rows import (
    Rows,
    balance_of,
    page,
    refusing_balance,
    shadow_denials,
    stop_of,
    stop_targets,
)

__all__ = ["RedisRecords"]

log = logging.getLogger("tokenward.ledger")


class RedisRecords(RedisState):
    """Records of a Redis ledger, kept in its durable store (see the module docstring)."""

    _known_instances: set[tuple[str, str]]
    _applied: dict[int, str]
    denial_rate: int = DENIAL_RATE
    """Denials of one subject, budget and minute recorded one by one before the rest are folded
    (applied by the drainer in the durable store: :mod:`tokenward.ledger.denials`)."""

    def _refuse(
        self,
        denial: BudgetError,
        balances: Sequence[Balance],
        subject: Subject,
        now: datetime,
        view: View,
        request_id: str | None,
    ) -> None:
        """A hard ``stop`` budget that refused a call ends its session or task."""
        balance = refusing_balance(denial, balances)
        if balance is not None:
            self._stop(balance.budget, balance.subject_id, balance.spent, subject, now, view, request_id)

    def _stop(
        self,
        budget: Budget,
        subject_id: str,
        used: Decimal,
        subject: Subject,
        now: datetime,
        view: View,
        request_id: str | None,
    ) -> None:
        if budget.action != "stop" or budget.mode != "hard":
            return
        markers = [
            StopMarker(
                scope,
                value,
                now,
                budget.name,
                budget.scope,
                subject_id,
                budget.meter,
                budget.limit,
                used,
                request_id,
            )
            for scope, value in stop_targets(budget, subject_id, subject)
            if (scope, value) not in view.stops
        ]
        if not markers:
            return
        args: list[Any] = [len(markers)]
        for marker in markers:
            args += [row_field(marker.scope, marker.subject_id), json.dumps(marker.to_dict())]
        with contextlib.suppress(Again):
            self._script("stop", None, *args, now=now)
        self.spool.append("stops", {"markers": [m.to_dict() for m in markers]})
        self._view_cache = None

    def _spool_shadow(
        self,
        shadow: Sequence[BudgetExceeded],
        balances: Sequence[Balance],
        subject: Subject,
        now: datetime,
        request_id: str | None,
        reservation_id: str,
    ) -> None:
        denials = [
            d.to_dict() for d in shadow_denials(shadow, balances, subject, now, request_id, reservation_id)
        ]
        self.spool.append("shadow", {"denials": denials})
        self._wake()

    def _note_instances(self, pairs: Sequence[tuple[Budget, str]], now: datetime) -> None:
        new = [
            (b.name, sid)
            for b, sid in pairs
            if b.subject_id is None and (b.name, sid) not in self._known_instances
        ]
        if new:
            self.spool.append("instances", {"items": [[name, sid, iso(now)] for name, sid in new]})
            self._known_instances.update(new)
            if len(self._known_instances) > 200_000:
                self._known_instances.clear()

    def budget_balances(self, name: str, at: datetime | None = None) -> list[Balance]:
        """Every instance of budget ``name`` in the window containing ``at`` (now)."""
        at = utc(at) if at else self.clock.now()
        for _ in range(ATTEMPTS):
            view = self._view()
            budget = next((b for b in view.budgets if b.name == name), None)
            if budget is None:
                return []
            if budget.subject_id:
                ids = [budget.subject_id]
            else:
                self.flush(5)
                ids = sorted({i.subject_id for i in self.store.instances(name)})
            keys = [(budget.name, sid, k) for sid in ids for k in span_keys(budget, at)]
            values = self._read(view, [row_field(*k) for k in keys])
            if values is None:
                continue
            rows: Rows = {}
            for key, value in zip(keys, values, strict=True):
                if value:
                    spent, held = str(value).split(" ")
                    rows[key] = (from_units(spent), from_units(held))
            return [balance_of(budget, sid, at, rows) for sid in ids]
        raise LedgerError("Redis ledger: the budgets keep changing")  # pragma: no cover

    def _drain_step(self) -> bool:
        """Move one batch of the spool to the durable store; True when it moved one (the ledger
        does it, with :func:`.drain.drain_step`)."""
        raise NotImplementedError

    def flush(self, timeout: float = 30.0) -> int:
        """Move everything spooled to the durable store now; returns how many entries still wait
        after ``timeout`` seconds (0: all of them are stored)."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = self.spool.pending()
            if not waiting or time.monotonic() >= deadline:
                return waiting
            try:
                progressed = self._drain_step()
            except LedgerError:
                progressed = False
            if not progressed:
                time.sleep(0.02)

    def events(
        self,
        *,
        subject: Subject | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[UsageEvent]:
        """Usage events in time order, from the durable store (after moving the spool there)."""
        self.flush(5)
        return self.store.events(subject=subject, since=since, until=until, limit=limit)

    def event_by_metadata(self, key: str, value: str) -> UsageEvent | None:
        """The most recently recorded usage event whose ``metadata[key]`` is ``value``, from the
        durable store (after moving the spool there), or None."""
        check_lookup(key, value)
        self.flush(5)
        return self.store.event_by_metadata(key, value)

    def put_budget(self, budget: Budget) -> None:
        """Create or replace a budget (in the durable store); every replica reloads it at its
        next call. The events this process settled before are moved to the durable store first,
        so their thresholds are judged by the definition they were charged under."""
        self.flush(5)
        self.store.put_budget(budget)
        self._bump("budgets")

    def join_lease(
        self,
        key: str,
        holder: str,
        *,
        ttl: timedelta,
        budgets: Sequence[Budget] = (),
        keep: bool = False,
    ) -> bool:
        """As :meth:`tokenward.ledger.leases.LeaseSteps.join_lease`, in the durable store (every
        replica reloads the budgets it made)."""
        if budgets:
            self.flush(5)
        made = self.store.join_lease(key, holder, ttl=ttl, budgets=budgets, keep=keep)
        if made:
            self._bump("budgets")
        return made

    def renew_lease(self, key: str, holder: str, ttl: timedelta) -> bool:
        """As :meth:`tokenward.ledger.leases.LeaseSteps.renew_lease`."""
        return self.store.renew_lease(key, holder, ttl)

    def leave_lease(self, key: str, holder: str) -> bool:
        """As :meth:`tokenward.ledger.leases.LeaseSteps.leave_lease` (the events this process
        settled are moved to the durable store first, as before any budget change)."""
        self.flush(5)
        deleted = self.store.leave_lease(key, holder)
        if deleted:
            self._bump("budgets")
        return deleted

    def reap_leases(self) -> bool:
        """As :meth:`tokenward.ledger.leases.LeaseSteps.reap_leases`."""
        deleted = self.store.reap_leases()
        if deleted:
            self._bump("budgets")
        return deleted

    def lease_group(self, key: str) -> LeaseGroup | None:
        """As :meth:`tokenward.ledger.leases.LeaseSteps.lease_group`."""
        return self.store.lease_group(key)

    def disputed_events(self, *, since: datetime | None = None, limit: int | None = None) -> list[UsageEvent]:
        """As the contract (from the durable store, after moving this process's spool)."""
        self.flush(5)
        return self.store.disputed_events(since=since, limit=limit)

    def get_budget(self, name: str) -> Budget | None:
        """The budget called ``name``, or None."""
        return self.store.get_budget(name)

    def delete_budget(self, name: str) -> bool:
        """Delete a budget; returns whether it existed. Its events stay."""
        self.flush(5)
        removed = self.store.delete_budget(name)
        self._bump("budgets")
        return removed

    def budgets(self) -> list[Budget]:
        """Every budget, sorted by name."""
        return self.store.budgets()

    def instances(self, budget: str) -> list[BudgetInstance]:
        """The instances template ``budget`` has made so far, oldest first."""
        self.flush(5)
        return self.store.instances(budget)

    def record_estimate(self, model: str, estimated: int, actual: int) -> None:
        """Add one prompt-estimate observation (spooled; aggregated in the durable store)."""
        self.spool.append("estimate", {"model": model, "estimated": int(estimated), "actual": int(actual)})
        self._wake()

    def estimate_stats(self, model: str) -> EstimateStats | None:
        """``model``'s calibration aggregates (None when unknown or the store is unreachable)."""
        try:
            self.flush(1)
            return self.store.estimate_stats(model)
        except LedgerError as exc:
            log.warning("calibration of %s unavailable: %s", model, exc)
            return None

    def adjustments(
        self,
        *,
        subject: Subject | None = None,
        budget: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[Adjustment]:
        """Adjustments in the order they were made (from the durable store)."""
        return self.store.adjustments(subject=subject, budget=budget, since=since, until=until, limit=limit)

    def threshold_events(self, after: int | None = None, limit: int | None = 100) -> list[ThresholdEvent]:
        """Threshold events (recorded by the durable store as it receives the events)."""
        page(after, limit)
        self.flush(5)
        return self.store.threshold_events(after, limit)

    def shadow_denials(
        self, after: int | None = None, limit: int | None = 100, *, budget: str | None = None
    ) -> list[ShadowDenial]:
        """Would-be denials of shadow budgets (from the durable store)."""
        page(after, limit)
        self.flush(5)
        return self.store.shadow_denials(after, limit, budget=budget)

    def record_denial(self, denial: Denial) -> Denial:
        """Record a refused call: through the spool (as shadow denials are), so the hot path
        pays one local append; the drainer stores it in the durable store by the flood rule of
        :mod:`tokenward.ledger.denials`. Returns it unnumbered."""
        self.spool.append("denial", {"denial": denial.to_dict()})
        self._wake()
        return denial

    def denials(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        subject: Subject | None = None,
        budget: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[Denial]:
        """Recorded denials, newest first (from the durable store, after this process's spool
        is moved there); as :meth:`tokenward.ledger.transactional.TransactionalLedger.denials`."""
        check_denial_query(since, until, subject, budget, limit, offset)
        self.flush(5)
        return self.store.denials(since, until, subject, budget, limit, offset)

    def begin_idempotent(
        self, namespace: str, key: str, body_sha256: str, request_id: str
    ) -> IdempotentAnswer | None:
        """As the contract: ``Idempotency-Key`` records live in the durable store (their answers
        are kept for hours; Redis holds only counters)."""
        return self.store.begin_idempotent(namespace, key, body_sha256, request_id)

    def finish_idempotent(
        self, namespace: str, key: str, request_id: str, response: Mapping[str, Any], ttl: timedelta
    ) -> bool:
        """As the contract (in the durable store)."""
        return self.store.finish_idempotent(namespace, key, request_id, response, ttl)

    def drop_idempotent(self, namespace: str, key: str, request_id: str) -> bool:
        """As the contract (in the durable store)."""
        return self.store.drop_idempotent(namespace, key, request_id)

    def stops(self) -> list[StopMarker]:
        """Every session and task ended by a ``stop`` budget, oldest first."""
        markers = self._load_stops()
        return sorted(markers.values(), key=lambda m: (m.at, m.scope, m.subject_id))

    def stop_of(self, subject: Subject) -> StopMarker | None:
        """The marker that ended ``subject``'s session or task, or None."""
        return stop_of(self._load_stops(), subject)

    def put_key(self, record: KeyRecord) -> KeyRecord:
        """Create or replace a virtual key (in the durable store); replicas see it at once."""
        stored = self.store.put_key(record)
        self._bump("keys")
        return stored

    def get_key(self, key_id: str) -> KeyRecord | None:
        """A virtual key by id, in any state."""
        return self.store.get_key(key_id)

    def key_by_hash(
        self, sha256_hex: str, *, at: datetime | None = None, include_inactive: bool = False
    ) -> KeyRecord | None:
        """The active key with this SHA-256 (cached by this process; one Redis read checks that
        no replica changed the keys)."""
        try:
            rev = self._revisions()[3]
        except StoreUnavailable:
            return self.store.key_by_hash(sha256_hex, at=at, include_inactive=include_inactive)
        cached = self._keys_cache
        if cached is None or cached[0] != rev:
            cached = (rev, KeyIndex.of(self.store.keys()))
            self._keys_cache = cached
        record = cached[1].by_hash.get(sha256_hex.lower())
        if record is None or include_inactive:
            return record
        return record if record.active(utc(at) if at else self.clock.now()) else None

    def spend_rollup(
        self, since: str, until: str | None = None, project: str | None = None, **options: Any
    ) -> Any:
        """Daily spend rows (:mod:`tokenward.ledger.rollups`), from the durable store (after moving
        the spool there)."""
        self.flush(5)
        return self.store.spend_rollup(since, until, project, **options)  # type: ignore[attr-defined]

    def session_summaries(self, since: datetime, project: str | None = None) -> Any:
        """Every session with a call since ``since``, from the durable store (after moving the
        spool there)."""
        self.flush(5)
        return self.store.session_summaries(since, project)  # type: ignore[attr-defined]

    def backfill_rollup(self, batch: int = 2000) -> int:
        """Roll up the durable store's older events in one batch (see the SQLite ledger's)."""
        return int(self.store.backfill_rollup(batch))  # type: ignore[attr-defined]

    def secret(self, name: str) -> str:
        """A secret shared by every process on this ledger (kept in the durable store)."""
        return str(self.store.secret(name))

    def keys(self, project: str | None = None) -> list[KeyRecord]:
        """Every key, optionally of one project, oldest first."""
        return self.store.keys(project)

    def revoke_key(self, key_id: str, at: datetime | None = None) -> bool:
        """Revoke a key; returns whether it changed."""
        changed = self.store.revoke_key(key_id, at)
        if changed:
            self._bump("keys")
        return changed

    def audit(
        self,
        actor: str,
        action: str,
        target: str,
        before: Any = None,
        after: Any = None,
        *,
        project: str | None = None,
    ) -> AuditEntry:
        """Append an audit entry (to the durable store)."""
        return self.store.audit(actor, action, target, before, after, project=project)

    def audit_log(
        self,
        *,
        since: datetime | None = None,
        after: int | None = None,
        limit: int | None = None,
        project: str | None = None,
    ) -> list[AuditEntry]:
        """Audit entries oldest first (from the durable store)."""
        self.flush(5)
        return self.store.audit_log(since=since, after=after, limit=limit, project=project)
