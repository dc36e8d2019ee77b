"""A write the store refuses is quarantined, never blocking later ones (issue 14, item 6).

The refusal is a real one: a trigger in the test's own PostgreSQL schema refuses usage events
whose request id starts with ``poison`` (as PostgreSQL refused every event carrying a NUL on the
branch point). On the branch point a PostgreSQL settle so refused raised and the event was lost,
and on Redis the refused event stayed at the head of the spool with another user's event stuck
behind it; now the refused entry is retried, quarantined after its refusals (logged, and an
audit entry ``ledger.quarantined``), shown by ``tokenward quarantine list`` and put back by
``tokenward quarantine retry`` once the cause is gone.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from typer.testing import CliRunner

from tests.ledger.backends import (
    BACKENDS,
    POSTGRES_URL,
    drop_postgres_schema,
    drop_redis_prefix,
    fresh_postgres_url,
    fresh_redis_url,
    require_available,
)
from tests.ledger.helpers import ALICE, BOB, T0, D, cost_budget, event, spent_held, usd
from tokenward.cli.main import app
from tokenward.ledger import open_ledger
from tokenward.ledger.spool import Spool

runner = CliRunner()


def _refuse_poison(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            f"""
            CREATE FUNCTION "{schema}".refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.request_id LIKE 'poison%' THEN
                    RAISE EXCEPTION 'refused by the test trigger: %', NEW.request_id;
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_poison BEFORE INSERT ON "{schema}".usage_events
                FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse_poison();
            """
        )


def _accept_poison(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP TRIGGER refuse_poison ON "{schema}".usage_events')


def _schema(url: str) -> str:
    return parse_qs(urlsplit(url).query)["schema"][0]


@pytest.mark.postgres
def test_a_refused_postgres_settle_is_quarantined_and_retried_from_the_cli(tmp_path: Path) -> None:
    require_available(BACKENDS["postgres"])
    url = fresh_postgres_url(tmp_path)
    ledger = open_ledger(url)
    try:
        ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
        schema = _schema(url)
        _refuse_poison(schema)
        # the refused settle does not raise: it waits in the spool (the branch point raised)
        ledger.settle(None, event(ALICE, usd("1"), at=T0, request_id="poison-1"))
        ledger.settle(None, event(ALICE, usd("2"), at=T0, request_id="fine-1"))
        assert ledger.flush(10) == 0  # nothing waits: refused three times, then set aside
        assert [e.request_id for e in ledger.events()] == ["fine-1"]
        assert spent_held(ledger, ALICE, "alice-usd") == (D("2"), D("0"))
        audit = [a for a in ledger.audit_log() if a.action == "ledger.quarantined"]
        assert len(audit) == 1 and audit[0].after["request_id"] == "poison-1"
    finally:
        ledger.close()

    listed = runner.invoke(app, ["quarantine", "list", "--ledger", url, "--json"])
    assert listed.exit_code == 0, listed.output
    shown = json.loads(listed.output)
    (entry,) = shown["quarantined"]
    assert entry["payload"]["event"]["request_id"] == "poison-1"
    assert "refused by the test trigger" in entry["error"] and entry["attempts"] == 3

    _accept_poison(schema)  # the cause is fixed
    retried = runner.invoke(app, ["quarantine", "retry", "--ledger", url])
    assert retried.exit_code == 0, retried.output
    ledger = open_ledger(url)
    try:
        assert sorted(e.request_id for e in ledger.events()) == ["fine-1", "poison-1"]
        assert spent_held(ledger, ALICE, "alice-usd") == (D("3"), D("0"))
    finally:
        ledger.close()
        drop_postgres_schema(url)
    from tokenward.ledger import spool_path

    spool = Spool(spool_path(url))  # type: ignore[arg-type]
    try:
        assert spool.quarantined() == [] and spool.pending() == 0
    finally:
        spool.close()


@pytest.mark.redis
@pytest.mark.postgres
def test_a_refused_event_never_holds_back_another_users_event_on_redis(tmp_path: Path) -> None:
    require_available(BACKENDS["redis"])
    require_available(BACKENDS["postgres"])
    url = fresh_redis_url(tmp_path, events="postgres")
    ledger = open_ledger(url)
    try:
        ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
        ledger.put_budget(cost_budget("bob-usd", "user", "10", "bob"))
        _refuse_poison(_schema(url.split("events=", 1)[1]))
        ledger.settle(None, event(ALICE, usd("1"), at=T0, request_id="poison-1"))
        ledger.settle(None, event(BOB, usd("2"), at=T0, request_id="bob-1"))
        assert ledger.flush(15) == 0  # type: ignore[attr-defined]
        assert [e.request_id for e in ledger.events()] == ["bob-1"]  # bob's event landed
        from tokenward.ledger import spool_path

        spool = Spool(spool_path(url))  # type: ignore[arg-type]
        try:
            (entry,) = spool.quarantined()
            assert entry.payload["event"]["request_id"] == "poison-1"
        finally:
            spool.close()
        # the hot counters charged both at settlement; the refused one waits to be put back
        assert spent_held(ledger, BOB, "bob-usd") == (D("2"), D("0"))
    finally:
        ledger.close()
        drop_redis_prefix(url)
