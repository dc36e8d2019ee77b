"""The SQLite ledger's primitives for records: threshold events, shadow denials, stop markers,
adjustments, template instances, estimator calibration, virtual keys and the audit log.

Mixed into :class:`~tokenward.ledger.sqlite.ledger.SQLiteLedger`; every method runs inside the caller's
transaction through ``self._execute``. Records are stored as JSON text next to the columns their
queries filter on.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
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
    parse_iso,
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

__all__ = ["SQLiteRecords", "ts"]


def ts(at: datetime) -> str:
    """A UTC instant as stored: fixed width, so text order is time order."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _limit(sql: str, params: list[Any], limit: int | None) -> tuple[str, list[Any]]:
    return (f"{sql} LIMIT ?", [*params, int(limit)]) if limit is not None else (sql, params)


def _denial(row: Any) -> Denial:
    return Denial.from_dict(
        {**json.loads(row["data"]), "id": row["id"], "count": row["count"], "last_at": row["last_at"]}
    )


class SQLiteRecords:
    """Record primitives over ``self._execute`` (see the module docstring)."""

    _key_cache: tuple[str, KeyIndex] | None = None

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:  # pragma: no cover
        raise NotImplementedError

    def _bump(self, name: str) -> None:
        self._execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = ?", (name,))

    # -- daily spend rollups (tokenward.ledger.rollups) -----------------------------------------------
    def _roll_up(self, events: Sequence[UsageEvent]) -> None:
        """Add events to the daily rollups: one statement per 3,000 rows (a settle: one)."""
        rows = merged_deltas(events)
        for first in range(0, len(rows), 3000):  # SQLite takes at most 32,766 parameters
            chunk = rows[first : first + 3000]
            self._execute(
                "INSERT INTO usage_rollup (day, project, dim, value, calls, input_tokens, output_tokens, "
                f"cost_pico, unpriced) VALUES {', '.join(['(?, ?, ?, ?, ?, ?, ?, ?, ?)'] * len(chunk))} "
                "ON CONFLICT (day, dim, project, value) DO UPDATE SET calls = calls + excluded.calls, "
                "input_tokens = input_tokens + excluded.input_tokens, "
                "output_tokens = output_tokens + excluded.output_tokens, "
                "cost_pico = cost_pico + excluded.cost_pico, unpriced = unpriced + excluded.unpriced",
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
                "SELECT data FROM usage_events WHERE seq >= ? AND seq < ? ORDER BY seq", (start, end)
            ).fetchall()
            self._roll_up([UsageEvent.from_dict(json.loads(row[0])) for row in rows])
            self._execute("UPDATE meta SET value = ? WHERE key = 'rollup_next'", (str(end),))
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
            sql, params = rollup_query(since, until, project, dim, values, by_day, "?", "cost_pico")
            rows = self._execute(sql, params).fetchall()
        return [RollupRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], unpico(r[7]), r[8]) for r in rows]

    def session_summaries(self, since: datetime, project: str | None = None) -> list[SessionSummary]:
        """Every session with a call at or after ``since`` (of one ``project`` when named),
        summed from the event table's columns (no event is decoded)."""
        sql = (
            "SELECT session, user, at, input_tokens, output_tokens, cost_usd, status FROM usage_events "
            "WHERE at >= ? AND session IS NOT NULL"
        )
        params: list[Any] = [ts(since)]
        if project is not None:
            sql += " AND project = ?"
            params.append(project)
        with self._transaction(write=False):  # type: ignore[attr-defined]
            rows = self._execute(sql + " ORDER BY at, seq", params).fetchall()
        return summarise_sessions(
            (r[0], r[1], datetime.fromisoformat(r[2].replace("Z", "+00:00")), r[3], r[4], r[5], r[6])
            for r in rows
        )

    def _keep_secret(self, name: str, candidate: str) -> str:
        key = f"secret:{name}"
        self._execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, candidate))
        return str(self._execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    # -- threshold events and shadow denials --------------------------------------------------
    def _insert_threshold(self, event: ThresholdEvent) -> bool:
        data = event.to_dict()
        del data["id"]
        cursor = self._execute(
            "INSERT INTO threshold_events (budget, subject_id, window_key, threshold, at, data) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                event.budget,
                event.subject_id,
                event.window_key,
                plain(event.threshold),
                ts(event.at),
                json.dumps(data),
            ),
        )
        return cursor.rowcount > 0

    def _query_thresholds(self, after: int | None, limit: int | None) -> list[ThresholdEvent]:
        sql, params = _limit(
            "SELECT id, data FROM threshold_events WHERE id > ? ORDER BY id", [after or 0], limit
        )
        return [
            ThresholdEvent.from_dict({**json.loads(r["data"]), "id": r["id"]})
            for r in self._execute(sql, params)
        ]

    def _insert_shadow(self, denials: Sequence[ShadowDenial]) -> None:
        for denial in denials:
            data = denial.to_dict()
            del data["id"]
            self._execute(
                "INSERT INTO shadow_denials (budget, at, data) VALUES (?, ?, ?)",
                (denial.budget, ts(denial.at), json.dumps(data)),
            )

    def _query_shadow(self, after: int | None, limit: int | None, budget: str | None) -> list[ShadowDenial]:
        where = "id > ?"
        params: list[Any] = [after or 0]
        if budget is not None:
            where, params = f"budget = ? AND {where}", [budget, *params]
        sql, params = _limit(f"SELECT id, data FROM shadow_denials WHERE {where} ORDER BY id", params, limit)
        return [
            ShadowDenial.from_dict({**json.loads(r["data"]), "id": r["id"]})
            for r in self._execute(sql, params)
        ]

    # -- denials ---------------------------------------------------------------------------------
    def _count_denials(self, subject_key: str, budget: str, minute: str) -> int:
        row = self._execute(
            "SELECT count(*) FROM denials WHERE subject_key = ? AND budget = ? AND minute = ? AND aggregated = 0",
            (subject_key, budget, minute),
        ).fetchone()
        return int(row[0])

    def _insert_denial(self, denial: Denial) -> Denial:
        data = denial.to_dict()
        del data["id"]
        row = self._execute(
            "INSERT INTO denials (at, minute, subject_key, budget, aggregated, count, last_at, "
            f"{', '.join(SCOPES)}, data) VALUES (?, ?, ?, ?, ?, ?, ?, {', '.join('?' * len(SCOPES))}, ?) "
            "ON CONFLICT (subject_key, budget, minute) WHERE aggregated = 1 "
            "DO UPDATE SET count = count + 1, last_at = max(last_at, excluded.last_at) "
            "RETURNING id, count, last_at",
            (
                ts(denial.at),
                denial.minute,
                denial.subject_key,
                denial.budget,
                int(denial.aggregated),
                denial.count,
                ts(denial.last_at or denial.at),
                *(denial.subject.value(s) for s in SCOPES),
                json.dumps(data),
            ),
        ).fetchone()
        return self._denial_by_id(int(row[0])) if denial.aggregated else replace(denial, id=int(row[0]))

    def _fold_denial(self, denial: Denial) -> Denial:
        return self._insert_denial(denial)

    def _denial_by_id(self, denial_id: int) -> Denial:
        row = self._execute(
            "SELECT id, count, last_at, data FROM denials WHERE id = ?", (denial_id,)
        ).fetchone()
        return _denial(row)

    def _query_denials(self, query: DenialQuery) -> list[Denial]:
        clauses: list[str] = ["1"]
        params: list[Any] = []
        if query.since is not None:
            clauses.append("at >= ?")
            params.append(ts(query.since))
        if query.until is not None:
            clauses.append("at < ?")
            params.append(ts(query.until))
        if query.budget is not None:
            clauses.append("budget = ?")
            params.append(query.budget)
        for scope, value in query.columns.items():
            clauses.append(f"{scope} = ?")
            params.append(value)
        sql = f"SELECT id, count, last_at, data FROM denials WHERE {' AND '.join(clauses)} ORDER BY id DESC"
        sliced = not filtered_after(query)
        if sliced:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if query.limit is None else query.limit, query.offset]
        return paged([_denial(r) for r in self._execute(sql, params)], query, sliced=sliced)

    # -- idempotency keys ------------------------------------------------------------------------
    def _get_idempotent(self, namespace: str, key: str) -> IdempotentAnswer | None:
        row = self._execute(
            "SELECT namespace, key, body_sha256, state, request_id, created_at, expires_at, response "
            "FROM idempotency WHERE namespace = ? AND key = ?",
            (namespace, key),
        ).fetchone()
        if row is None:
            return None
        return IdempotentAnswer(
            row["namespace"], row["key"], row["body_sha256"], row["state"], row["request_id"],
            parse_iso(row["created_at"]), parse_iso(row["expires_at"]),  # type: ignore[arg-type]
            None if row["response"] is None else json.loads(row["response"]),
        )  # fmt: skip

    def _put_idempotent(self, record: IdempotentAnswer) -> None:
        self._execute(
            "INSERT INTO idempotency (namespace, key, body_sha256, state, request_id, created_at, expires_at, "
            "response) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, key) DO UPDATE SET "
            "body_sha256 = excluded.body_sha256, state = excluded.state, request_id = excluded.request_id, "
            "created_at = excluded.created_at, expires_at = excluded.expires_at, response = excluded.response",
            (
                record.namespace, record.key, record.body_sha256, record.state, record.request_id,
                ts(record.created_at), ts(record.expires_at),
                None if record.response is None else json.dumps(record.response),
            ),
        )  # fmt: skip

    def _delete_idempotent(self, namespace: str, key: str) -> None:
        self._execute("DELETE FROM idempotency WHERE namespace = ? AND key = ?", (namespace, key))

    def _purge_idempotent(self, now: datetime) -> None:
        self._execute("DELETE FROM idempotency WHERE expires_at <= ?", (ts(now),))

    # -- stops, adjustments, instances ----------------------------------------------------------
    def _store_stops(self, markers: Sequence[StopMarker]) -> None:
        for marker in markers:
            self._execute(
                "INSERT INTO stops (scope, subject_id, at, data) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (marker.scope, marker.subject_id, ts(marker.at), json.dumps(marker.to_dict())),
            )
        self._bump("stops_rev")

    def _load_stops(self) -> dict[tuple[str, str], StopMarker]:
        rows = self._execute("SELECT data FROM stops").fetchall()
        markers = [StopMarker.from_dict(json.loads(r["data"])) for r in rows]
        return {(m.scope, m.subject_id): m for m in markers}

    def _insert_adjustment(self, adjustment: Adjustment) -> Adjustment:
        data = adjustment.to_dict()
        row = self._execute(
            "INSERT INTO adjustments (id, at, data) VALUES (?, ?, ?) RETURNING seq",
            (adjustment.id, ts(adjustment.at), json.dumps(data)),
        ).fetchone()
        return adjustment.with_seq(int(row[0]))

    def _get_adjustment(self, adjustment_id: str) -> Adjustment | None:
        row = self._execute("SELECT seq, data FROM adjustments WHERE id = ?", (adjustment_id,)).fetchone()
        return Adjustment.from_dict({**json.loads(row["data"]), "seq": row["seq"]}) if row else None

    def _query_adjustments(self, since: datetime | None, until: datetime | None) -> list[Adjustment]:
        clauses, params = ["1"], []
        if since is not None:
            clauses.append("at >= ?")
            params.append(ts(since))
        if until is not None:
            clauses.append("at < ?")
            params.append(ts(until))
        rows = self._execute(
            f"SELECT seq, data FROM adjustments WHERE {' AND '.join(clauses)} ORDER BY seq", params
        )
        return [Adjustment.from_dict({**json.loads(r["data"]), "seq": r["seq"]}) for r in rows]

    def _store_instances(self, instances: Sequence[BudgetInstance]) -> None:
        for instance in instances:
            self._execute(
                "INSERT INTO budget_instances (budget, subject_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (instance.budget, instance.subject_id, ts(instance.created_at)),
            )

    def _query_instances(self, budget: str) -> list[BudgetInstance]:
        rows = self._execute(
            "SELECT subject_id, created_at FROM budget_instances WHERE budget = ?", (budget,)
        ).fetchall()
        return [BudgetInstance(budget, r["subject_id"], parse_iso(r["created_at"])) for r in rows]  # type: ignore[arg-type]

    # -- estimator calibration ------------------------------------------------------------------
    def _estimate_stats(self, model: str) -> EstimateStats | None:
        row = self._execute("SELECT data FROM estimate_stats WHERE model = ?", (model,)).fetchone()
        return EstimateStats.from_dict(json.loads(row["data"])) if row else None

    def _store_estimate_stats(self, stats: EstimateStats) -> None:
        self._execute(
            "INSERT INTO estimate_stats (model, data) VALUES (?, ?) "
            "ON CONFLICT (model) DO UPDATE SET data = excluded.data",
            (stats.model, json.dumps(stats.to_dict())),
        )

    # -- keys and audit --------------------------------------------------------------------------
    def _key_index(self) -> KeyIndex:
        rev = self._execute("SELECT value FROM meta WHERE key = 'keys_rev'").fetchone()[0]
        cached = self._key_cache
        if cached is not None and cached[0] == rev:
            return cached[1]
        rows = self._execute("SELECT data FROM keys").fetchall()
        index = KeyIndex.of([KeyRecord.from_dict(json.loads(r["data"])) for r in rows])
        self._key_cache = (rev, index)
        return index

    def _store_key(self, record: KeyRecord) -> None:
        self._execute(
            "INSERT INTO keys (id, key_sha256, project, data) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
            "SET key_sha256 = excluded.key_sha256, project = excluded.project, data = excluded.data",
            (record.id, record.key_sha256, record.project, json.dumps(record.to_dict())),
        )
        self._bump("keys_rev")

    def _insert_audit(self, entry: AuditEntry) -> AuditEntry:
        data = entry.to_dict()
        del data["id"]
        row = self._execute(
            "INSERT INTO audit_log (at, project, data) VALUES (?, ?, ?) RETURNING id",
            (ts(entry.at), entry.project, json.dumps(data)),
        ).fetchone()
        return AuditEntry.from_dict({**data, "id": row[0]})

    def _query_audit(
        self, since: datetime | None, after: int | None, limit: int | None, project: str | None
    ) -> list[AuditEntry]:
        clauses = ["id > ?"]
        params: list[Any] = [after or 0]
        if since is not None:
            clauses.append("at >= ?")
            params.append(ts(since))
        if project is not None:
            clauses.append("project = ?")
            params.append(project)
        sql, params = _limit(
            f"SELECT id, data FROM audit_log WHERE {' AND '.join(clauses)} ORDER BY id", params, limit
        )
        return [
            AuditEntry.from_dict({**json.loads(r["data"]), "id": r["id"]}) for r in self._execute(sql, params)
        ]
