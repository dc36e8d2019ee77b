"""The PostgreSQL ledger's primitives: connections, transactions, locks, migrations, balance rows,
reservations and usage events (records are in :mod:`.records`).

:class:`PostgresStore` is everything :class:`~tokenward.ledger.transactional.TransactionalLedger`
needs from PostgreSQL; :class:`~tokenward.ledger.postgres.ledger.PostgresLedger` adds the retries and the
store-failure policy. One connection per thread (autocommit, explicit ``BEGIN``/``COMMIT``); a
write transaction locks the budget instances it reads with transaction-level advisory locks in
sorted key order; reservations being finished are locked row by row. Driver errors are translated
here, at one boundary: :class:`~tokenward.errors.StoreUnavailable` when the server cannot be
reached or is too slow (``timeout``), a retry for deadlocks and serialization failures, else
:class:`~tokenward.errors.LedgerError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tokenward.clock import Clock
from tokenward.core.budgets import SCOPES, Budget, Subject
from tokenward.core.events import UsageEvent
from tokenward.errors import ConfigError, LedgerError, MissingDependency, StoreUnavailable
from tokenward.ledger.base import Reservation
from tokenward.ledger.failover import redact
from tokenward.ledger.postgres.records import PostgresRecords, dumps
from tokenward.ledger.postgres.schema import MIGRATIONS, SCHEMA_VERSION
from tokenward.ledger.records import LeaseGroup, StopMarker
from tokenward.ledger.rows import Rows, Snapshot, Span, event_disputed, stored_budget
from tokenward.ledger.spool import default_spool_path
from tokenward.ledger.transactional import TransactionalLedger

try:
    import psycopg
    import psycopg.errors
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise MissingDependency("psycopg", "postgres") from exc

__all__ = ["PgSettings", "PostgresStore", "Retry", "lock_key", "parse_pg_url"]

log = logging.getLogger("tokenward.ledger")

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")  # lower case: PostgreSQL folds unquoted names
_OWN_PARAMS = {"schema", "timeout", "spool"}
_RETRIES = 8
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PgSettings:
    """A parsed ``postgresql://`` URL: the libpq URI, and tokenward's own parameters."""

    conninfo: str
    schema: str
    timeout: float
    connect_timeout: float
    spool: Path


def parse_pg_url(url: str) -> PgSettings:
    """Split a ``postgresql://`` ledger URL into the libpq URI and tokenward's parameters.

    Raises:
        ConfigError: not a PostgreSQL URL, or a bad schema name or time-out.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"not a postgresql:// URL: {redact(url)!r}")
    params = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in params if k in _OWN_PARAMS}
    rest = [(k, v) for k, v in params if k not in _OWN_PARAMS]
    schema = own.get("schema") or "tokenward"
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(
            f"{redact(url)!r}: schema {schema!r} must be a plain lower-case identifier (a-z, 0-9, _)"
        )
    connect_timeout = dict(rest).get("connect_timeout")
    if connect_timeout is None:
        rest.append(("connect_timeout", "5"))
    try:
        timeout = float(own.get("timeout") or 10)
        connect = float(connect_timeout or 5)
    except ValueError:
        raise ConfigError(f"{redact(url)!r}: timeout and connect_timeout are seconds") from None
    if timeout <= 0:
        raise ConfigError(f"{redact(url)!r}: timeout must be positive")
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    spool = Path(own["spool"]) if own.get("spool") else default_spool_path(url)
    return PgSettings(conninfo, schema, timeout, connect, spool)


def lock_key(*parts: str) -> int:
    """A 64-bit advisory lock key for ``parts`` (signed, as PostgreSQL takes it)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Retry(LedgerError):
    """A deadlock or serialization failure: the step is run again from the start."""


def _reservation_data(r: Reservation) -> str:
    return dumps(r.body())


def _reservation_from_row(row: Sequence[Any]) -> Reservation:
    return Reservation.from_body(row[3], id=row[0], idempotency_key=row[1], state=row[2])


class _Local(threading.local):
    conn: Any = None
    depth: int = 0
    write: bool = False
    locks: set[int]
    sequences: set[str]

    def __init__(self) -> None:
        self.locks = set()
        self.sequences = set()


