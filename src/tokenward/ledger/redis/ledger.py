"""``redis://host:port/db?events=URL``: holds and balances in Redis, the durable record elsewhere.

URL form (``rediss://`` for TLS; a password as ``redis://:secret@host``)::

    redis://127.0.0.1:6379/0?prefix=tokenward&events=postgresql://tw@db.internal/tokenward
    redis://127.0.0.1:6379/0?events=sqlite:////var/lib/tokenward/events.db
    redis://10.0.0.5:7000/0?cluster=true&events=postgresql://tw@db.internal/tokenward

Parameters: ``events`` (required, and **last**: everything after ``events=`` is the durable
store's own URL, its ``?query`` included; it may also be percent-encoded), ``prefix`` (the key
prefix and hash tag, default ``tokenward``; one per ledger), ``spool`` (the local spool file,
default ``~/.local/state/tokenward/spool-<hash of the URL>.db``), ``timeout`` (seconds before
Redis counts as unavailable, default 2), ``retention`` (how long settled request ids, and
expired or reclaimed reservations, are remembered, default ``7d``; a settled or released
reservation is forgotten at once, its settled call answered by its request id), ``reap_every`` (seconds between background
expiries of reservations past their time to live, default ``10s``; ``0``: only at admissions and
``reap()``), ``cluster`` (``true`` for Redis Cluster).

**Where things live.** Redis holds what admission needs, updated only by atomic server-side
scripts (:mod:`.lua`): balance rows (spent and held, integers of 10^-18 units), reservations
with their expiry, idempotency keys, the request ids already settled (with their events), and stop
markers. Budgets, virtual keys, the audit log, adjustments, threshold events, shadow denials,
template instances, calibration and the usage events themselves live in the *durable store*
named by ``events=``, a complete tokenward ledger (``postgresql://``, shared by every replica; or
``sqlite:///path`` for replicas on one machine). The hot path (``admit``, ``reserve``,
``settle``, ``release``) never waits on the durable store: budgets and keys are cached in each
process and reloaded when a revision counter in Redis moves.

**Usage events.** ``settle`` appends the event to the replica's local spool
(:mod:`tokenward.ledger.spool`, SQLite on local disk) *before* it charges Redis, so a call that was
charged is never lost, even if the process dies right after. A drainer thread moves spooled events
to the durable store in batches (normally within milliseconds); while that store is slow or down
they wait in the spool and are replayed, in order, when it returns. Each request id is stored once:
Redis refuses a second settlement of it, and the store's unique request id refuses a second copy.
The durable store charges its own balance rows from the events it receives (there, thresholds and
stop markers are recorded once per budget, window and threshold), so it always holds the true spend
of every drained event.

**Losing Redis.** If Redis comes back empty (restarted without persistence, failed over to a
replica that lagged), the first script to notice (its generation key is gone) rebuilds the state
from the durable store's balance rows, under a lock that excludes the drainers; events still in a
spool then are charged to Redis by the drainer that stores them. Holds of calls in flight at that
moment are forgotten (their calls are still charged when they settle). Run Redis with
``appendonly yes`` to keep holds across restarts.

**Hash slot.** Every key of a ledger shares the hash tag ``{prefix}``, hence one slot: a
reservation touches every budget that applies to its subject (its user, team, project, org, key,
session... instances), and budgets shared by many subjects (a project budget) are touched by the
calls of all of them, so no split of the keys by subject keeps every call's budgets in one slot
for any budget set. One slot makes every step a single atomic script on Redis Cluster too; the
ledger then lives on one shard (with its replicas for fail-over), and tenants needing more are
given ledgers of their own (another ``prefix``). A shard runs tens of thousands of these scripts a
second, far above the rate of LLM calls of any gateway fleet.

**Faults.** While Redis is unreachable (or slower than ``timeout``), an admission follows each
budget's ``on_store_failure`` (:mod:`tokenward.ledger.failover`): refused with
:class:`~tokenward.errors.StoreUnavailable` (503 at the gateway) or admitted unchecked; settlements
and releases go to the spool and are applied when Redis returns. A replica that dies leaves its
reservations to expire: any admission (or ``reap``) releases holds past their time to live.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from tokenward.clock import Clock, SystemClock, utc
from tokenward.core.budgets import Budget, Subject
from tokenward.core.decide import CallPlan, Decision, decide, decision_of, shadow_check
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.errors import (
    BudgetError,
    ConfigError,
    LedgerError,
    StoreUnavailable,
    ValidationError,
)
from tokenward.ledger.admin import KeyIndex
from tokenward.ledger.base import DEFAULT_TTL, Hold, Ledger, Reservation, new_id
from tokenward.ledger.failover import (
    StoreHealth,
    Worker,
    open_reservation,
    redact,
)
from tokenward.ledger.normalise import check_subject, storable_event
from tokenward.ledger.owner import is_dead, this_process
from tokenward.ledger.reclaim import correction_event, is_late_settlement, reclaimed_event
from tokenward.ledger.records import (
    Adjustment,
    iso,
)
from tokenward.ledger.redis.drain import adjust as adjust_both
from tokenward.ledger.redis.drain import drain_step, housekeeping, rebuild
from tokenward.ledger.redis.lua import EXTEND, HOLD, KEY_NAMES, READ, REAP, REBUILD, RELEASE, SETTLE, STOP
from tokenward.ledger.redis.records import RedisRecords
from tokenward.ledger.redis.state import (
    ATTEMPTS,
    Again,
    Lost,
    RedisSettings,
    View,
    micros,
    parse_redis_url,
    redis_errors,
    reservation_json,
    reservation_of,
)
from tokenward.ledger.redis.units import field as row_field
from tokenward.ledger.redis.units import from_units, to_units
from tokenward.ledger.rows import (
    check_amounts,
    stop_of,
    stopped_error,
)
from tokenward.ledger.spool import Spool
from tokenward.ledger.transactional import TransactionalLedger

__all__ = ["RedisLedger", "RedisSettings", "StoreOpener", "parse_redis_url"]

log = logging.getLogger("tokenward.ledger")

_MINE = 50_000  # reservations this process made, remembered for their settlement


class StoreOpener(Protocol):
    """Opens a ledger by its URL: the registry's :func:`tokenward.ledger.open_ledger`."""

    def __call__(self, url: str, *, clock: Clock) -> Ledger: ...


