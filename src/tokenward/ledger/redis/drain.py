"""The Redis ledger's durable side: the drainer (spool -> durable store), the rebuild of a lost
Redis state from the durable store, adjustments, and housekeeping.

**One rule keeps Redis and the durable store from counting an event twice or never.** The store
(a SQLite or PostgreSQL ledger) charges its own balance rows from every event it receives, so its
spend is the truth for every *drained* event. Two things can touch both sides:

* the *drainer* moves a batch of spooled entries in one store transaction, holding the store lock
  ``redis:<prefix>`` *shared*. For each event not yet in the store it first settles it in Redis
  again (a no-op when Redis already has that request id: the usual case; a charge when Redis never
  had it, because it was unreachable at settlement, or lost it), then inserts it in the store;
* the *rebuild* of a lost Redis state holds the same lock *exclusively*, copies the store's spend
  of every current window into Redis, and marks the state rebuilt (a new generation).

So an event is either in the store when a rebuild copies it (counted there) or inserted after (and
charged to Redis by the drainer then), never both. A PostgreSQL store takes the lock as an advisory
lock; a SQLite store's write transaction is exclusive already.

These functions are given the ledger they work for as a :class:`DrainedLedger` (what they use of
it); the ledger calls them, never the other way round.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from tokenward.clock import Clock
from tokenward.core.budgets import Subject, applicable
from tokenward.core.decide import Balance
from tokenward.core.events import UsageEvent
from tokenward.errors import LedgerError, StoreUnavailable
from tokenward.ledger.base import Reservation
from tokenward.ledger.denials import record_denial_in
from tokenward.ledger.reclaim import correction_event, is_late_settlement
from tokenward.ledger.records import (
    DENIAL_RATE,
    Adjustment,
    BudgetInstance,
    Denial,
    ShadowDenial,
    StopMarker,
    parse_iso,
)
from tokenward.ledger.redis.state import RedisSettings, View
from tokenward.ledger.redis.units import field, to_units
from tokenward.ledger.rows import ZERO, Rows, Snapshot, Span, span_of, window_spent
from tokenward.ledger.spool import Spool, SpoolEntry
from tokenward.ledger.spooled import alert_quarantined
from tokenward.ledger.transactional import TransactionalLedger
from tokenward.throttle import Throttle

__all__ = ["DrainedLedger", "adjust", "drain_step", "housekeeping", "rebuild"]

_outage_log = Throttle()

log = logging.getLogger("tokenward.ledger")

_BATCH = 200
_ORDER = {"settle": 0, "charge": 0, "estimate": 2}


class DrainedLedger(Protocol):
    """What the functions here use of the Redis ledger they work for
    (:class:`~tokenward.ledger.redis.ledger.RedisLedger` passes itself): its stores, its Redis
    connection and scripts, and the steps it runs on them."""

    settings: RedisSettings
    store: TransactionalLedger
    spool: Spool
    clock: Clock
    client: Any
    _keys: list[str]
    _scripts: dict[str, Any]
    _applied: dict[int, str]
    _view_cache: View | None

    def _redis(self, call: Callable[[], Any]) -> Any: ...

    def _script(
        self, name: str, view: View | None, *args: Any, now: datetime | None = None, rebuild: bool = True
    ) -> list[Any]: ...

    def _retry_again(self, step: Callable[[], list[Any]]) -> list[Any]: ...

    def _view(self, rebuild: bool = True) -> View: ...

    def _charge(
        self,
        reservation_id: str | None,
        event: UsageEvent,
        at: datetime,
        *,
        enforce: bool = False,
        replay: bool = False,
        final: str = "",
    ) -> tuple[str, Any]: ...

    def _settled(self, request_id: str) -> UsageEvent | None: ...

    def _apply_rows(self, key: str, record: Mapping[str, Any], charges: Sequence[Any]) -> bool: ...

    def _bump(self, name: str) -> None: ...

    def reservation(self, reservation_id: str) -> Reservation | None: ...

    def reap(self) -> int: ...


def _store_lock(ledger: DrainedLedger, *, shared: bool) -> None:
    lock = getattr(ledger.store, "_store_lock", None)
    if lock is not None:
        lock(f"redis:{ledger.settings.prefix}", shared=shared)


def drain_step(ledger: DrainedLedger) -> bool:
    """Move one batch of spooled entries to Redis and the durable store; True when it moved one
    (more may wait). A batch a store cannot take now stays in the spool for a later try; a batch
    a store refuses is moved again entry by entry, so one entry refused for its content
    (quarantined at its last refusal) never holds back the others."""
    entries = ledger.spool.claim(_BATCH)
    if not entries:
        return False
    try:
        _drain(ledger, entries)
    except StoreUnavailable as exc:
        _unavailable(ledger, entries, exc)
        return False
    except Exception as exc:
        log.warning(
            "a store refused a batch of %d spooled entries (%s); moving them one by one", len(entries), exc
        )
        return _drain_singly(ledger, entries)
    ledger.spool.done([e.id for e in entries])
    return True


def _unavailable(ledger: DrainedLedger, entries: list[SpoolEntry], exc: StoreUnavailable) -> None:
    ledger.spool.retry([e.id for e in entries], str(exc))
    if _outage_log.due() is not None:  # an outage: the ledger alerts it; once a minute here
        log.warning(
            "could not move %d spooled entries to the ledger's stores (they wait in the spool): %s",
            len(entries),
            exc,
        )


def _drain_singly(ledger: DrainedLedger, entries: list[SpoolEntry]) -> bool:
    moved = False
    for index, entry in enumerate(entries):
        try:
            _drain(ledger, [entry])
        except StoreUnavailable as exc:
            _unavailable(ledger, entries[index:], exc)
            return moved
        except Exception as exc:  # this entry is refused: set it aside at its last refusal
            error = f"{type(exc).__name__}: {exc}"
            if ledger.spool.refused(entry.id, error):
                quarantined(ledger.spool, entry, error)
            continue
        ledger.spool.done([entry.id])
        moved = True
    return moved


def quarantined(spool: Spool, entry: SpoolEntry, error: str) -> None:
    """Alert a quarantined entry: an error in the log and an audit entry ``ledger.quarantined``
    (spooled, as every record this ledger writes to its durable store)."""

    def record(action: str, details: dict[str, Any]) -> None:
        spool.append("audit", {"action": action, "details": details, "target": str(spool.path)})

    alert_quarantined(spool.path, entry, error, record)


def _drain(ledger: DrainedLedger, entries: list[SpoolEntry]) -> None:
    for entry in entries:
        if entry.kind == "release":  # Redis only; idempotent
            rid = entry.payload["rid"]
            ledger._retry_again(lambda: ledger._script("release", None, rid))  # noqa: B023 - called at once
    durable = [e for e in entries if e.kind != "release"]
    if not durable:
        return
    if any(e.kind in ("settle", "charge") for e in durable):
        ledger._view()  # a lost Redis state is rebuilt before, not inside, the store transaction
    durable.sort(key=lambda e: (_ORDER.get(e.kind, 1), e.id))  # events first, calibration last
    store = ledger.store
    with store._write():
        _store_lock(ledger, shared=True)
        snapshot = store._snapshot()
        now = ledger.clock.now()
        lock = getattr(store, "_lock_instances", None)
        if lock is not None:  # every budget instance the batch charges, in one fixed order
            subjects = {
                Subject.from_dict(e.payload["event"].get("subject") or {})
                for e in durable
                if e.kind in ("settle", "charge")
            }
            lock([(b.name, sid) for subject in subjects for b, sid in applicable(snapshot.budgets, subject)])
        gen = ledger._redis(lambda: ledger.client.get(ledger._keys[0])) if lock_events(durable) else None
        stored: list[tuple[UsageEvent, datetime]] = []
        for entry in durable:
            payload = entry.payload
            if entry.kind in ("settle", "charge"):
                charged = gen is not None and ledger._applied.pop(entry.id, None) == gen
                stored += _drain_event(ledger, entry.kind, payload, charged=charged)
                continue
            if stored:  # the events' charges before any other record of the batch
                _apply_batch(store, snapshot, stored, now)
                stored = []
            if entry.kind == "shadow":
                store._insert_shadow([ShadowDenial.from_dict(d) for d in payload["denials"]])
            elif entry.kind == "denial":
                rate = getattr(ledger, "denial_rate", DENIAL_RATE)
                record_denial_in(store, Denial.from_dict(payload["denial"]), rate)
            elif entry.kind == "instances":
                store._store_instances(
                    [BudgetInstance(b, s, parse_iso(t)) for b, s, t in payload["items"]]  # type: ignore[arg-type]
                )
            elif entry.kind == "stops":
                store._store_stops([StopMarker.from_dict(m) for m in payload["markers"]])
            elif entry.kind == "estimate":
                store.record_estimate(payload["model"], payload["estimated"], payload["actual"])
            elif entry.kind == "audit":
                store.audit("tokenward", payload["action"], payload["target"], after=payload["details"])
            else:  # pragma: no cover - written by a newer tokenward
                raise LedgerError(f"unknown spool entry kind {entry.kind!r}")
        if stored:
            _apply_batch(store, snapshot, stored, now)


def lock_events(entries: list[SpoolEntry]) -> bool:
    """Whether a batch holds usage events."""
    return any(e.kind in ("settle", "charge") for e in entries)


def _drain_event(
    ledger: DrainedLedger, kind: str, payload: Mapping[str, Any], *, charged: bool = False
) -> list[tuple[UsageEvent, datetime]]:
    """Store one spooled event; returns the events new to the store with the instant whose windows
    each charges (their charges are then applied by :func:`_apply_batch`): the event, or, for the
    real settlement of a call whose hold was reclaimed meanwhile, the reclaimed event (when it is
    new here) and the correction. ``charged``: this process charged it to the Redis state of the
    current generation (no need to ask Redis again)."""
    store = ledger.store
    event = UsageEvent.from_dict(payload["event"])
    if not charged:
        existing = store._get_event(event.request_id)
        if existing is not None:  # stored already (a replay after a crash, another replica's copy)
            return _corrected(ledger, existing, event) if is_late_settlement(existing, event) else []
    rid = payload.get("rid")
    at = parse_iso(payload["at"]) if payload.get("at") else None
    if at is None:  # settled while Redis was unreachable: its reservation is known now
        reservation = ledger.reservation(rid) if rid else None
        at = reservation.created_at if reservation is not None else event.at
        if reservation is not None:
            event = event.with_reservation(reservation.id, reservation.amounts)
    if kind == "charge":  # a checked charge: it happened only if Redis took it
        stored = ledger._settled(event.request_id)
        if stored is None:
            return []
        event = stored
    elif not charged:
        outcome, earlier = ledger._charge(rid, event, at, replay=True, final=str(payload.get("final") or ""))
        if outcome == "GONE":  # a reclaim of a reservation finished meanwhile
            return []
        if outcome == "DUP":
            if is_late_settlement(earlier, event):  # reclaimed by another process meanwhile
                first = [(earlier, earlier.at)] if store._insert_event(earlier) else []
                return first + _corrected(ledger, earlier, event)
            event = earlier
    return [(event, at)] if store._insert_event(event) else []


def _corrected(
    ledger: DrainedLedger, reclaimed: UsageEvent, real: UsageEvent
) -> list[tuple[UsageEvent, datetime]]:
    """The correction of a reclaimed hold by the call's real settlement, charged to Redis (once)
    and new to the store (or nothing, when it is there already)."""
    correction = correction_event(reclaimed, real)
    if ledger.store._get_event(correction.request_id) is not None:
        return []
    outcome, earlier = ledger._charge(None, correction, reclaimed.at, replay=True)
    if outcome == "DUP":
        correction = earlier
    return [(correction, reclaimed.at)] if ledger.store._insert_event(correction) else []


def _apply_batch(
    store: TransactionalLedger, snapshot: Snapshot, items: list[tuple[UsageEvent, datetime]], now: datetime
) -> None:
    """Charge new events to the store's balance rows as its settlement does, event after event
    (thresholds crossed, stops reached, template instances made), reading the rows of the whole
    batch once and writing them once."""
    plans = []
    spans: list[Span] = []
    for event, at in items:
        targets = sorted(applicable(snapshot.budgets, event.subject), key=lambda t: (t[0].name, t[1]))
        charges = [
            (b, sid, b.window.key(at), event.charged[b.meter])
            for b, sid in targets
            if event.charged.get(b.meter)
        ]
        plans.append((event, at, charges))
        spans += [
            span_of(b, sid, at) if b.window.rolling else (b.name, sid, key, key) for b, sid, key, _ in charges
        ]
    if not spans:
        return
    rows = dict(store._read_rows(spans))
    changed: Rows = {}
    for event, at, charges in plans:
        for budget, sid, key, amount in charges:
            row = (budget.name, sid, key)
            before = window_spent(budget, sid, at, key, rows)
            spent, held = rows.get(row, (ZERO, ZERO))
            rows[row] = changed[row] = (spent + amount, held)
            if amount <= 0 or (not budget.thresholds and budget.action != "stop"):
                continue
            after = before + amount
            store._record_thresholds(budget, sid, key, before, after, at, now, event.request_id)
            if after >= budget.limit and budget.action == "stop":
                balance = Balance(budget, sid, key, after, ZERO, None)
                store._stop(balance, after, event.subject, now, snapshot, event.request_id)
        store._note_instances([(b, sid) for b, sid, _, _ in charges], now)
    store._write_rows(changed)


def rebuild(ledger: DrainedLedger) -> bool:
    """Build a lost Redis state from the durable store: the spend of every budget instance in its
    current window (the rolling windows' buckets), and the stop markers. Returns whether this call
    built it (False: it existed, another replica built it first).

    Raises:
        StoreUnavailable: Redis or the durable store is unreachable.
    """
    store = ledger.store
    gen_key = ledger._keys[0]
    with store._write():
        _store_lock(ledger, shared=False)
        if ledger._redis(lambda: ledger.client.get(gen_key)) is not None:
            return False
        snapshot = store._snapshot()
        now = ledger.clock.now()
        spans = []
        for budget in snapshot.budgets:
            ids = (
                [budget.subject_id]
                if budget.subject_id
                else [i.subject_id for i in store._query_instances(budget.name)]
            )
            spans += [span_of(budget, sid, now) for sid in ids]
        rows = store._read_rows(spans) if spans else {}
        args: list[Any] = [uuid.uuid4().hex, _revision_base()]
        spent = [(key, amount) for key, (amount, _) in sorted(rows.items()) if amount]
        args.append(len(spent))
        for key, amount in spent:
            args += [field(*key), to_units(amount)]
        args.append(len(snapshot.stops))
        for (scope, value), marker in sorted(snapshot.stops.items()):
            args += [field(scope, value), marker_json(marker)]
        script = ledger._scripts["rebuild"]
        answer = ledger._redis(lambda: script(keys=ledger._keys, args=args))
    if answer[0] != "OK":
        return False
    if spent or snapshot.stops:
        log.warning(
            "Redis ledger state %s was missing: rebuilt from the durable store (%d balance rows, %d stop markers)",
            ledger.settings.prefix,
            len(spent),
            len(snapshot.stops),
        )
    else:
        log.info("Redis ledger state %s initialised", ledger.settings.prefix)
    return True


def marker_json(marker: StopMarker) -> str:
    """A stop marker as Redis keeps it."""
    import json

    return json.dumps(marker.to_dict())


def _revision_base() -> int:
    import random

    return random.randrange(10**12, 10**15)


def adjust(
    ledger: DrainedLedger,
    target: Subject | str,
    amounts: Mapping[str, Decimal],
    *,
    reason: str,
    actor: str,
    subject_id: str | None,
    at: datetime | None,
    adjustment_id: str | None,
) -> Adjustment:
    """Record an adjustment in the durable store and apply its rows to Redis, together (under the
    shared store lock, as the drainer does; a lost Redis state gets it from the store)."""
    ledger._view()
    store = ledger.store
    with store._write():
        _store_lock(ledger, shared=True)
        if adjustment_id is not None:
            existing = store._get_adjustment(adjustment_id)
            if existing is not None:
                return existing.repeated(target, amounts, reason=reason, actor=actor)
        adjustment = store.adjust(
            target,
            amounts,
            reason=reason,
            actor=actor,
            subject_id=subject_id,
            at=at,
            adjustment_id=adjustment_id,
        )
        charges: list[Any] = []
        for budget, sid, key, _, amount in adjustment.applied:
            charges += [field(budget, sid, key), to_units(amount)]
        ledger._apply_rows(f"adj:{adjustment.id}", adjustment.to_dict(), charges)
        return adjustment


def housekeeping(ledger: DrainedLedger) -> None:
    """Every ``reap_every`` seconds (10 by default; 0: never), from the drainer: expire the holds of
    reservations past their time to live even when no call comes (a replica that died leaves its
    own behind; the next admission would expire them anyway), and make sure every replica uses the
    budgets the durable store has (a change whose announcement to Redis failed is announced
    again)."""
    try:
        if ledger.settings.reap_every:
            ledger.reap()
        view = ledger._view_cache
        if view is not None and sorted(ledger.store.budgets(), key=lambda b: b.name) != view.budgets:
            ledger._bump("budgets")
    except LedgerError as exc:
        log.debug("ledger housekeeping skipped: %s", exc)
