"""``postgresql://user@host:port/db[?schema=NAME]``: the whole ledger in PostgreSQL alone.

URL form: a libpq connection URI (``postgresql://`` or ``postgres://``; password, ``sslmode`` and
other libpq parameters as usual), plus parameters of tokenward's own, removed before connecting:

* ``schema``: where the ledger's tables live (default ``tokenward``; created when missing), so one
  database can hold several ledgers;
* ``timeout``: seconds a statement may take before the store counts as unavailable (default 10);
* ``connect_timeout``: seconds to wait for a connection (default 5; libpq's own parameter);
* ``spool``: the local spool file used while PostgreSQL is unreachable (default
  ``~/.local/state/tokenward/spool-<hash of the URL>.db``).

Every contract method is one transaction (``READ COMMITTED``), written once in
:mod:`tokenward.ledger.transactional` over the primitives here. The check-then-hold is made safe
across any number of processes and replicas by *locking the budget instances first*: before a write
transaction reads balance rows it takes a transaction-level advisory lock per ``(budget,
subject_id)`` it touches, in one fixed order (sorted by lock key), and holds them to its commit;
reservations being settled, released or reaped are locked row by row (``FOR UPDATE``, the reaper
skipping rows others hold), so a hold is never released twice. The rare deadlock a transaction
touching instances in two phases can still meet (a reap before an admission) is detected by
PostgreSQL and the whole step is retried. Money is ``NUMERIC``: exact. Migrations are applied on
open (:mod:`.schema`). Driver errors become :class:`~tokenward.errors.LedgerError`, and
:class:`~tokenward.errors.StoreUnavailable` when the server cannot be reached or is too slow.

While PostgreSQL is unreachable, admissions follow each budget's ``on_store_failure`` policy
(:mod:`tokenward.ledger.failover`), and settlements and releases go to the local spool
(:mod:`tokenward.ledger.spool`), replayed in order when the server returns (a request id is stored
once).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from tokenward.clock import Clock
from tokenward.core.budgets import Budget, Subject
from tokenward.core.decide import CallPlan, Decision, decide
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.errors import LedgerError, StoreUnavailable
from tokenward.ledger.base import DEFAULT_TTL, Reservation, new_id
from tokenward.ledger.failover import (
    StoreHealth,
    admit_unchecked,
    open_reservation,
    redact,
)
from tokenward.ledger.postgres.store import PgSettings, PostgresStore, Retry, lock_key, parse_pg_url
from tokenward.ledger.records import Denial, KeyRecord
from tokenward.ledger.spool import SpoolEntry
from tokenward.ledger.spooled import SpooledWrites

__all__ = ["PgSettings", "PostgresLedger", "lock_key", "parse_pg_url"]

log = logging.getLogger("tokenward.ledger")

_RETRIES = 8
T = TypeVar("T")


class PostgresLedger(SpooledWrites, PostgresStore):
    """The PostgreSQL ledger (one connection per thread).

    Args:
        url: ``postgresql://user@host:port/db[?schema=NAME&timeout=S&spool=PATH]``.
        clock: where time comes from.

    Raises:
        ConfigError: a malformed URL.
        StoreUnavailable: the server cannot be reached to migrate the schema.
        LedgerError: the schema is newer than this tokenward, or cannot be migrated.
    """

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        self.health = StoreHealth(redact(url), record=self._record_alert)
        self._init_spool(parse_pg_url(url).spool)
        PostgresStore.__init__(self, url, clock=clock)
        self._resume_spool()  # entries a previous process could not replay
        with contextlib.suppress(LedgerError):
            self.reclaim_dead()  # reservations of processes of this machine that died

    def _retrying(self, step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a write step, again from the start when PostgreSQL broke a deadlock by aborting it."""
        for attempt in range(_RETRIES):
            try:
                result = step(*args, **kwargs)
            except Retry:
                if (
                    attempt + 1 == _RETRIES or self._local.depth
                ):  # inside a caller's transaction: its to retry
                    raise
                time.sleep(0.005 * (attempt + 1))
                continue
            if self.health.down:
                self.health.recovered(self.clock.now())
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def put_budget(self, budget: Budget) -> None:
        self._retrying(super().put_budget, budget)

    def delete_budget(self, name: str) -> bool:
        return self._retrying(super().delete_budget, name)

    def reap(self) -> int:
        return self._retrying(super().reap)

    def adjust(self, *args: Any, **kwargs: Any) -> Any:
        return self._retrying(super().adjust, *args, **kwargs)

    def reclaim_dead(self) -> int:
        return self._retrying(super().reclaim_dead)

    def join_lease(self, *args: Any, **kwargs: Any) -> bool:
        return self._retrying(super().join_lease, *args, **kwargs)

    def renew_lease(self, key: str, holder: str, ttl: timedelta) -> bool:
        return self._retrying(super().renew_lease, key, holder, ttl)

    def leave_lease(self, key: str, holder: str) -> bool:
        return self._retrying(super().leave_lease, key, holder)

    def reap_leases(self) -> bool:
        return self._retrying(super().reap_leases)

    def record_estimate(self, model: str, estimated: int, actual: int) -> None:
        """As the contract; while PostgreSQL is unreachable the observation is spooled."""
        try:
            self._retrying(super().record_estimate, model, estimated, actual)
        except StoreUnavailable as exc:
            payload = {"model": model, "estimated": int(estimated), "actual": int(actual)}
            self._spool_write("estimate", payload, "estimate", exc, None)

    def record_denial(self, denial: Denial) -> Denial:
        """As the contract; while PostgreSQL is unreachable the denial is spooled (returned
        unnumbered) and recorded when the server returns, never dropped."""
        try:
            return self._retrying(super().record_denial, denial)
        except StoreUnavailable as exc:
            self._spool_write("denial", {"denial": denial.to_dict()}, "denial", exc, denial.subject)
            return denial

    def begin_idempotent(self, *args: Any, **kwargs: Any) -> Any:
        return self._retrying(super().begin_idempotent, *args, **kwargs)

    def finish_idempotent(self, *args: Any, **kwargs: Any) -> bool:
        return self._retrying(super().finish_idempotent, *args, **kwargs)

    def drop_idempotent(self, *args: Any, **kwargs: Any) -> bool:
        return self._retrying(super().drop_idempotent, *args, **kwargs)

    def put_key(self, record: Any) -> Any:
        return self._retrying(super().put_key, record)

    def revoke_key(self, key_id: str, at: datetime | None = None) -> bool:
        return self._retrying(super().revoke_key, key_id, at)

    def audit(self, *args: Any, **kwargs: Any) -> Any:
        return self._retrying(super().audit, *args, **kwargs)

    def key_by_hash(
        self, sha256_hex: str, *, at: datetime | None = None, include_inactive: bool = False
    ) -> KeyRecord | None:
        """As the contract; while PostgreSQL is unreachable, from the keys this process read last
        (a key cannot be changed meanwhile), so calls of budgets that fail open still get in.

        Raises:
            StoreUnavailable: PostgreSQL is unreachable and this process has not read the key
                (it may have been made since: unknown is not the same as absent).
        """
        try:
            return super().key_by_hash(sha256_hex, at=at, include_inactive=include_inactive)
        except StoreUnavailable:
            cached = self._key_cache
            if cached is None:
                raise
            record = cached[1].by_hash.get(sha256_hex.lower())
            if record is None:
                raise
        if include_inactive:
            return record
        return record if record.active(at or self.clock.now()) else None

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
        """As the contract; while PostgreSQL is unreachable, by the budgets' store-failure policy.

        Raises:
            BudgetExceeded: a hard budget cannot take the hold.
            StoreUnavailable: the server is unreachable and a hard budget fails closed.
        """
        try:
            return self._retrying(
                super().reserve,
                subject,
                amounts,
                ttl=ttl,
                idempotency_key=idempotency_key,
                metadata=metadata,
                forwarded=forwarded,
            )
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
        """As the contract; while PostgreSQL is unreachable, by the budgets' store-failure policy
        (an admission that fails open is not clamped: no balance can be read).

        Raises:
            BudgetExceeded / UnpricedCall: as the contract.
            StoreUnavailable: the server is unreachable and a hard budget fails closed.
        """
        try:
            return self._retrying(
                super().admit,
                subject,
                plan,
                ttl=ttl,
                idempotency_key=idempotency_key,
                metadata=metadata,
                forwarded=forwarded,
            )
        except StoreUnavailable as exc:
            self._admit_unchecked("admit", subject, exc)
            decision = decide(plan, [])
            return decision, open_reservation(
                subject, decision.amounts, self.clock.now(), ttl, idempotency_key, metadata
            )

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
        """As the contract; while PostgreSQL is unreachable the charge is admitted by the
        store-failure policy (when ``enforce``) and spooled.

        Raises:
            BudgetExceeded: with ``enforce``, a hard budget cannot take the charge.
            StoreUnavailable: the server is unreachable and a hard budget fails closed.
        """
        kwargs = {"request_id": request_id, "at": at, "enforce": enforce, "metadata": metadata}
        try:
            return self._retrying(super().charge_meter, subject, amounts, **kwargs)
        except StoreUnavailable as exc:
            if enforce:
                self._admit_unchecked("charge", subject, exc)
            event = UsageEvent(
                request_id=request_id or new_id("chg"),
                at=at or self.clock.now(),
                subject=subject,
                usage=Usage(),
                endpoint="meter",
                cost_usd=amounts.get("cost_usd"),
                charged=dict(amounts),
                metadata=dict(metadata or {}),
            )
            self._spool_write(
                "settle", {"reservation_id": None, "event": event.to_dict()}, "charge", exc, subject
            )
            return event

    def settle(self, reservation_id: str | None, event: UsageEvent) -> UsageEvent:
        """As the contract; while PostgreSQL is unreachable (or refuses it) the event is kept in
        the local spool and settled when the server takes it (so nothing that happened is lost)."""
        try:
            return self._retrying(super().settle, reservation_id, event)
        except LedgerError as exc:
            return self._spool_settle(reservation_id, event, exc)

    def release(self, reservation_id: str) -> bool:
        """As the contract; while PostgreSQL is unreachable the release is spooled and replayed
        (returns False: nothing is known to be released yet)."""
        if reservation_id.startswith("res_open_"):
            return False
        try:
            return self._retrying(super().release, reservation_id)
        except LedgerError as exc:
            self._spool_write("release", {"reservation_id": reservation_id}, "release", exc, None)
            return False

    def extend(self, reservation_id: str, ttl: timedelta) -> bool:
        """As the contract.

        Raises:
            StoreUnavailable: PostgreSQL cannot be reached (the hold keeps its expiry; try again).
        """
        if reservation_id.startswith("res_open_"):
            return False
        return bool(self._retrying(super().extend, reservation_id, ttl))

    def _admit_unchecked(self, operation: str, subject: Subject, exc: StoreUnavailable) -> None:
        """Refuse (raise) unless every hard budget applying to ``subject`` fails open."""
        admit_unchecked(
            self.health,
            operation,
            subject,
            exc,
            self._budget_cache[1] if self._budget_cache is not None else None,
            self._stop_cache[1] if self._stop_cache is not None else {},
            self.clock.now(),
        )

    def _replay_entry(self, entry: SpoolEntry) -> None:
        payload = entry.payload
        if entry.kind == "settle":
            event = UsageEvent.from_dict(payload["event"])
            self._retrying(PostgresStore.settle, self, payload["reservation_id"], event)
        elif entry.kind == "release":
            self._retrying(PostgresStore.release, self, payload["reservation_id"])
        elif entry.kind == "denial":
            self._retrying(PostgresStore.record_denial, self, Denial.from_dict(payload["denial"]))
        elif entry.kind == "estimate":
            self._retrying(
                PostgresStore.record_estimate, self, payload["model"], payload["estimated"], payload["actual"]
            )
        elif entry.kind == "audit":
            details = payload["details"]
            self._retrying(
                PostgresStore.audit, self, "tokenward", payload["action"], self.health.store, after=details
            )
        else:  # pragma: no cover - written by a newer tokenward
            raise LedgerError(f"unknown spool entry kind {entry.kind!r}")

    def close(self) -> None:
        """Stop the replayer (replaying what it can first) and close every connection (entries
        still in the spool are replayed by the next process that opens it)."""
        self._close_spool()
        PostgresStore.close(self)