class PostgresStore(PostgresRecords, TransactionalLedger):
    """The PostgreSQL primitives of the ledger contract (see the module docstring)."""

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        TransactionalLedger.__init__(self, clock)
        self.url = url
        self.settings = parse_pg_url(url)
        self.schema = self.settings.schema
        self._local = _Local()
        self._connections: list[Any] = []
        self._conn_lock = threading.Lock()
        self._budget_cache: tuple[int, list[Budget]] | None = None
        self._stop_cache: tuple[int, dict[tuple[str, str], StopMarker]] | None = None
        self._key_cache = None
        self._migrate()

    def _connect(self) -> Any:
        options = (
            f"-c search_path={self.schema} -c TimeZone=UTC "
            f"-c statement_timeout={int(self.settings.timeout * 1000)} "
            f"-c lock_timeout={int(self.settings.timeout * 1000)}"
        )
        try:
            conn = psycopg.connect(
                self.settings.conninfo, autocommit=True, options=options, application_name="tokenward"
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL ledger {redact(self.url)}: cannot connect: {exc}") from exc
        with self._conn_lock:
            self._connections.append(conn)
        return conn

    def _conn(self) -> Any:
        conn = self._local.conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                self._drop(conn)
            conn = self._local.conn = self._connect()
        return conn

    def _drop(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()
        with self._conn_lock, contextlib.suppress(ValueError):
            self._connections.remove(conn)
        if self._local.conn is conn:
            self._local.conn = None

    def _translate(self, exc: Exception, conn: Any) -> LedgerError:
        where = f"PostgreSQL ledger {redact(self.url)}"
        if isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure):
            return Retry(f"{where}: {exc}")
        if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
            return StoreUnavailable(f"{where}: too slow: {exc}")
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) or conn.broken:
            self._drop(conn)
            return StoreUnavailable(f"{where}: unreachable: {exc}")
        return LedgerError(f"{where}: {exc}")

    def _execute(self, sql: str, params: Sequence[Any] | None = ()) -> Any:
        """Run one statement on this thread's connection. Outside a transaction, a read or a
        ``BEGIN`` that finds its connection dead (the server restarted while it was idle) runs
        once more on a new connection: nothing was done on the dead one."""
        conn = self._conn()
        try:
            return conn.execute(sql, params or None)
        except psycopg.Error as exc:
            error = self._translate(exc, conn)
            if not (isinstance(error, StoreUnavailable) and conn.broken and self._local.depth == 0):
                raise error from exc
            if not sql.lstrip().upper().startswith(("SELECT", "BEGIN")):
                raise error from exc
        conn = self._conn()  # a fresh connection; a second failure is the store's
        try:
            return conn.execute(sql, params or None)
        except psycopg.Error as exc:
            raise self._translate(exc, conn) from exc

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[None]:
        local = self._local
        if local.depth:
            if write and not local.write:
                raise LedgerError("a write inside a read transaction")  # pragma: no cover - a bug
            local.depth += 1
            try:
                yield
            finally:
                local.depth -= 1
            return
        begin = "BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        self._execute(begin)  # on a connection that died while idle, once more on a new one
        conn = self._local.conn
        local.depth, local.write = 1, write
        local.locks, local.sequences = set(), set()
        try:
            yield
        except BaseException:
            local.depth = 0
            if not conn.closed and not conn.broken:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise
        local.depth = 0
        try:
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise self._translate(exc, conn) from exc

    def _single_read(self) -> AbstractContextManager[None]:
        """One autocommit statement is atomic on its own: no BEGIN/COMMIT round trips."""
        return contextlib.nullcontext() if not self._local.depth else self._transaction(write=False)

    def _lock_instances(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Take the advisory locks of these budget instances, in one fixed order (by key)."""
        local = self._local
        keys = sorted({lock_key(self.schema, budget, sid) for budget, sid in pairs} - local.locks)
        if keys:
            self._execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", (keys,))
            local.locks.update(keys)

    def _sequence_lock(self, name: str) -> None:
        local = self._local
        if name not in local.sequences:
            self._execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(self.schema, "seq", name),))
            local.sequences.add(name)

    def _store_lock(self, name: str, *, shared: bool) -> None:
        """A transaction-level lock on ``name`` (a Redis ledger storing its events here takes it
        shared while draining, exclusive while rebuilding its counters)."""
        fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        self._execute(f"SELECT {fn}(%s)", (lock_key(self.schema, "lock", name),))

    def _migrate(self) -> None:
        with self._transaction():
            self._execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(self.schema, "migrate"),))
            self._execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            self._execute(
                "CREATE TABLE IF NOT EXISTS tokenward_migrations "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = self._execute("SELECT COALESCE(MAX(version), 0) FROM tokenward_migrations").fetchone()[0]
            if done > SCHEMA_VERSION:
                raise LedgerError(
                    f"{redact(self.url)} (schema {self.schema}) has schema version {done}, newer than this "
                    f"tokenward ({SCHEMA_VERSION}); upgrade tokenward"
                )
            for number in range(done, SCHEMA_VERSION):
                self._execute(MIGRATIONS[number], None)
                self._execute("INSERT INTO tokenward_migrations (version) VALUES (%s)", (number + 1,))

    def _snapshot(self) -> Snapshot:
        budgets_rev, stops_rev = self._execute(
            "SELECT (SELECT value FROM meta WHERE key = 'budgets_rev'), "
            "(SELECT value FROM meta WHERE key = 'stops_rev')"
        ).fetchone()
        budgets = self._budget_cache
        if budgets is None or budgets[0] != budgets_rev:
            rows = self._execute("SELECT spec FROM budgets").fetchall()
            budgets = (budgets_rev, [stored_budget(r[0]) for r in rows])
            self._budget_cache = budgets
        stops = self._stop_cache
        if stops is None or stops[0] != stops_rev:
            stops = (stops_rev, self._load_stops())
            self._stop_cache = stops
        return Snapshot(budgets[1], stops[1])

    def _store_budget(self, budget: Budget) -> None:
        self._execute(
            "INSERT INTO budgets (name, spec) VALUES (%s, %s::jsonb) "
            "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
            (budget.name, dumps(budget.to_dict())),
        )
        self._bump("budgets_rev")

    def _remove_budget(self, name: str) -> bool:
        removed = self._execute("DELETE FROM budgets WHERE name = %s", (name,)).rowcount > 0
        self._bump("budgets_rev")
        return bool(removed)

    def _read_rows(self, spans: Sequence[Span]) -> Rows:
        unique = list(dict.fromkeys(spans))
        if not unique:
            return {}
        if self._local.write:
            self._lock_instances([(budget, sid) for budget, sid, _, _ in unique])
        rows = self._execute(
            "SELECT b.budget, b.subject_id, b.window_key, b.spent, b.held FROM balances b "
            "JOIN unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS q(budget, subject_id, first, last) "
            "ON b.budget = q.budget AND b.subject_id = q.subject_id AND b.window_key BETWEEN q.first AND q.last",
            ([s[0] for s in unique], [s[1] for s in unique], [s[2] for s in unique], [s[3] for s in unique]),
        ).fetchall()
        return {(budget, sid, key): (spent, held) for budget, sid, key, spent, held in rows}

    def _write_rows(self, rows: Rows) -> None:
        if not rows:
            return
        items = sorted(rows.items())
        self._execute(
            "INSERT INTO balances (budget, subject_id, window_key, spent, held) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::numeric[], %s::numeric[]) "
            "ON CONFLICT (budget, subject_id, window_key) DO UPDATE SET spent = excluded.spent, held = excluded.held",
            (
                [k[0] for k, _ in items],
                [k[1] for k, _ in items],
                [k[2] for k, _ in items],
                [v[0] for _, v in items],
                [v[1] for _, v in items],
            ),
        )

    def _get_reservation(self, reservation_id: str) -> Reservation | None:
        lock = " FOR UPDATE" if self._local.write else ""
        row = self._execute(
            f"SELECT id, idempotency_key, state, data FROM reservations WHERE id = %s{lock}",
            (reservation_id,),
        ).fetchone()
        return _reservation_from_row(row) if row else None

    def _find_idempotent(self, key: str) -> Reservation | None:
        row = self._execute(
            "SELECT id, idempotency_key, state, data FROM reservations WHERE idempotency_key = %s", (key,)
        ).fetchone()
        return _reservation_from_row(row) if row else None

    def _put_reservation(self, reservation: Reservation) -> bool:
        # one statement: a key taken by a kept reservation (the conflict) or by a settled call
        # (its usage event; the reservation was deleted) stores nothing
        cursor = self._execute(
            "INSERT INTO reservations (id, idempotency_key, state, created_at, expires_at, data, owner) "
            "SELECT %s::text, %s::text, %s::text, %s::timestamptz, %s::timestamptz, %s::jsonb, %s::text "
            "WHERE NOT EXISTS (SELECT 1 FROM usage_events WHERE request_id = %s::text) "
            "ON CONFLICT (idempotency_key) DO NOTHING",
            (
                reservation.id,
                reservation.idempotency_key,
                reservation.state,
                reservation.created_at,
                reservation.expires_at,
                _reservation_data(reservation),
                reservation.owner,
                reservation.idempotency_key,
            ),
        )
        return bool(cursor.rowcount > 0)

    def _set_state(self, reservation_id: str, state: str) -> None:
        self._execute("UPDATE reservations SET state = %s WHERE id = %s", (state, reservation_id))

    def _drop_reservation(self, reservation_id: str) -> None:
        self._execute("DELETE FROM reservations WHERE id = %s", (reservation_id,))

    def _set_expiry(self, reservation_id: str, expires_at: datetime) -> None:
        self._execute(
            "UPDATE reservations SET expires_at = %s, data = jsonb_set(data, '{expires_at}', to_jsonb(%s::text))"
            " WHERE id = %s",
            (expires_at, expires_at.isoformat(), reservation_id),
        )

    def _expire(self, now: datetime) -> list[Reservation]:
        expired: list[Reservation] = []
        while True:
            rows = self._execute(
                "UPDATE reservations SET state = 'expired' WHERE id IN ("
                " SELECT id FROM reservations WHERE state = 'active' AND expires_at <= %s"
                " ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED"
                ") RETURNING id, idempotency_key, state, data",
                (now,),
            ).fetchall()
            expired += [replace(_reservation_from_row(row), state="active") for row in rows]
            if len(rows) < 1000:
                return expired

    def _active_owners(self) -> list[str]:
        rows = self._execute(
            "SELECT DISTINCT owner FROM reservations WHERE state = 'active' AND owner IS NOT NULL"
        ).fetchall()
        return sorted(r[0] for r in rows)

    def _owned_active(self, owners: Sequence[str]) -> list[Reservation]:
        rows = self._execute(
            "SELECT id, idempotency_key, state, data FROM reservations "
            "WHERE state = 'active' AND owner = ANY(%s) ORDER BY id FOR UPDATE SKIP LOCKED",
            (list(owners),),
        ).fetchall()
        return [_reservation_from_row(row) for row in rows]

    # -- leases ------------------------------------------------------------------------------------
    def _lease_group(self, key: str) -> LeaseGroup | None:
        if self._local.write:  # one member at a time changes a group
            self._execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(self.schema, "lease", key),))
        row = self._execute("SELECT data FROM lease_groups WHERE key = %s", (key,)).fetchone()
        return LeaseGroup.from_dict(row[0]) if row else None

    def _store_lease_group(self, group: LeaseGroup) -> None:
        self._execute(
            "INSERT INTO lease_groups (key, data) VALUES (%s, %s::jsonb) "
            "ON CONFLICT (key) DO UPDATE SET data = excluded.data",
            (group.key, dumps(group.to_dict())),
        )

    def _drop_lease_group(self, key: str) -> None:
        self._execute("DELETE FROM lease_groups WHERE key = %s", (key,))

    def _lease_holders(self, key: str) -> dict[str, datetime]:
        if self._local.write:
            self._execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(self.schema, "lease", key),))
        rows = self._execute("SELECT holder, expires_at FROM leases WHERE key = %s", (key,)).fetchall()
        return {holder: expires for holder, expires in rows}

    def _put_lease(self, key: str, holder: str, expires_at: datetime) -> None:
        self._execute(
            "INSERT INTO leases (key, holder, expires_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (key, holder) DO UPDATE SET expires_at = excluded.expires_at",
            (key, holder, expires_at),
        )

    def _drop_leases(self, key: str, holders: Sequence[str]) -> None:
        self._execute("DELETE FROM leases WHERE key = %s AND holder = ANY(%s)", (key, list(holders)))

    def _expired_lease_keys(self, now: datetime) -> list[str]:
        rows = self._execute("SELECT DISTINCT key FROM leases WHERE expires_at <= %s", (now,)).fetchall()
        return sorted(r[0] for r in rows)

    # -- usage events ------------------------------------------------------------------------------
    def _get_event(self, request_id: str) -> UsageEvent | None:
        row = self._execute("SELECT data FROM usage_events WHERE request_id = %s", (request_id,)).fetchone()
        return UsageEvent.from_dict(row[0]) if row else None

    def _query_disputed(self, since: datetime | None, limit: int | None) -> list[UsageEvent]:
        clauses = ["(disputed OR (disputed IS NULL AND data->'metadata'->>'disputed' = 'true'))"]
        params: list[Any] = []
        if since is not None:
            clauses.append("at >= %s")
            params.append(since)
        sql = f"SELECT data FROM usage_events WHERE {' AND '.join(clauses)} ORDER BY at, seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [UsageEvent.from_dict(r[0]) for r in self._execute(sql, params).fetchall()]

    def _insert_event(self, event: UsageEvent) -> bool:
        subject = event.subject
        cursor = self._execute(
            'INSERT INTO usage_events (request_id, at, org, project, team, "user", "key", agent, session, task, '
            "model, status, input_tokens, output_tokens, cost_usd, data, disputed, tool_definition_tokens, "
            "clamped_by) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s) "
            "ON CONFLICT (request_id) DO NOTHING",
            (
                event.request_id,
                event.at,
                *(subject.value(scope) for scope in SCOPES),
                event.model,
                event.status,
                event.usage.input_tokens,
                event.usage.output_tokens,
                event.cost_usd,
                event.to_json(),
                event_disputed(event),
                event.tool_definition_tokens,
                event.metadata.get("clamped_by"),
            ),
        )
        if cursor.rowcount > 0:
            self._roll_up([event])
            return True
        return False

    def _find_event(self, key: str, value: str) -> UsageEvent | None:
        # key is one of EVENT_LOOKUPS (checked by the caller), so the path is a literal: an index
        # on the same expression serves it
        row = self._execute(
            f"SELECT data FROM usage_events WHERE data->'metadata'->>'{key}' = %s ORDER BY seq DESC LIMIT 1",
            (value,),
        ).fetchone()
        return UsageEvent.from_dict(row[0]) if row else None

    def _query_events(
        self, subject: Subject | None, since: datetime | None, until: datetime | None, limit: int | None
    ) -> list[UsageEvent]:
        clauses: list[str] = []
        params: list[Any] = []
        for scope in SCOPES:
            value = subject.value(scope) if subject else None
            if value is not None:
                clauses.append(f'"{scope}" = %s')
                params.append(value)
        if subject is not None and subject.tags:
            clauses.append("data->'subject'->'tags' @> %s::jsonb")
            params.append(dumps(dict(subject.tags)))
        if since is not None:
            clauses.append("at >= %s")
            params.append(since)
        if until is not None:
            clauses.append("at < %s")
            params.append(until)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT data FROM usage_events {where} ORDER BY at, seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [UsageEvent.from_dict(r[0]) for r in self._execute(sql, params).fetchall()]

    def close(self) -> None:
        """Close every connection this ledger opened."""
        with self._conn_lock:
            for conn in self._connections:
                with contextlib.suppress(Exception):
                    conn.close()
            self._connections.clear()
        self._local = _Local()
