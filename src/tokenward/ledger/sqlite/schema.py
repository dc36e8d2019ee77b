"""The SQLite ledger's schema: versioned migrations, applied in order on open.

``PRAGMA user_version`` holds how many of :data:`_MIGRATIONS` a file has had; opening applies the
rest in one write transaction. A migration is only ever appended, never edited. Append-only
tables (usage events, threshold events, shadow denials, stop markers, adjustments, the audit log,
denials but for their aggregated rows' counts) refuse UPDATE and DELETE with triggers.
"""

from __future__ import annotations

import sqlite3

__all__ = ["SCHEMA_VERSION", "split_statements"]


def _append_only(table: str, what: str) -> str:
    return f"""
    CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
        BEGIN SELECT RAISE(ABORT, '{what} are append-only'); END;
    CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        BEGIN SELECT RAISE(ABORT, '{what} are append-only'); END;
    """


_MIGRATIONS: list[str] = [
    # 1: budgets, balances, reservations, append-only usage events
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('budgets_rev', '0');
    CREATE TABLE budgets (name TEXT PRIMARY KEY, spec TEXT NOT NULL);
    CREATE TABLE balances (
        budget TEXT NOT NULL, subject_id TEXT NOT NULL, window_key TEXT NOT NULL,
        spent TEXT NOT NULL DEFAULT '0', held TEXT NOT NULL DEFAULT '0',
        PRIMARY KEY (budget, subject_id, window_key)
    ) WITHOUT ROWID;
    CREATE TABLE reservations (
        id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, state TEXT NOT NULL,
        created_at TEXT NOT NULL, expires_at TEXT NOT NULL, data TEXT NOT NULL
    );
    CREATE INDEX reservations_active ON reservations (expires_at) WHERE state = 'active';
    CREATE TABLE usage_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL UNIQUE,
        at TEXT NOT NULL,
        org TEXT, project TEXT, team TEXT, user TEXT, key TEXT, agent TEXT, session TEXT, task TEXT,
        model TEXT, status TEXT NOT NULL,
        input_tokens INTEGER, output_tokens INTEGER, cost_usd TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX usage_events_at ON usage_events (at);
    CREATE INDEX usage_events_session ON usage_events (session, at);
    CREATE INDEX usage_events_user ON usage_events (user, at);
    CREATE TRIGGER usage_events_no_update BEFORE UPDATE ON usage_events
        BEGIN SELECT RAISE(ABORT, 'usage events are append-only'); END;
    CREATE TRIGGER usage_events_no_delete BEFORE DELETE ON usage_events
        BEGIN SELECT RAISE(ABORT, 'usage events are append-only'); END;
    """,
    # 2: per-model calibration aggregates of the prompt estimator
    """
    CREATE TABLE estimate_stats (model TEXT PRIMARY KEY, data TEXT NOT NULL);
    """,
    # 3: threshold events, shadow denials, stop markers, adjustments, template instances
    """
    INSERT INTO meta (key, value) VALUES ('stops_rev', '0');
    CREATE TABLE threshold_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        budget TEXT NOT NULL, subject_id TEXT NOT NULL, window_key TEXT NOT NULL,
        threshold TEXT NOT NULL, at TEXT NOT NULL, data TEXT NOT NULL,
        UNIQUE (budget, subject_id, window_key, threshold)
    );
    CREATE TABLE shadow_denials (
        id INTEGER PRIMARY KEY AUTOINCREMENT, budget TEXT NOT NULL, at TEXT NOT NULL, data TEXT NOT NULL
    );
    CREATE INDEX shadow_denials_budget ON shadow_denials (budget, id);
    CREATE TABLE stops (
        scope TEXT NOT NULL, subject_id TEXT NOT NULL, at TEXT NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (scope, subject_id)
    ) WITHOUT ROWID;
    CREATE TABLE adjustments (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, at TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX adjustments_at ON adjustments (at);
    CREATE TABLE budget_instances (
        budget TEXT NOT NULL, subject_id TEXT NOT NULL, created_at TEXT NOT NULL,
        PRIMARY KEY (budget, subject_id)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO budget_instances (budget, subject_id, created_at)
        SELECT DISTINCT b.budget, b.subject_id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
        FROM balances b JOIN budgets g ON g.name = b.budget
        WHERE json_extract(g.spec, '$.subject_id') IS NULL;
    """
    + _append_only("threshold_events", "threshold events")
    + _append_only("shadow_denials", "shadow denials")
    + _append_only("stops", "stop markers")
    + _append_only("adjustments", "adjustments"),
    # 4: virtual keys and the audit log (the gateway's admin API)
    """
    INSERT INTO meta (key, value) VALUES ('keys_rev', '0');
    CREATE TABLE keys (
        id TEXT PRIMARY KEY, key_sha256 TEXT NOT NULL UNIQUE, project TEXT, data TEXT NOT NULL
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, project TEXT, data TEXT NOT NULL
    );
    CREATE INDEX audit_log_at ON audit_log (at);
    CREATE INDEX audit_log_project ON audit_log (project, id);
    """
    + _append_only("audit_log", "audit entries"),
    # 5 (issue 14): the process that owns a reservation (reclaimed when it dies), the disputed
    #    flag of usage events (NULL for events written before: their metadata says), the lookups
    #    of events by provider response id, conversation and cached content (EVENT_LOOKUPS, the
    #    latest first), and the leases of shared sessions
    """
    ALTER TABLE reservations ADD COLUMN owner TEXT;
    CREATE INDEX reservations_owner ON reservations (owner) WHERE state = 'active';
    ALTER TABLE usage_events ADD COLUMN disputed INTEGER;
    CREATE INDEX usage_events_disputed ON usage_events (at, seq) WHERE disputed = 1;
    CREATE INDEX usage_events_response_id ON usage_events (json_extract(data, '$.metadata.response_id'), seq)
        WHERE json_extract(data, '$.metadata.response_id') IS NOT NULL;
    CREATE INDEX usage_events_conversation ON usage_events (json_extract(data, '$.metadata.conversation'), seq)
        WHERE json_extract(data, '$.metadata.conversation') IS NOT NULL;
    CREATE INDEX usage_events_cached_content
        ON usage_events (json_extract(data, '$.metadata.cached_content'), seq)
        WHERE json_extract(data, '$.metadata.cached_content') IS NOT NULL;
    CREATE TABLE lease_groups (key TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE leases (
        key TEXT NOT NULL, holder TEXT NOT NULL, expires_at TEXT NOT NULL,
        PRIMARY KEY (key, holder)
    ) WITHOUT ROWID;
    CREATE INDEX leases_expiry ON leases (expires_at);
    """,
    # 6 (issue 15 items 9 and 16, issue 16 item 8): denials (one row per refused call, or per
    #    subject, budget and minute past the flood rate: ``aggregated`` rows count the rest and
    #    are the only rows ever updated), stored answers of ``Idempotency-Key`` requests, and the
    #    tool-definition tokens of usage events (NULL for events written before)
    """
    CREATE TABLE denials (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL, minute TEXT NOT NULL, subject_key TEXT NOT NULL, budget TEXT NOT NULL,
        aggregated INTEGER NOT NULL DEFAULT 0, count INTEGER NOT NULL DEFAULT 1, last_at TEXT NOT NULL,
        org TEXT, project TEXT, team TEXT, user TEXT, key TEXT, agent TEXT, session TEXT, task TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX denials_at ON denials (at, id);
    CREATE INDEX denials_budget ON denials (budget, id);
    CREATE INDEX denials_project ON denials (project, id);
    CREATE INDEX denials_flood ON denials (subject_key, budget, minute) WHERE aggregated = 0;
    CREATE UNIQUE INDEX denials_folded ON denials (subject_key, budget, minute) WHERE aggregated = 1;
    CREATE TRIGGER denials_no_update BEFORE UPDATE ON denials WHEN OLD.aggregated = 0
        BEGIN SELECT RAISE(ABORT, 'denials are append-only'); END;
    CREATE TRIGGER denials_no_delete BEFORE DELETE ON denials
        BEGIN SELECT RAISE(ABORT, 'denials are append-only'); END;
    CREATE TABLE idempotency (
        namespace TEXT NOT NULL, key TEXT NOT NULL, body_sha256 TEXT NOT NULL, state TEXT NOT NULL,
        request_id TEXT, created_at TEXT NOT NULL, expires_at TEXT NOT NULL, response TEXT,
        PRIMARY KEY (namespace, key)
    );
    CREATE INDEX idempotency_expiry ON idempotency (expires_at);
    ALTER TABLE usage_events ADD COLUMN tool_definition_tokens INTEGER;
    """,
    # 7 (issue 18; numbered for the merge order, appended after 6): the budget that clamped a
    #    call's output bound, as a column the dashboard filters on (NULL for events written before:
    #    their metadata.clamped_by says; no backfill, events are append-only); the daily spend
    #    rollups (tokenward.ledger.rollups) kept as events are written, the events already there
    #    (seq below rollup_below) rolled up later in batches from rollup_next, never here
    """
    ALTER TABLE usage_events ADD COLUMN clamped_by TEXT;
    CREATE INDEX usage_events_clamped ON usage_events (clamped_by, at) WHERE clamped_by IS NOT NULL;
    CREATE TABLE usage_rollup (
        day TEXT NOT NULL, project TEXT NOT NULL, dim TEXT NOT NULL, value TEXT NOT NULL,
        calls INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
        cost_pico INTEGER NOT NULL, unpriced INTEGER NOT NULL,
        PRIMARY KEY (day, dim, project, value)
    ) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('rollup_next', '1');
    INSERT INTO meta (key, value) SELECT 'rollup_below', CAST(COALESCE(MAX(seq), 0) + 1 AS TEXT) FROM usage_events;
    """,
    # 8 (issue 17 item e): a settled or released reservation is deleted when it is settled or
    #    released (its usage event is the call's record); the rows older code kept go once here
    #    (the file keeps its size: their pages are reused by later rows, or VACUUM gives them back)
    """
    DELETE FROM reservations WHERE state IN ('settled', 'released');
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


def split_statements(script: str) -> list[str]:
    """Statements of a migration script (triggers keep their inner semicolons)."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current))
    return statements
