"""The ledger contract: budgets, balances, reservations, the append-only usage events, and the
records around them.

Every backend implements :class:`Ledger` (sync); :class:`AsyncLedger` is the async twin with the
same names (:class:`ThreadedAsyncLedger` provides it for the embedded backends). The contract
(tested once for every backend in ``tests/ledger``):

* ``reserve`` holds an amount on *every* applicable budget at once, or on none: it raises
  :class:`~tokenward.errors.BudgetExceeded` naming the first hard budget that cannot take it.
  The check and the hold are one atomic step of the store itself (across threads and processes).
  Expired reservations are reaped first, so a crashed caller never leaks a hold. ``admit`` is
  ``reserve`` with the decision (clamp, deny) made on the same balances.
* ``settle`` replaces a reservation's hold with the real charge and appends the usage event;
  it is idempotent by ``request_id`` (a second settle of the same request changes nothing). A
  charge above the hold is recorded as overage, never dropped. Settling a reservation that
  expired meanwhile still charges (the call happened). ``charge_meter`` charges meters directly
  (custom ones included) and records a usage event the same way.
* ``release`` drops a hold without charging (the call never reached a provider).
* a settled or released reservation leaves nothing behind: it is deleted in the transaction that
  settles or releases it (``reservation(id)`` is then None); its usage event is the record of the
  call. An idempotency key whose reservation is gone answers from the usage event recorded under
  it (:meth:`Reservation.answered`), else holds afresh.
* a reservation made ``forwarded`` (for a call sent to a provider) is never released for free:
  never settled, it is *reclaimed* when it expires or when its owner process is found dead at
  the next open on the same machine (``reclaim_dead``), charged its hold with a ``reclaimed``
  event; a late real settlement replaces that charge through a correction event
  (:mod:`tokenward.ledger.reclaim`), never charging the call twice.
* a settlement a persistent store cannot take now is kept in a local spool and replayed until it
  lands (:mod:`tokenward.ledger.spooled`); an entry the store refuses is quarantined, never
  blocking later ones.
* the members of a shared session hold leases (``join_lease``, ``renew_lease``,
  ``leave_lease``: :mod:`tokenward.ledger.leases`); its budgets go when the last lease does.
* usage events, threshold events, shadow denials, stop markers, adjustments and audit entries
  are never updated or deleted.
* every call a budget refuses is recorded as a :class:`~tokenward.ledger.records.Denial`
  (``record_denial``, by the guard); past a rate per subject, budget and minute the rest are
  folded into one counted record, never dropped (:mod:`tokenward.ledger.denials`).
* a charge that brings a budget instance's spend in a window to one of its thresholds records a
  :class:`~tokenward.ledger.records.ThresholdEvent` in the same transaction, once per budget,
  instance, window and threshold.
* a hard budget whose action is ``stop`` ends the session or task it refuses (or whose spend it
  brings to its limit) for good: a :class:`~tokenward.ledger.records.StopMarker` is stored and
  every later admission of that session or task raises :class:`~tokenward.errors.Stopped`.
* ``adjust`` records a manual credit, refund or correction as an entry of its own.
* virtual keys and the audit log (:mod:`tokenward.ledger.admin`) are stored with the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from tokenward.clock import Clock
from tokenward.core.budgets import Budget, Subject
from tokenward.core.calibration import EstimateStats
from tokenward.core.decide import Balance, CallPlan, Decision
from tokenward.core.events import UsageEvent
from tokenward.ledger.records import (
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
from tokenward.ledger.rollups import RollupRow, SessionSummary

__all__ = [
    "DEFAULT_TTL",
    "AsyncLedger",
    "Hold",
    "Ledger",
    "Reservation",
    "ThreadedAsyncLedger",
    "new_id",
]

DEFAULT_TTL = timedelta(minutes=10)
"""How long a reservation lives unless settled or released."""


def new_id(prefix: str = "res") -> str:
    """A fresh unique id (``res_<hex>``)."""
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Hold:
    """One budget instance's share of a reservation."""

    budget: str
    subject_id: str
    window_key: str
    meter: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Reservation:
    """Amounts held before a call.

    Attributes:
        id: the reservation id.
        subject: whom the call is for.
        amounts: what was held, by meter (tokens, USD, calls).
        holds: the budget instances held on.
        created_at / expires_at: UTC instants.
        idempotency_key: the caller's key; reserving twice with it returns the first reservation
            while it is kept (active, expired or reclaimed), then the answer of the usage event
            recorded under the key (:meth:`answered`), if any.
        state: ``active``, ``expired`` or ``reclaimed`` (a forwarded reservation that was never
            settled, charged its hold: see :attr:`forwarded`), as stored; a settled or released
            reservation is deleted, so ``settled`` is only seen on :meth:`answered`.
        forwarded: the call was (about to be) forwarded to a provider when it was reserved: if it
            is never settled (its process died, an SDK stream was dropped unread), it is charged
            its hold when it expires or when its owner is found dead, never released for free.
        owner: the process that reserved it (:func:`tokenward.ledger.owner.this_process`), so a
            restart on the same machine reclaims the reservations of a process that died.
    """

    id: str
    subject: Subject
    amounts: Mapping[str, Decimal]
    holds: tuple[Hold, ...]
    created_at: datetime
    expires_at: datetime
    idempotency_key: str | None = None
    state: str = "active"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    forwarded: bool = False
    owner: str | None = None

    @property
    def request_id(self) -> str:
        """The request id its usage event is (or will be) recorded under: its idempotency key,
        else its own id."""
        return self.idempotency_key or self.id

    def body(self) -> dict[str, Any]:
        """What a store keeps of it beside its id, key and state (JSON-ready; amounts as strings)."""
        out: dict[str, Any] = {
            "subject": self.subject.to_dict(),
            "amounts": {k: str(v) for k, v in self.amounts.items()},
            "holds": [[h.budget, h.subject_id, h.window_key, h.meter, str(h.amount)] for h in self.holds],
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "metadata": dict(self.metadata),
        }
        if self.forwarded:
            out["forwarded"] = True
        if self.owner is not None:
            out["owner"] = self.owner
        return out

    @classmethod
    def answered(cls, event: UsageEvent) -> Reservation:
        """What an idempotency key answers once the call recorded under it (``event``, its request
        id being the key) was settled and its reservation deleted: state ``settled``, holding
        nothing, its amounts what the call held (``event.held``), its id the settled
        reservation's (else the request id). Settling it again returns the stored event, as a
        second settle of any request does; releasing or extending it does nothing."""
        return cls(
            id=event.reservation_id or event.request_id,
            subject=event.subject,
            amounts=dict(event.held),
            holds=(),
            created_at=event.at,
            expires_at=event.at,
            idempotency_key=event.request_id,
            state="settled",
        )

    @classmethod
    def from_body(
        cls, body: Mapping[str, Any], *, id: str, idempotency_key: str | None, state: str
    ) -> Reservation:
        """The reservation a store kept as :meth:`body` with its id, key and state."""
        return cls(
            id=id,
            subject=Subject.from_dict(body["subject"]),
            amounts={k: Decimal(v) for k, v in body["amounts"].items()},
            holds=tuple(Hold(b, s, w, m, Decimal(a)) for b, s, w, m, a in body["holds"]),
            created_at=datetime.fromisoformat(body["created_at"]),
            expires_at=datetime.fromisoformat(body["expires_at"]),
            idempotency_key=idempotency_key,
            state=state,
            metadata=body.get("metadata") or {},
            forwarded=bool(body.get("forwarded", False)),
            owner=body.get("owner"),
        )