def _maybe_sent(exc: StoreUnavailable) -> bool:
    """Whether a command that failed with ``exc`` may still have reached Redis: it timed out, or
    the connection broke after it was sent; not when connecting failed or the call was refused
    without trying (an outage in progress)."""
    cause = exc.__cause__
    if cause is None:
        return False
    return not (isinstance(cause, redis_errors.ConnectionError) and "connecting to" in str(cause))


class RedisLedger(RedisRecords):
    """The Redis ledger (see the module docstring).

    Args:
        url: ``redis://host:port/db?...&events=URL``.
        open_store: opens the durable store ``events=`` names (the registry passes
            :func:`tokenward.ledger.open_ledger`: a backend never imports another).
        clock: where time comes from (every replica's clocks should agree within a second:
            expiry and windows follow them).

    Raises:
        ConfigError: a malformed URL.
        LedgerError: the durable store or the spool cannot be opened.
    """

    def __init__(self, url: str, *, open_store: StoreOpener, clock: Clock | None = None) -> None:
        self.url = url
        self.clock: Clock = clock or SystemClock()
        self.settings = parse_redis_url(url)
        store = open_store(self.settings.events_url, clock=self.clock)
        if not isinstance(store, TransactionalLedger):  # pragma: no cover - parse_redis_url checks
            raise ConfigError("events= must name a SQLite or PostgreSQL ledger")
        self.store: TransactionalLedger = store
        self.spool = Spool(self.settings.spool)
        self.health = StoreHealth(redact(self.settings.redis_url), record=self._record_alert)
        self.client = self._connect()
        self._keys = [f"{{{self.settings.prefix}}}:{name}" for name in KEY_NAMES]
        self._scripts = {
            name: self.client.register_script(source)
            for name, source in (
                ("read", READ),
                ("hold", HOLD),
                ("settle", SETTLE),
                ("release", RELEASE),
                ("reap", REAP),
                ("extend", EXTEND),
                ("stop", STOP),
                ("rebuild", REBUILD),
            )
        }
        self._view_cache: View | None = None
        self._keys_cache: tuple[str, KeyIndex] | None = None
        self._mine: OrderedDict[str, Reservation] = OrderedDict()
        self._applied: dict[int, str] = {}  # spool entry -> generation of the Redis state it charged
        self._mine_lock = threading.Lock()
        self._known_instances: set[tuple[str, str]] = set()
        self._known_stops: set[tuple[str, str]] = set()
        self._last_refresh = 0.0
        self._closed = False
        self._drainer = Worker("tokenward-redis-drain", self._drain_step, interval=0.5, gather=0.05)
        with contextlib.suppress(LedgerError):
            self.reclaim_dead()  # reservations of processes of this machine that died

    def _remember(self, reservation: Reservation) -> None:
        with self._mine_lock:
            self._mine[reservation.id] = reservation
            while len(self._mine) > _MINE:
                self._mine.popitem(last=False)

    def _forget(self, reservation_id: str | None) -> None:
        if reservation_id is not None:
            with self._mine_lock:
                self._mine.pop(reservation_id, None)

    def _existing(self, answer: Sequence[Any]) -> Reservation:
        """The reservation a script's ``EXISTS`` answer names, or the answer of the settled call
        a ``DONE`` one carries (its reservation was forgotten when it settled)."""
        if answer[0] == "DONE":
            return Reservation.answered(UsageEvent.from_dict(json.loads(answer[1])))
        return reservation_of(str(answer[2]), str(answer[3]))

    def _rebuild(self) -> None:
        rebuild(self)
        self._view_cache = None

    def _drain_step(self) -> bool:
        every = min(10.0, self.settings.reap_every or 10.0)
        if time.monotonic() - self._last_refresh > every:
            self._last_refresh = time.monotonic()
            housekeeping(self)
        return drain_step(self)

    def _admission(
        self,
        subject: Subject,
        ttl: timedelta,
        idempotency_key: str | None,
        metadata: Mapping[str, Any] | None,
        *,
        plan: CallPlan | None = None,
        amounts: Mapping[str, Decimal] | None = None,
        forwarded: bool = False,
    ) -> tuple[Decision | None, Reservation, bool]:
        """Decide (for a plan) and hold, all or nothing; returns (decision, reservation, fresh)."""
        check_subject(subject)
        now = self.clock.now()
        rid = new_id()
        values: list[Any] | None = None
        for _ in range(ATTEMPTS):
            view = self._view()
            try:
                marker = stop_of(view.stops, subject)
                if marker is not None:
                    earlier = self._find_idempotent(idempotency_key) if idempotency_key else None
                    if earlier is not None:
                        return None, earlier, False
                    raise stopped_error(marker)
                layout = self._layout(view.budgets, subject, now)
                decision: Decision | None = None
                if plan is not None:
                    if values is None:
                        answer = self._script(
                            "read", view, idempotency_key or "", len(layout.fields), *layout.fields, now=now
                        )
                        if answer[0] in ("EXISTS", "DONE"):
                            return None, self._existing(answer), False
                        values = answer[1:]
                    balances = self._balances(layout, values)
                    try:
                        decision = decide(plan, balances)
                    except BudgetError as denial:
                        self._refuse(denial, balances, subject, now, view, idempotency_key)
                        raise
                    amounts = decision.amounts
                assert amounts is not None
                balances_held = [
                    (budget, sid, positions)
                    for (budget, sid), positions in zip(layout.pairs, layout.spans, strict=True)
                    if budget.meter in amounts
                ]
                holds = tuple(
                    Hold(budget.name, sid, budget.window.key(now), budget.meter, amounts[budget.meter])
                    for budget, sid, _ in balances_held
                )
                reservation = Reservation(
                    id=rid,
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
                hold_rows = [
                    [row_field(h.budget, h.subject_id, h.window_key), str(to_units(h.amount))]
                    for h in holds
                    if h.amount
                ]
                holds_record: dict[str, Any] = {"k": idempotency_key or False, "h": hold_rows}
                if forwarded:  # never released by the scripts' reaper: reclaimed (charged)
                    holds_record["f"] = 1
                held = json.dumps(holds_record, separators=(",", ":"))
                try:
                    answer = self._script(
                        "hold",
                        view,
                        idempotency_key or "",
                        rid,
                        reservation_json(reservation),
                        held,
                        micros(reservation.expires_at),
                        len(layout.fields),
                        *layout.fields,
                        *self._checks(layout, amounts),
                        now=now,
                    )
                except StoreUnavailable as exc:
                    if _maybe_sent(exc):
                        # the hold may still reach a stalled Redis after we gave up on it: the call
                        # is refused or admitted unchecked, so a hold applied late must be released,
                        # not left to expire (a forwarded one would be charged for a call never sent)
                        self.spool.append("release", {"rid": rid})
                    raise
            except Again:
                values = None
                continue
            if answer[0] in ("EXISTS", "DONE"):
                return None, self._existing(answer), False
            values = answer[1:]
            balances = self._balances(layout, values)
            if answer[0] == "DENY":
                if plan is None:
                    refusal = self._denial(balances, amounts)
                    self._refuse(refusal, balances, subject, now, view, idempotency_key)
                    raise refusal
                continue  # a concurrent hold took the room the decision counted on: decide again
            shadow = decision.shadow if decision is not None else tuple(shadow_check(balances, amounts))
            if shadow:
                self._spool_shadow(shadow, balances, subject, now, idempotency_key, rid)
            self._note_instances([(b, sid) for b, sid, _ in balances_held], now)
            self._remember(reservation)
            return decision, reservation, True
        raise LedgerError("Redis ledger: too many concurrent changes; the call was not admitted")

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
        """Hold ``amounts`` on every applicable budget, all or nothing, in one script (marked
        ``forwarded`` in the same script: see the contract).

        Raises:
            BudgetExceeded: the first hard budget that cannot take the hold; nothing is held.
            Stopped: the subject's session or task was ended by a ``stop`` budget.
            StoreUnavailable: Redis is unreachable and a hard budget fails closed.
            ValidationError: a bad amount.
        """
        check_amounts(amounts, "reserve amounts")
        try:
            return self._admission(
                subject, ttl, idempotency_key, metadata, amounts=amounts, forwarded=forwarded
            )[1]
        except StoreUnavailable as exc:
            self._admit_unchecked("reserve", subject, exc)
            return open_reservation(subject, amounts, self.clock.now(), ttl, idempotency_key, metadata)

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
        """Decide on the balances read (after reaping) and hold the decision's amounts; when a
        concurrent call took the room meanwhile, decide again on the balances the hold met.

        Raises:
            BudgetExceeded: a hard budget cannot pay even for the plan's minimum output.
            Stopped / UnpricedCall: as the contract.
            StoreUnavailable: Redis is unreachable and a hard budget fails closed.
        """
        try:
            decision, reservation, fresh = self._admission(
                subject, ttl, idempotency_key, metadata, plan=plan, forwarded=forwarded
            )
        except StoreUnavailable as exc:
            self._admit_unchecked("admit", subject, exc)
            decision = decide(plan, [])
            return decision, open_reservation(
                subject, decision.amounts, self.clock.now(), ttl, idempotency_key, metadata
            )
        if decision is None or not fresh:
            return decision_of(reservation), reservation
        return decision, reservation

    def _reservation_for(self, reservation_id: str | None) -> tuple[Reservation | None, bool]:
        """The reservation being settled, and whether that is known (False: Redis unreachable)."""
        if reservation_id is None:
            return None, True
        with self._mine_lock:
            mine = self._mine.get(reservation_id)
        if mine is not None:
            return mine, True
        try:
            return self.reservation(reservation_id), True
        except StoreUnavailable:
            return None, False

    def _charge(
        self,
        reservation_id: str | None,
        event: UsageEvent,
        at: datetime,
        *,
        enforce: bool = False,
        replay: bool = False,
        final: str = "",
    ) -> tuple[str, Any]:
        """Charge ``event`` in Redis (releasing the reservation's hold), once per request id;
        ``final`` is the reservation's state after (``""``: settled; ``reclaimed``).

        Returns:
            ``("OK", the generation of the state charged)``, ``("DUP", the stored event)``, ``("DENY", the denial)`` (only with
            ``enforce``), or ``("NOGEN", None)`` (only with ``replay``: the state is gone and will
            be rebuilt from the durable store, which has this event).
        """
        now = self.clock.now()
        for _ in range(ATTEMPTS):
            try:
                view = self._view(rebuild=not replay)
            except Lost:
                return "NOGEN", None
            layout = self._layout(view.budgets, event.subject, at)
            charges: list[Any] = []
            watch: list[tuple[Budget, str]] = []
            spans: list[Any] = []
            for (budget, sid), positions in zip(layout.pairs, layout.spans, strict=True):
                amount = event.charged.get(budget.meter)
                if not amount:
                    continue
                charges += [row_field(budget.name, sid, budget.window.key(at)), to_units(amount)]
                if budget.action == "stop" and budget.mode == "hard":
                    watch.append((budget, sid))
                    spans += [len(positions), *(layout.fields[p - 1] for p in positions)]
            reads = layout.fields if enforce else []
            checks = self._checks(layout, event.charged) if enforce else [0]
            try:
                answer = self._script(
                    "settle",
                    view,
                    event.request_id,
                    event.to_json(),
                    reservation_id or "",
                    final,
                    len(charges) // 2,
                    *charges,
                    len(reads),
                    *reads,
                    *checks,
                    len(watch),
                    *spans,
                    now=now,
                    rebuild=not replay,
                )
            except Again:
                continue
            except Lost:
                return "NOGEN", None
            if answer[0] == "DUP":
                return "DUP", UsageEvent.from_dict(json.loads(answer[1]))
            if answer[0] == "GONE":
                return "GONE", None
            if answer[0] == "DENY":
                balances = self._balances(layout, answer[1:])
                denial = self._denial(balances, event.charged)
                self._refuse(denial, balances, event.subject, now, view, event.request_id)
                return "DENY", denial
            for (budget, sid), total in zip(watch, answer[3:], strict=True):
                after = from_units(total)
                if after >= budget.limit:
                    self._stop(budget, sid, after, event.subject, now, view, event.request_id)
            if not replay:
                self._note_instances([(b, sid) for b, sid in layout.pairs if event.charged.get(b.meter)], now)
            return "OK", str(answer[2])
        raise LedgerError("Redis ledger: the budgets keep changing")  # pragma: no cover

    def settle(self, reservation_id: str | None, event: UsageEvent) -> UsageEvent:
        """Replace the hold with ``event.charged`` and record ``event``, once per request id.

        The event is spooled locally first, then charged in Redis (one script), then moved to the
        durable store by the drainer. While Redis is unreachable the charge waits in the spool
        too, and is applied when Redis returns.

        Returns:
            The event (the earlier one, when this request id was already settled).

        Raises:
            ValidationError: a charged amount that is not a finite, non-negative Decimal.
            LedgerError: the spool cannot be written.
        """
        check_amounts(event.charged, f"event {event.request_id!r}: charged")
        event = storable_event(event)
        reservation, known = self._reservation_for(reservation_id)
        at = reservation.created_at if reservation is not None else event.at
        if reservation is not None:
            event = event.with_reservation(reservation.id, reservation.amounts)
        payload = {"rid": reservation_id, "at": iso(at) if known else None, "event": event.to_dict()}
        entry = self.spool.append("settle", payload)
        try:
            if not known:
                raise StoreUnavailable("Redis unreachable")
            outcome, detail = self._charge(reservation_id, event, at)
        except StoreUnavailable as exc:
            self._failed("settle", "spooled", exc, event.subject)
            return event
        self._forget(reservation_id)
        if outcome == "DUP":
            self.spool.done([entry])
            if is_late_settlement(detail, event):  # its hold was reclaimed: correct, once
                self._settle_more(correction_event(detail, event), detail.at)
                return event
            return detail  # type: ignore[no-any-return]
        self._applied[entry] = detail  # the drainer need not charge Redis again in this generation
        if len(self._applied) > 100_000:  # entries another process on this spool drained
            self._applied.clear()
        self._wake()
        return event

    def _settle_more(
        self, event: UsageEvent, at: datetime, reservation: Reservation | None = None, final: str = ""
    ) -> None:
        """Settle an event the ledger made itself (a reclaimed hold, a correction), spooled first
        like any settlement (its charges may be negative: a correction)."""
        rid = reservation.id if reservation is not None else None
        payload: dict[str, Any] = {"rid": rid, "at": iso(at), "event": event.to_dict()}
        if final:
            payload["final"] = final
        entry = self.spool.append("settle", payload)
        try:
            outcome, detail = self._charge(rid, event, at, final=final)
        except StoreUnavailable as exc:
            self._failed("settle", "spooled", exc, event.subject)
            return
        if outcome in ("DUP", "GONE"):
            self.spool.done([entry])
            return
        self._applied[entry] = detail
        self._wake()

    def _reclaim(self, reservation: Reservation, reason: str) -> None:
        """Charge a forwarded reservation its hold (:mod:`tokenward.ledger.reclaim`)."""
        event = reclaimed_event(reservation, self.clock.now(), reason)
        self._settle_more(event, reservation.created_at, reservation, "reclaimed")

    def _reclaim_expired(self) -> int:
        """Reclaim the forwarded reservations the scripts found past their time to live."""
        count = 0
        while True:
            ids = self._redis(lambda: self.client.zrange(self._keys[11], 0, 199))
            if not ids:
                return count
            for rid in ids:
                reservation = self.reservation(rid)
                if reservation is None or reservation.state != "active":
                    self._drop_reclaim(rid)
                    continue
                self._reclaim(reservation, "expired")
                count += 1
            if len(ids) < 200:
                return count

    def _drop_reclaim(self, reservation_id: str) -> None:
        self._redis(lambda: self.client.zrem(self._keys[11], reservation_id))

    def reclaim_dead(self) -> int:
        """As :meth:`tokenward.ledger.steps.LedgerSteps.reclaim_dead`: finish the active
        reservations of processes of this machine that died (run when the ledger opens)."""
        ids = list(self._redis(lambda: self.client.zrange(self._keys[6], 0, -1)))
        ids += self._redis(lambda: self.client.zrange(self._keys[11], 0, -1))
        count = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]

            def read(chunk: list[str] = chunk) -> Any:
                pipe = self.client.pipeline(transaction=False)
                pipe.hmget(self._keys[3], chunk)
                pipe.hmget(self._keys[4], chunk)
                return pipe.execute()

            texts, states = self._redis(read)
            for text, state in zip(texts, states, strict=True):
                if text is None or state != "active":
                    continue
                reservation = reservation_of(text, state)
                if not is_dead(reservation.owner):
                    continue
                if reservation.forwarded:
                    self._reclaim(reservation, "owner_dead")
                else:
                    self.release(reservation.id)
                count += 1
        return count

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
        """Charge meters directly and record a usage event, once per ``request_id``.

        Raises:
            BudgetExceeded: with ``enforce``, a hard budget cannot take the charge.
            Stopped: the subject's session or task was ended by a ``stop`` budget.
            StoreUnavailable: Redis is unreachable and (with ``enforce``) a hard budget fails closed.
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
        payload = {"rid": None, "at": iso(at), "event": event.to_dict()}
        # A checked charge is spooled as "charge", held by this process (no drainer takes it while
        # its outcome is unknown): once Redis took it, it is a settlement like any other; after a
        # crash it is stored only if Redis has its request id.
        entry: int | None = None
        try:
            if enforce:
                marker = stop_of(self._view().stops, subject)
                if marker is not None:
                    raise stopped_error(marker)
            entry = self.spool.append("charge" if enforce else "settle", payload, held=enforce)
            outcome, detail = self._charge(None, event, at, enforce=enforce)
        except StoreUnavailable as exc:
            if enforce:
                try:
                    self._admit_unchecked("charge", subject, exc)
                except StoreUnavailable:
                    if entry is not None:
                        self.spool.done([entry])
                    raise
            if entry is None:
                self.spool.append("settle", payload)
            elif enforce:
                self.spool.set_kind(entry, "settle")
            self._failed("charge", "spooled", exc, subject)
            return event
        assert entry is not None
        if outcome in ("DENY", "DUP"):
            self.spool.done([entry])
            if outcome == "DENY":
                raise detail
            return detail  # type: ignore[no-any-return]
        if enforce:
            self.spool.set_kind(entry, "settle")
        self._applied[entry] = detail
        self._wake()
        return event

    def release(self, reservation_id: str) -> bool:
        """Drop an active hold without charging; returns whether anything was released (False
        while Redis is unreachable: the release is spooled and applied when it returns)."""
        if reservation_id.startswith("res_open_"):
            return False
        try:
            answer = self._retry_again(lambda: self._script("release", None, reservation_id))
        except StoreUnavailable as exc:
            self.spool.append("release", {"rid": reservation_id})
            self._failed("release", "spooled", exc, None)
            return False
        self._forget(reservation_id)
        return int(answer[1]) == 1

    def extend(self, reservation_id: str, ttl: timedelta) -> bool:
        """As the contract.

        Raises:
            StoreUnavailable: Redis cannot be reached (the hold keeps its expiry; try again).
        """
        if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
            raise ValidationError(f"ttl must be a positive timedelta, got {ttl!r}")
        if reservation_id.startswith("res_open_"):
            return False
        now = self.clock.now()
        until = now + ttl
        answer = self._retry_again(
            lambda: self._script("extend", None, reservation_id, micros(until), until.isoformat(), now=now)
        )
        return int(answer[1]) == 1

    def reap(self) -> int:
        """Expire reservations past their time to live, releasing their holds (charging those of
        forwarded ones), and end the shared sessions whose leases all expired; returns how many
        reservations expired."""
        total = 0
        while True:
            count = int(self._retry_again(lambda: self._script("reap", None, 1000))[1])
            total += count
            if count < 1000:
                break
        self._reclaim_expired()
        if self.store.reap_leases():
            self._bump("budgets")
        return total

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
        """Record a manual adjustment in the durable store and apply it to the Redis balances.

        Raises:
            ValidationError: as the contract.
            StoreUnavailable: Redis or the durable store is unreachable (nothing is recorded).
        """
        return adjust_both(
            self,
            target,
            amounts,
            reason=reason,
            actor=actor,
            subject_id=subject_id,
            at=at,
            adjustment_id=adjustment_id,
        )

    def close(self) -> None:
        """Stop the drainer (moving what it can to the durable store first, for up to 5 s) and
        close the connections; what is left in the spool is moved by the next process that opens
        it."""
        if self._closed:
            return
        self._closed = True
        self._drainer.stop()
        with contextlib.suppress(Exception):
            self.flush(5)
        self.spool.close()
        self.store.close()
        with contextlib.suppress(Exception):
            self.client.close()
