"""The PostgreSQL ledger's primitives for records: threshold events, shadow denials, stop markers,
adjustments, template instances, estimator calibration, virtual keys and the audit log.

Mixed into :class:`~tokenward.ledger.postgres.ledger.PostgresLedger`; every method runs inside the
caller's transaction through ``self._execute``. Numbered records (threshold events, shadow
denials, adjustments, audit entries) are inserted under a transaction-level advisory lock of their
table, so their ids become visible in increasing order (a consumer resuming with ``after=id``
never skips one that committed late).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokenward.core.budgets import SCOPES
from tokenward.core.calibration import EstimateStats
from tokenward.core.events import UsageEvent
from tokenward.ledger.admin import KeyIndex
from tokenward.ledger.denials import DenialQuery, filtered_after, paged
from tokenward.ledger.records import (
    Adjustment,
    AuditEntry,
    BudgetInstance,
    Denial,
    IdempotentAnswer,
    KeyRecord,
    ShadowDenial,
    StopMarker,
    ThresholdEvent,
)
from tokenward.ledger.rollups import (
    RollupRow,
    SessionSummary,
    merged_deltas,
    rollup_query,
    summarise_sessions,
    unpico,
)
from tokenward.numbers import plain

__all__ = ["PostgresRecords", "dumps"]


def dumps(data: Any) -> str:
    """JSON text for a ``jsonb`` parameter."""
    return json.dumps(data, separators=(",", ":"))


def _limit(sql: str, params: list[Any], limit: int | None) -> tuple[str, list[Any]]:
    return (f"{sql} LIMIT %s", [*params, int(limit)]) if limit is not None else (sql, params)


_COLUMNS = tuple(f'"{s}"' for s in SCOPES)


def _denial(row: Any) -> Denial:
    return Denial.from_dict({**row[3], "id": row[0], "count": row[1], "last_at": row[2].isoformat()})


class PostgresRecords:
    """Record primitives over ``self._execute`` (see the module docstring)."""

    _key_cache: tuple[int, KeyIndex] | None = None

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _sequence_lock(self, name: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def _bump(self, name: str) -> None:
        self._execute("UPDATE meta SET value = value + 1 WHERE key = %s", (name,))

    # -- daily spend rollups (tokenward.ledger.rollups) -----------------------------------------------
    def _roll_up(self, events: Sequence[UsageEvent]) -> None:
        """Add events to the daily rollups: one statement per 3,000 rows (a settle: one), run
        through ``_execute`` so a store failure is translated (and retried) like any other."""
        rows = [(*d[:7], unpico(d[7]), d[8]) for d in merged_deltas(events)]
        for first in range(0, len(rows), 3000):
            chunk = rows[first : first + 3000]
            marks = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            self._execute(
                "INSERT INTO usage_rollup (day, project, dim, value, calls, input_tokens, output_tokens, "
                f"cost_usd, unpriced) VALUES {marks} "
                "ON CONFLICT (day, dim, project, value) DO UPDATE SET "
                "calls = usage_rollup.calls + excluded.calls, "
                "input_tokens = usage_rollup.input_tokens + excluded.input_tokens, "
                "output_tokens = usage_rollup.output_tokens + excluded.output_tokens, "
                "cost_usd = usage_rollup.cost_usd + excluded.cost_usd, "
                "unpriced = usage_rollup.unpriced + excluded.unpriced",
                [value for row in chunk for value in row],
            )

    def _rollup_progress(self) -> tuple[int, int]:
        found = dict(
            self._execute(
                "SELECT key, value FROM meta WHERE key IN ('rollup_next', 'rollup_below')"
            ).fetchall()
        )
        return int(found.get("rollup_next", 1)), int(found.get("rollup_below", 1))

    def backfill_rollup(self, batch: int = 2000) -> int:
        """Roll up the next ``batch`` events written before the rollups existed (one short write
        transaction); returns how many, 0 once every event is rolled up."""
        with self._transaction():  # type: ignore[attr-defined]
            start, below = self._rollup_progress()
            if start >= below:
                return 0
            end = min(start + batch, below)
            rows = self._execute(
                "SELECT data FROM usage_events WHERE seq >= %s AND seq < %s ORDER BY seq", (start, end)
            ).fetchall()
            self._roll_up([UsageEvent.from_dict(row[0]) for row in rows])
            self._execute("UPDATE meta SET value = %s WHERE key = 'rollup_next'", (end,))
            return max(len(rows), 1)

    def spend_rollup(
        self,
        since: str,
        until: str | None = None,
        project: str | None = None,
        *,
        dim: str | None = None,
        values: Sequence[str] | None = None,
        by_day: bool = True,
    ) -> list[RollupRow] | None:
        """Daily spend rows (see :meth:`tokenward.ledger.base.Ledger.spend_rollup`)."""
        with self._transaction(write=False):  # type: ignore[attr-defined]
            start, below = self._rollup_progress()
            if start < below:
                return None
            sql, params = rollup_query(since, until, project, dim, values, by_day, "%s", "cost_usd")
            rows = self._execute(sql, params).fetchall()
        return [
            RollupRow(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6]), Decimal(r[7]), int(r[8]))
            for r in rows
        ]

    def session_summaries(self, since: datetime, project: str | None = None) -> list[SessionSummary]:
        """Every session with a call at or after ``since`` (of one ``project`` when named),
        summed from the event table's columns (no event is decoded)."""
        sql = (
            'SELECT session, "user", at, input_tokens, output_tokens, cost_usd, status FROM usage_events '
            "WHERE at >= %s AND session IS NOT NULL"
        )
        params: list[Any] = [since]
        if project is not None:
            sql += " AND project = %s"
            params.append(project)
        with self._transaction(write=False):  # type: ignore[attr-defined]
            rows = self._execute(sql + " ORDER BY at, seq", params).fetchall()
        return summarise_sessions((r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows)

    def _keep_secret(self, name: str, candidate: str) -> str:
        self._execute(
            "INSERT INTO secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            (name, candidate),
        )
        return str(self._execute("SELECT value FROM secrets WHERE name = %s", (name,)).fetchone()[0])

    # -- threshold events and shadow denials --------------------------------------------------
    def _insert_threshold(self, event: ThresholdEvent) -> bool:
        data = event.to_dict()
        del data["id"]
        self._sequence_lock("threshold_events")
        cursor = self._execute(
            "INSERT INTO threshold_events (budget, subject_id, window_key, threshold, at, data) "
            "VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING",
            (event.budget, event.subject_id, event.window_key, plain(event.threshold), event.at, dumps(data)),
        )
        return bool(cursor.rowcount > 0)

    def _query_thresholds(self, after: int | None, limit: int | None) -> list[ThresholdEvent]:
        sql, params = _limit(
            "SELECT id, data FROM threshold_events WHERE id > %s ORDER BY id", [after or 0], limit
        )
        return [ThresholdEvent.from_dict({**r[1], "id": r[0]}) for r in self._execute(sql, params).fetchall()]

    def _insert_shadow(self, denials: Sequence[ShadowDenial]) -> None:
        if not denials:
            return
        self._sequence_lock("shadow_denials")
        for denial in denials:
            data = denial.to_dict()
            del data["id"]
            self._execute(
                "INSERT INTO shadow_denials (budget, at, data) VALUES (%s, %s, %s::jsonb)",
                (denial.budget, denial.at, dumps(data)),
            )

    def _query_shadow(self, after: int | None, limit: int | None, budget: str | None) -> list[ShadowDenial]:
        where = "id > %s"
        params: list[Any] = [after or 0]
        if budget is not None:
            where, params = f"budget = %s AND {where}", [budget, *params]
        sql, params = _limit(f"SELECT id, data FROM shadow_denials WHERE {where} ORDER BY id", params, limit)
        return [ShadowDenial.from_dict({**r[1], "id": r[0]}) for r in self._execute(sql, params).fetchall()]

    # -- denials ---------------------------------------------------------------------------------
    def _count_denials(self, subject_key: str, budget: str, minute: str) -> int:
        self._sequence_lock("denials")  # the count and the insert it decides are one step
        row = self._execute(
            "SELECT count(*) FROM denials WHERE subject_key = %s AND budget = %s AND minute = %s "
            "AND NOT aggregated",
            (subject_key, budget, minute),
        ).fetchone()
        return int(row[0])

    def _insert_denial(self, denial: Denial) -> Denial:
        data = denial.to_dict()
        del data["id"]
        self._sequence_lock("denials")
        row = self._execute(
            "INSERT INTO denials (at, minute, subject_key, budget, aggregated, count, last_at, "
            f"{', '.join(_COLUMNS)}, data) VALUES (%s, %s, %s, %s, %s, %s, %s, "
            f"{', '.join(['%s'] * len(SCOPES))}, %s::jsonb) "
            "ON CONFLICT (subject_key, budget, minute) WHERE aggregated "
            "DO UPDATE SET count = denials.count + 1, last_at = greatest(denials.last_at, excluded.last_at) "
            "RETURNING id",
            (
                denial.at,
                denial.minute,
                denial.subject_key,
                denial.budget,
                denial.aggregated,
                denial.count,
                denial.last_at or denial.at,
                *(denial.subject.value(s) for s in SCOPES),
                dumps(data),
            ),
        ).fetchone()
        return self._denial_by_id(int(row[0])) if denial.aggregated else replace(denial, id=int(row[0]))

    def _fold_denial(self, denial: Denial) -> Denial:
        return self._insert_denial(denial)

    def _denial_by_id(self, denial_id: int) -> Denial:
        row = self._execute(
            "SELECT id, count, last_at, data FROM denials WHERE id = %s", (denial_id,)
        ).fetchone()
        return _denial(row)

    def _query_denials(self, query: DenialQuery) -> list[Denial]:
        clauses: list[str] = ["TRUE"]
        params: list[Any] = []
        if query.since is not None:
            clauses.append("at >= %s")
            params.append(query.since)
        if query.until is not None:
            clauses.append("at < %s")
            params.append(query.until)
        if query.budget is not None:
            clauses.append("budget = %s")
            params.append(query.budget)
        for scope, value in query.columns.items():
            clauses.append(f'"{scope}" = %s')
            params.append(value)
        sql = f"SELECT id, count, last_at, data FROM denials WHERE {' AND '.join(clauses)} ORDER BY id DESC"
        sliced = not filtered_after(query)
        if sliced:
            if query.limit is not None:
                sql += " LIMIT %s"
                params.append(query.limit)
            sql += " OFFSET %s"
            params.append(query.offset)
        return paged([_denial(r) for r in self._execute(sql, params).fetchall()], query, sliced=sliced)

    # -- idempotency keys ------------------------------------------------------------------------
    def _get_idempotent(self, namespace: str, key: str) -> IdempotentAnswer | None:
        self._sequence_lock(f"idempotency:{namespace}:{key}")  # two first requests: one claims it
        row = self._execute(
            "SELECT namespace, key, body_sha256, state, request_id, created_at, expires_at, response "
            "FROM idempotency WHERE namespace = %s AND key = %s FOR UPDATE",
            (namespace, key),
        ).fetchone()
        if row is None:
            return None
        namespace, key, digest, state, request_id, created, expires, response = row
        return IdempotentAnswer(
            namespace,
            key,
            digest,
            state,
            request_id,
            created.astimezone(UTC),
            expires.astimezone(UTC),
            response,
        )

    def _put_idempotent(self, record: IdempotentAnswer) -> None:
        self._execute(
            "INSERT INTO idempotency (namespace, key, body_sha256, state, request_id, created_at, expires_at, "
            "response) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (namespace, key) DO UPDATE SET "
            "body_sha256 = excluded.body_sha256, state = excluded.state, request_id = excluded.request_id, "
            "created_at = excluded.created_at, expires_at = excluded.expires_at, response = excluded.response",
            (
                record.namespace, record.key, record.body_sha256, record.state, record.request_id,
                record.created_at, record.expires_at,
                None if record.response is None else dumps(record.response),
            ),
        )  # fmt: skip

    def _delete_idempotent(self, namespace: str, key: str) -> None:
        self._execute("DELETE FROM idempotency WHERE namespace = %s AND key = %s", (namespace, key))

    def _purge_idempotent(self, now: datetime) -> None:
        self._execute("DELETE FROM idempotency WHERE expires_at <= %s", (now,))

    # -- stops, adjustments, instances ----------------------------------------------------------
    def _store_stops(self, markers: Sequence[StopMarker]) -> None:
        for marker in sorted(markers, key=lambda m: (m.scope, m.subject_id)):  # one fixed order
            self._execute(
                "INSERT INTO stops (scope, subject_id, at, data) VALUES (%s, %s, %s, %s::jsonb) "
                "ON CONFLICT DO NOTHING",
                (marker.scope, marker.subject_id, marker.at, dumps(marker.to_dict())),
            )
        self._bump("stops_rev")

    def _load_stops(self) -> dict[tuple[str, str], StopMarker]:
        rows = self._execute("SELECT data FROM stops").fetchall()
        markers = [StopMarker.from_dict(r[0]) for r in rows]
        return {(m.scope, m.subject_id): m for m in markers}

    def _insert_adjustment(self, adjustment: Adjustment) -> Adjustment:
        self._sequence_lock("adjustments")
        row = self._execute(
            "INSERT INTO adjustments (id, at, data) VALUES (%s, %s, %s::jsonb) RETURNING seq",
            (adjustment.id, adjustment.at, dumps(adjustment.to_dict())),
        ).fetchone()
        return adjustment.with_seq(int(row[0]))

    def _get_adjustment(self, adjustment_id: str) -> Adjustment | None:
        row = self._execute("SELECT seq, data FROM adjustments WHERE id = %s", (adjustment_id,)).fetchone()
        return Adjustment.from_dict({**row[1], "seq": row[0]}) if row else None

    def _query_adjustments(self, since: datetime | None, until: datetime | None) -> list[Adjustment]:
        clauses, params = ["TRUE"], []
        if since is not None:
            clauses.append("at >= %s")
            params.append(since)
        if until is not None:
            clauses.append("at < %s")
            params.append(until)
        rows = self._execute(
            f"SELECT seq, data FROM adjustments WHERE {' AND '.join(clauses)} ORDER BY seq", params
        ).fetchall()
        return [Adjustment.from_dict({**r[1], "seq": r[0]}) for r in rows]

    def _store_instances(self, instances: Sequence[BudgetInstance]) -> None:
        if not instances:
            return
        ordered = sorted(instances, key=lambda i: (i.budget, i.subject_id))
        self._execute(
            "INSERT INTO budget_instances (budget, subject_id, created_at) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) ON CONFLICT DO NOTHING",
            (
                [i.budget for i in ordered],
                [i.subject_id for i in ordered],
                [i.created_at for i in ordered],
            ),
        )

    def _query_instances(self, budget: str) -> list[BudgetInstance]:
        rows = self._execute(
            "SELECT subject_id, created_at FROM budget_instances WHERE budget = %s", (budget,)
        ).fetchall()
        return [BudgetInstance(budget, r[0], r[1]) for r in rows]

    # -- estimator calibration ------------------------------------------------------------------
    def _estimate_stats(self, model: str) -> EstimateStats | None:
        row = self._execute("SELECT data FROM estimate_stats WHERE model = %s", (model,)).fetchone()
        return EstimateStats.from_dict(row[0]) if row else None

    def _store_estimate_stats(self, stats: EstimateStats) -> None:
        self._execute(
            "INSERT INTO estimate_stats (model, data) VALUES (%s, %s::jsonb) "
            "ON CONFLICT (model) DO UPDATE SET data = excluded.data",
            (stats.model, dumps(stats.to_dict())),
        )

    # -- keys and audit --------------------------------------------------------------------------
    def _key_index(self) -> KeyIndex:
        rev = self._execute("SELECT value FROM meta WHERE key = 'keys_rev'").fetchone()[0]
        cached = self._key_cache
        if cached is not None and cached[0] == rev:
            return cached[1]
        rows = self._execute("SELECT data FROM keys").fetchall()
        index = KeyIndex.of([KeyRecord.from_dict(r[0]) for r in rows])
        self._key_cache = (rev, index)
        return index

    def _store_key(self, record: KeyRecord) -> None:
        self._execute(
            "INSERT INTO keys (id, key_sha256, project, data) VALUES (%s, %s, %s, %s::jsonb) "
            "ON CONFLICT (id) DO UPDATE SET key_sha256 = excluded.key_sha256, project = excluded.project, "
            "data = excluded.data",
            (record.id, record.key_sha256, record.project, dumps(record.to_dict())),
        )
        self._bump("keys_rev")

    def _insert_audit(self, entry: AuditEntry) -> AuditEntry:
        data = entry.to_dict()
        del data["id"]
        self._sequence_lock("audit_log")
        row = self._execute(
            "INSERT INTO audit_log (at, project, data) VALUES (%s, %s, %s::jsonb) RETURNING id",
            (entry.at, entry.project, dumps(data)),
        ).fetchone()
        return AuditEntry.from_dict({**data, "id": row[0]})

    def _query_audit(
        self, since: datetime | None, after: int | None, limit: int | None, project: str | None
    ) -> list[AuditEntry]:
        clauses = ["id > %s"]
        params: list[Any] = [after or 0]
        if since is not None:
            clauses.append("at >= %s")
            params.append(since)
        if project is not None:
            clauses.append("project = %s")
            params.append(project)
        sql, params = _limit(
            f"SELECT id, data FROM audit_log WHERE {' AND '.join(clauses)} ORDER BY id", params, limit
        )
        return [AuditEntry.from_dict({**r[1], "id": r[0]}) for r in self._execute(sql, params).fetchall()]