@runtime_checkable
class Ledger(Protocol):
    """The synchronous ledger contract (see the module docstring)."""

    url: str
    clock: Clock

    def put_budget(self, budget: Budget) -> None:
        """Create or replace a budget (by name); its balances are kept."""
        ...

    def get_budget(self, name: str) -> Budget | None:
        """The budget called ``name``, or None."""
        ...

    def delete_budget(self, name: str) -> bool:
        """Delete a budget; returns whether it existed. Its events stay."""
        ...

    def budgets(self) -> list[Budget]:
        """Every budget, by name."""
        ...

    def balances(self, subject: Subject, at: datetime | None = None) -> list[Balance]:
        """Every budget instance that applies to ``subject`` in the window containing ``at``."""
        ...

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
        """Hold ``amounts`` on every applicable budget, all or nothing (``forwarded``: marked, in
        the same write, as made for a call sent to a provider: see the module docstring).

        Reserving again with an ``idempotency_key`` holds nothing more: it returns the key's
        reservation while it is kept (active, expired, reclaimed); once the call was settled (its
        reservation deleted), :meth:`Reservation.answered` of the usage event recorded under the
        key (state ``settled``, holding nothing), so a retry of a settled call never takes a
        second hold. A key whose reservation was released, with no event under it, holds afresh
        (the call never reached a provider). The same holds for :meth:`admit`.

        Raises:
            BudgetExceeded: a hard budget cannot take the hold (nothing is held).
            LedgerError: the store failed.
        """
        ...

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
        """Decide on a call (clamp its output bound, or deny) and reserve its hold, atomically
        (``forwarded``: as :meth:`reserve`).

        Raises:
            BudgetExceeded: a hard budget cannot pay even for the plan's minimum output.
            UnpricedCall: a hard cost budget applies and the model has no price.
        """
        ...

    def settle(self, reservation_id: str | None, event: UsageEvent) -> UsageEvent:
        """Replace the hold with ``event.charged`` and append ``event``, once per request id.

        With ``reservation_id=None`` the charge goes straight to the budgets that apply to the
        event's subject at ``event.at`` (a call that had no reservation).

        Returns:
            The stored event (the earlier one, when this request id was already settled).
        """
        ...

    def release(self, reservation_id: str) -> bool:
        """Drop an active hold without charging; returns whether anything was released."""
        ...

    def extend(self, reservation_id: str, ttl: timedelta) -> bool:
        """Keep an active reservation alive for ``ttl`` more (its expiry becomes now + ``ttl``,
        never earlier than it was): for calls that outlast their time to live, such as long
        streams. Returns False when the reservation is unknown, finished, or already past its
        expiry (it may have been reaped: the call is still charged when it settles).

        Raises:
            ValidationError: ``ttl`` not positive.
            StoreUnavailable: the store (Redis, PostgreSQL) cannot be reached; nothing changed.
        """
        ...

    def reap(self) -> int:
        """Expire reservations past their time to live (charging forwarded ones their hold) and
        end shared sessions whose leases all expired; returns how many reservations expired."""
        ...

    def reclaim_dead(self) -> int:
        """Finish the active reservations of dead processes of this machine (forwarded ones
        charged their hold, the others released); returns how many."""
        ...

    def disputed_events(self, *, since: datetime | None = None, limit: int | None = None) -> list[UsageEvent]:
        """Usage events marked disputed, in time order."""
        ...

    def join_lease(
        self,
        key: str,
        holder: str,
        *,
        ttl: timedelta,
        budgets: Sequence[Budget] = (),
        keep: bool = False,
    ) -> bool:
        """Take a lease on a shared session (making its budgets when first declared); returns
        whether budgets were made.

        Raises:
            ConfigError: the session is open with other budgets (both named).
        """
        ...

    def renew_lease(self, key: str, holder: str, ttl: timedelta) -> bool:
        """Keep a lease alive; False when it is gone."""
        ...

    def leave_lease(self, key: str, holder: str) -> bool:
        """Give a lease back; the last one out deletes the session's budgets (returns whether)."""
        ...

    def reap_leases(self) -> bool:
        """End the sessions whose leases all expired (returns whether budgets were deleted)."""
        ...

    def lease_group(self, key: str) -> LeaseGroup | None:
        """A shared session as it is now, or None when it is not open."""
        ...

    def reservation(self, reservation_id: str) -> Reservation | None:
        """A reservation by id while it is kept (active, expired, reclaimed); None once it was
        settled or released (it is deleted then), or when there never was one."""
        ...

    def events(
        self,
        *,
        subject: Subject | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[UsageEvent]:
        """Usage events in time order, filtered by the scopes set in ``subject`` and by time."""
        ...

    def event_by_metadata(self, key: str, value: str) -> UsageEvent | None:
        """The most recently recorded usage event whose ``metadata[key]`` is ``value`` (``key``
        one of :data:`~tokenward.ledger.records.EVENT_LOOKUPS`: ``response_id``,
        ``conversation``, ``cached_content``), or None.

        Raises:
            ValidationError: another key, or an empty value.
        """
        ...

    def record_estimate(self, model: str, estimated: int, actual: int) -> None:
        """Add one prompt-estimate observation for ``model`` (tokens estimated before the call,
        tokens the provider reported after it) to the model's calibration aggregates."""
        ...

    def estimate_stats(self, model: str) -> EstimateStats | None:
        """The calibration aggregates of ``model``, or None when nothing was observed."""
        ...

    def budget_balances(self, name: str, at: datetime | None = None) -> list[Balance]:
        """Every instance of budget ``name`` in the window containing ``at`` (one for a fixed
        budget, one per instance made so far for a template)."""
        ...

    def instances(self, budget: str) -> list[BudgetInstance]:
        """The instances template ``budget`` has made so far, oldest first."""
        ...

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
        """Charge meters directly (custom ones such as ``gpu_seconds`` included) and record a
        usage event, once per ``request_id``.

        Raises:
            BudgetExceeded: with ``enforce``, a hard budget cannot take the charge.
        """
        ...

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
        """Record a manual credit, refund or correction (signed amounts) against every budget
        applying to a subject, or one budget instance; never an edit of past events."""
        ...

    def adjustments(
        self,
        *,
        subject: Subject | None = None,
        budget: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[Adjustment]:
        """Adjustments in the order they were made, filtered by subject, budget and time."""
        ...

    def threshold_events(self, after: int | None = None, limit: int | None = 100) -> list[ThresholdEvent]:
        """Threshold events with an id above ``after``, oldest first, at most ``limit``."""
        ...

    def shadow_denials(
        self, after: int | None = None, limit: int | None = 100, *, budget: str | None = None
    ) -> list[ShadowDenial]:
        """Would-be denials of shadow budgets with an id above ``after``, oldest first."""
        ...

    def record_denial(self, denial: Denial) -> Denial:
        """Record a refused call (past the flood rate, folded into its subject, budget and
        minute's aggregated record); returns the record as stored (unnumbered when it waits in
        a spool)."""
        ...

    def denials(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        subject: Subject | None = None,
        budget: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[Denial]:
        """Recorded denials, newest first, filtered by time (``since`` inclusive, ``until``
        exclusive), by the scopes and tags set in ``subject`` and by budget name; ``offset``
        skipped, then at most ``limit`` (None: all).

        Raises:
            ValidationError: a bad argument.
        """
        ...

    def begin_idempotent(
        self, namespace: str, key: str, body_sha256: str, request_id: str
    ) -> IdempotentAnswer | None:
        """Claim an ``Idempotency-Key`` (None: claimed, now running for ``request_id``), or the
        live record holding it (running, or done with its stored answer)."""
        ...

    def finish_idempotent(
        self, namespace: str, key: str, request_id: str, response: Mapping[str, Any], ttl: timedelta
    ) -> bool:
        """Store the answer of the request holding an ``Idempotency-Key`` for ``ttl``."""
        ...

    def drop_idempotent(self, namespace: str, key: str, request_id: str) -> bool:
        """Free an ``Idempotency-Key`` whose request ended without a stored answer."""
        ...

    def stops(self) -> list[StopMarker]:
        """Every session and task ended by a ``stop`` budget."""
        ...

    def stop_of(self, subject: Subject) -> StopMarker | None:
        """The marker that ended ``subject``'s session or task, or None."""
        ...

    def spend_rollup(
        self, since: str, until: str | None = None, project: str | None = None
    ) -> list[RollupRow] | None:
        """Daily spend rows (:mod:`tokenward.ledger.rollups`) from UTC day ``since`` (``YYYY-MM-DD``)
        to before ``until``, of one ``project`` when named; None while the events written before
        the rollups existed are still being rolled up (:meth:`backfill_rollup`)."""
        ...

    def session_summaries(self, since: datetime, project: str | None = None) -> list[SessionSummary]:
        """Every session with a call at or after ``since`` (of one ``project`` when named): calls,
        tokens, cost, first and last call, last status (:class:`~tokenward.ledger.rollups.SessionSummary`)."""
        ...

    def backfill_rollup(self, batch: int = 2000) -> int:
        """Roll up one batch of the events written before the rollups existed; 0 when done."""
        ...

    def secret(self, name: str) -> str:
        """A random secret shared by every process on this ledger, made on first use."""
        ...

    def put_key(self, record: KeyRecord) -> KeyRecord:
        """Create or replace a virtual key by id (its digest must be unique)."""
        ...

    def get_key(self, key_id: str) -> KeyRecord | None:
        """A virtual key by id, in any state."""
        ...

    def key_by_hash(
        self, sha256_hex: str, *, at: datetime | None = None, include_inactive: bool = False
    ) -> KeyRecord | None:
        """The active key with this SHA-256 (hex), or None."""
        ...

    def keys(self, project: str | None = None) -> list[KeyRecord]:
        """Every key, optionally of one project, oldest first."""
        ...

    def revoke_key(self, key_id: str, at: datetime | None = None) -> bool:
        """Revoke a key; returns whether it changed."""
        ...

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
        """Append an audit entry (who, what, to what, before and after), stamped now."""
        ...

    def audit_log(
        self,
        *,
        since: datetime | None = None,
        after: int | None = None,
        limit: int | None = None,
        project: str | None = None,
    ) -> list[AuditEntry]:
        """Audit entries oldest first, filtered by time, id and project."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class AsyncLedger(Protocol):
    """The async twin of :class:`Ledger`: the same methods, awaited."""

    url: str
    clock: Clock

    async def put_budget(self, budget: Budget) -> None: ...
    async def get_budget(self, name: str) -> Budget | None: ...
    async def delete_budget(self, name: str) -> bool: ...
    async def budgets(self) -> list[Budget]: ...
    async def balances(self, subject: Subject, at: datetime | None = None) -> list[Balance]: ...
    async def reserve(
        self,
        subject: Subject,
        amounts: Mapping[str, Decimal],
        *,
        ttl: timedelta = DEFAULT_TTL,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        forwarded: bool = False,
    ) -> Reservation: ...
    async def admit(
        self,
        subject: Subject,
        plan: CallPlan,
        *,
        ttl: timedelta = DEFAULT_TTL,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        forwarded: bool = False,
    ) -> tuple[Decision, Reservation]: ...
    async def settle(self, reservation_id: str | None, event: UsageEvent) -> UsageEvent: ...
    async def reclaim_dead(self) -> int: ...
    async def disputed_events(
        self, *, since: datetime | None = None, limit: int | None = None
    ) -> list[UsageEvent]: ...
    async def release(self, reservation_id: str) -> bool: ...
    async def extend(self, reservation_id: str, ttl: timedelta) -> bool: ...
    async def reap(self) -> int: ...
    async def reservation(self, reservation_id: str) -> Reservation | None: ...
    async def events(
        self,
        *,
        subject: Subject | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> Sequence[UsageEvent]: ...
    async def event_by_metadata(self, key: str, value: str) -> UsageEvent | None: ...
    async def record_estimate(self, model: str, estimated: int, actual: int) -> None: ...
    async def estimate_stats(self, model: str) -> EstimateStats | None: ...
    async def budget_balances(self, name: str, at: datetime | None = None) -> list[Balance]: ...
    async def instances(self, budget: str) -> list[BudgetInstance]: ...
    async def charge_meter(
        self,
        subject: Subject,
        amounts: Mapping[str, Decimal],
        *,
        request_id: str | None = None,
        at: datetime | None = None,
        enforce: bool = True,
        metadata: Mapping[str, Any] | None = None,
    ) -> UsageEvent: ...
    async def adjust(
        self,
        target: Subject | str,
        amounts: Mapping[str, Decimal],
        *,
        reason: str,
        actor: str,
        subject_id: str | None = None,
        at: datetime | None = None,
        adjustment_id: str | None = None,
    ) -> Adjustment: ...
    async def adjustments(
        self,
        *,
        subject: Subject | None = None,
        budget: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[Adjustment]: ...
    async def threshold_events(
        self, after: int | None = None, limit: int | None = 100
    ) -> list[ThresholdEvent]: ...
    async def shadow_denials(
        self, after: int | None = None, limit: int | None = 100, *, budget: str | None = None
    ) -> list[ShadowDenial]: ...
    async def record_denial(self, denial: Denial) -> Denial: ...
    async def denials(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        subject: Subject | None = None,
        budget: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[Denial]: ...
    async def begin_idempotent(
        self, namespace: str, key: str, body_sha256: str, request_id: str
    ) -> IdempotentAnswer | None: ...
    async def finish_idempotent(
        self, namespace: str, key: str, request_id: str, response: Mapping[str, Any], ttl: timedelta
    ) -> bool: ...
    async def drop_idempotent(self, namespace: str, key: str, request_id: str) -> bool: ...
    async def stops(self) -> list[StopMarker]: ...
    async def stop_of(self, subject: Subject) -> StopMarker | None: ...
    async def spend_rollup(
        self,
        since: str,
        until: str | None = None,
        project: str | None = None,
        *,
        dim: str | None = None,
        values: Sequence[str] | None = None,
        by_day: bool = True,
    ) -> list[RollupRow] | None: ...
    async def backfill_rollup(self, batch: int = 2000) -> int: ...
    async def session_summaries(
        self, since: datetime, project: str | None = None
    ) -> list[SessionSummary]: ...
    async def secret(self, name: str) -> str: ...
    async def put_key(self, record: KeyRecord) -> KeyRecord: ...
    async def get_key(self, key_id: str) -> KeyRecord | None: ...
    async def key_by_hash(
        self, sha256_hex: str, *, at: datetime | None = None, include_inactive: bool = False
    ) -> KeyRecord | None: ...
    async def keys(self, project: str | None = None) -> list[KeyRecord]: ...
    async def revoke_key(self, key_id: str, at: datetime | None = None) -> bool: ...
    async def audit(
        self,
        actor: str,
        action: str,
        target: str,
        before: Any = None,
        after: Any = None,
        *,
        project: str | None = None,
    ) -> AuditEntry: ...
    async def audit_log(
        self,
        *,
        since: datetime | None = None,
        after: int | None = None,
        limit: int | None = None,
        project: str | None = None,
    ) -> list[AuditEntry]: ...
    async def close(self) -> None: ...


class ThreadedAsyncLedger:
    """An :class:`AsyncLedger` over a sync one, running each call in a thread of its own.

    Used for the embedded backends (memory, SQLite), whose calls are short and blocking. The
    calls run in order in ``threads`` threads of this ledger (default 1), not in the event loop's
    shared pool: SQLite takes one writer at a time, and six pool threads queueing on its write
    lock made the gateway's p99 (issue 17); one thread per process hands the lock over only
    between processes. The hand-off is a plain queue and one ``call_soon_threadsafe`` back to the
    caller's loop per call (an executor's futures and their chaining took a tenth of the
    gateway's event-loop thread).
    """

    def __init__(self, ledger: Ledger, threads: int = 1) -> None:
        self.sync = ledger
        self.url = ledger.url
        self.clock = ledger.clock
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._size = threads
        self._threads: list[threading.Thread] = []  # started on the first call
        self._start = threading.Lock()
        self._methods: dict[str, Any] = {}

    def _started(self) -> None:
        with self._start:
            while len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._work, name=f"tokenward-ledger_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, future, context, method, args, kwargs = item
            if future.cancelled():
                continue  # its caller is gone before it started: nothing to run
            try:
                result, error = context.run(method, *args, **kwargs), None
            except BaseException as exc:  # handed to the caller, as an executor would
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed
                loop.call_soon_threadsafe(_resolve, future, result, error)

    def __getattr__(self, name: str) -> Any:
        methods = self.__dict__.get("_methods")
        if methods is None:  # not built yet (or being torn down)
            raise AttributeError(name)
        known = methods.get(name)
        if known is not None:
            return known
        method = getattr(self.sync, name)
        if not callable(method):
            return method
        work = self._queue

        async def call(*args: Any, **kwargs: Any) -> Any:
            if not self._threads:
                self._started()
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            work.put((loop, future, contextvars.copy_context(), method, args, kwargs))
            return await future

        call.__name__ = name
        call.__doc__ = method.__doc__
        methods[name] = call
        return call

    async def close(self) -> None:
        """Close the sync ledger (in the ledger's thread), then stop the threads."""
        try:
            await self.__getattr__("close")()
        finally:
            for _ in self._threads:
                self._queue.put(None)


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled while the ledger ran it
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
