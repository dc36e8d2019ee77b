"""The PostgreSQL ledger's schema: versioned migrations, applied in order on open.

The ledger lives in one schema (``?schema=NAME`` in the URL, ``tokenward`` by default), created
when missing. ``tokenward_migrations`` lists the migrations a schema has had; opening applies the
rest, each in its own transaction, under an advisory lock so that replicas starting together do
not race. A migration is only ever appended, never edited.

Money and amounts are ``NUMERIC`` (exact, unbounded); instants ``timestamptz`` (UTC); records
``jsonb`` next to the columns their queries filter on. Append-only tables (usage events,
threshold events, shadow denials, stop markers, adjustments, the audit log) refuse UPDATE, DELETE
and TRUNCATE with triggers.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]


def _append_only(table: str, what: str) -> str:
    return f"""
    CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION tokenward_append_only('{what}');
    CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION tokenward_append_only('{what}');
    """


MIGRATIONS: list[str] = [
    # 1: the whole ledger contract (budgets, balances, reservations, usage events, calibration,
    #    threshold events, shadow denials, stop markers, adjustments, template instances, virtual
    #    keys, the audit log)
    """
    CREATE FUNCTION tokenward_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% are append-only', TG_ARGV[0] USING ERRCODE = 'restrict_violation';
    END $$;
    CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);
    INSERT INTO meta (key, value) VALUES ('budgets_rev', 0), ('stops_rev', 0), ('keys_rev', 0);
    CREATE TABLE budgets (name text PRIMARY KEY, spec jsonb NOT NULL);
    CREATE TABLE balances (
        budget text NOT NULL, subject_id text NOT NULL, window_key text NOT NULL,
        spent numeric NOT NULL DEFAULT 0, held numeric NOT NULL DEFAULT 0,
        PRIMARY KEY (budget, subject_id, window_key)
    );
    CREATE TABLE reservations (
        id text PRIMARY KEY, idempotency_key text UNIQUE, state text NOT NULL,
        created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, data jsonb NOT NULL
    );
    CREATE INDEX reservations_active ON reservations (expires_at) WHERE state = 'active';
    CREATE TABLE usage_events (
        seq bigserial PRIMARY KEY,
        request_id text NOT NULL UNIQUE,
        at timestamptz NOT NULL,
        org text, project text, team text, "user" text, "key" text, agent text, session text, task text,
        model text, status text NOT NULL,
        input_tokens bigint, output_tokens bigint, cost_usd numeric,
        data jsonb NOT NULL
    );
    CREATE INDEX usage_events_at ON usage_events (at, seq);
    CREATE INDEX usage_events_session ON usage_events (session, at);
    CREATE INDEX usage_events_user ON usage_events ("user", at);
    CREATE TABLE estimate_stats (model text PRIMARY KEY, data jsonb NOT NULL);
    CREATE TABLE threshold_events (
        id bigserial PRIMARY KEY,
        budget text NOT NULL, subject_id text NOT NULL, window_key text NOT NULL,
        threshold text NOT NULL, at timestamptz NOT NULL, data jsonb NOT NULL,
        UNIQUE (budget, subject_id, window_key, threshold)
    );
    CREATE TABLE shadow_denials (
        id bigserial PRIMARY KEY, budget text NOT NULL, at timestamptz NOT NULL, data jsonb NOT NULL
    );
    CREATE INDEX shadow_denials_budget ON shadow_denials (budget, id);
    CREATE TABLE stops (
        scope text NOT NULL, subject_id text NOT NULL, at timestamptz NOT NULL, data jsonb NOT NULL,
        PRIMARY KEY (scope, subject_id)
    );
    CREATE TABLE adjustments (
        seq bigserial PRIMARY KEY, id text NOT NULL UNIQUE, at timestamptz NOT NULL, data jsonb NOT NULL
    );
    CREATE INDEX adjustments_at ON adjustments (at);
    CREATE TABLE budget_instances (
        budget text NOT NULL, subject_id text NOT NULL, created_at timestamptz NOT NULL,
        PRIMARY KEY (budget, subject_id)
    );
    CREATE TABLE keys (
        id text PRIMARY KEY, key_sha256 text NOT NULL UNIQUE, project text, data jsonb NOT NULL
    );
    CREATE TABLE audit_log (
        id bigserial PRIMARY KEY, at timestamptz NOT NULL, project text, data jsonb NOT NULL
    );
    CREATE INDEX audit_log_at ON audit_log (at);
    CREATE INDEX audit_log_project ON audit_log (project, id);
    """
    + _append_only("usage_events", "usage events")
    + _append_only("threshold_events", "threshold events")
    + _append_only("shadow_denials", "shadow denials")
    + _append_only("stops", "stop markers")
    + _append_only("adjustments", "adjustments")
    + _append_only("audit_log", "audit entries"),
    # 2 (issue 14): the process that owns a reservation (reclaimed when it dies), the disputed
    #    flag of usage events (NULL for events written before: their metadata says), the lookups
    #    of events by provider response id, conversation and cached content (EVENT_LOOKUPS, the
    #    latest first), and the leases of shared sessions
    """
    ALTER TABLE reservations ADD COLUMN owner text;
    CREATE INDEX reservations_owner ON reservations (owner) WHERE state = 'active';
    ALTER TABLE usage_events ADD COLUMN disputed boolean;
    CREATE INDEX usage_events_disputed ON usage_events (at, seq) WHERE disputed;
    CREATE INDEX usage_events_response_id ON usage_events ((data->'metadata'->>'response_id'), seq)
        WHERE data->'metadata'->>'response_id' IS NOT NULL;
    CREATE INDEX usage_events_conversation ON usage_events ((data->'metadata'->>'conversation'), seq)
        WHERE data->'metadata'->>'conversation' IS NOT NULL;
    CREATE INDEX usage_events_cached_content ON usage_events ((data->'metadata'->>'cached_content'), seq)
        WHERE data->'metadata'->>'cached_content' IS NOT NULL;
    CREATE TABLE lease_groups (key text PRIMARY KEY, data jsonb NOT NULL);
    CREATE TABLE leases (
        key text NOT NULL, holder text NOT NULL, expires_at timestamptz NOT NULL,
        PRIMARY KEY (key, holder)
    );
    CREATE INDEX leases_expiry ON leases (expires_at);
    """,
    # 3 (issue 15 items 9 and 16, issue 16 item 8): denials (one row per refused call, or per
    #    subject, budget and minute past the flood rate: ``aggregated`` rows count the rest and
    #    are the only rows ever updated), stored answers of ``Idempotency-Key`` requests, and the
    #    tool-definition tokens of usage events (NULL for events written before)
    """
    CREATE TABLE denials (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL, minute text NOT NULL, subject_key text NOT NULL, budget text NOT NULL,
        aggregated boolean NOT NULL DEFAULT false, count bigint NOT NULL DEFAULT 1,
        last_at timestamptz NOT NULL,
        org text, project text, team text, "user" text, "key" text, agent text, session text, task text,
        data jsonb NOT NULL
    );
    CREATE INDEX denials_at ON denials (at, id);
    CREATE INDEX denials_budget ON denials (budget, id);
    CREATE INDEX denials_project ON denials (project, id);
    CREATE INDEX denials_flood ON denials (subject_key, budget, minute) WHERE NOT aggregated;
    CREATE UNIQUE INDEX denials_folded ON denials (subject_key, budget, minute) WHERE aggregated;
    CREATE FUNCTION tokenward_denials_fold_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.aggregated THEN RETURN NEW; END IF;
        RAISE EXCEPTION 'denials are append-only' USING ERRCODE = 'restrict_violation';
    END $$;
    CREATE TRIGGER denials_append_only BEFORE UPDATE OR DELETE ON denials
        FOR EACH ROW EXECUTE FUNCTION tokenward_denials_fold_only();
    CREATE TRIGGER denials_no_truncate BEFORE TRUNCATE ON denials
        FOR EACH STATEMENT EXECUTE FUNCTION tokenward_append_only('denials');
    CREATE TABLE idempotency (
        namespace text NOT NULL, key text NOT NULL, body_sha256 text NOT NULL, state text NOT NULL,
        request_id text, created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL,
        response jsonb,
        PRIMARY KEY (namespace, key)
    );
    CREATE INDEX idempotency_expiry ON idempotency (expires_at);
    ALTER TABLE usage_events ADD COLUMN tool_definition_tokens bigint;
    """,
    # 4 (issue 18): secrets shared by every process on the ledger (the dashboard's cookie key),
    #    and the budget that clamped a call's output bound, as a column the dashboard filters on
    #    (NULL for events written before: their metadata.clamped_by says; no backfill, events are
    #    append-only); the daily spend rollups (tokenward.ledger.rollups), the events already there
    #    (seq below rollup_below) rolled up later in batches, never here
    """
    CREATE TABLE secrets (name text PRIMARY KEY, value text NOT NULL);
    ALTER TABLE usage_events ADD COLUMN clamped_by text;
    CREATE INDEX usage_events_clamped ON usage_events (clamped_by, at) WHERE clamped_by IS NOT NULL;
    CREATE TABLE usage_rollup (
        day text NOT NULL, project text NOT NULL, dim text NOT NULL, value text NOT NULL,
        calls bigint NOT NULL, input_tokens bigint NOT NULL, output_tokens bigint NOT NULL,
        cost_usd numeric NOT NULL, unpriced bigint NOT NULL,
        PRIMARY KEY (day, dim, project, value)
    );
    INSERT INTO meta (key, value) VALUES ('rollup_next', 1);
    INSERT INTO meta (key, value) SELECT 'rollup_below', COALESCE(MAX(seq), 0) + 1 FROM usage_events;
    """,
    # 5 (issue 17 item e): a settled or released reservation is deleted when it is settled or
    #    released (its usage event is the call's record); the rows older code kept go once here
    """
    DELETE FROM reservations WHERE state IN ('settled', 'released');
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
