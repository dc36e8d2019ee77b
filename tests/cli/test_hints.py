"""Issue 15 item 14: the read commands say what to do when they have nothing to show, and
``balances`` takes every scope."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenward.cli.main import app
from tokenward.core.budgets import Subject, parse_budget_spec
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.ledger import open_ledger

runner = CliRunner()


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = open_ledger(url)
    store.put_budget(parse_budget_spec("team=search:total_tokens=1000;name=search-team"))
    store.put_budget(parse_budget_spec("org=acme:cost_usd=100/month;name=acme"))
    store.settle(
        None,
        UsageEvent(
            request_id="r-1",
            at=datetime.now(UTC),
            subject=Subject(user="alice", team="search", org="acme"),
            usage=Usage(input_tokens=90, output_tokens=10),
            cost_usd=Decimal("0.25"),
            charged={"total_tokens": Decimal(100), "cost_usd": Decimal("0.25"), "requests": Decimal(1)},
        ),
    )
    store.close()
    return url


def test_balances_without_a_subject_says_how_to_name_one(ledger: str) -> None:
    result = runner.invoke(app, ["balances", "--ledger", ledger])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "--user" in text and "--team or --org" in text and "tokenward budgets list" in text
    nobody = runner.invoke(app, ["balances", "--ledger", ledger, "--user", "bob"])
    assert nobody.exit_code == 0 and "no budget applies to user=bob" in nobody.output


def test_balances_and_events_take_team_and_org(ledger: str) -> None:
    team = runner.invoke(app, ["balances", "--ledger", ledger, "--team", "search", "--json"])
    assert team.exit_code == 0, team.output
    assert [(b["budget"], b["spent"]) for b in json.loads(team.stdout)] == [("search-team", "100")]
    org = runner.invoke(app, ["balances", "--ledger", ledger, "--org", "acme", "--json"])
    assert [(b["budget"], b["spent"]) for b in json.loads(org.stdout)] == [("acme", "0.25")]
    events = runner.invoke(app, ["events", "--ledger", ledger, "--org", "acme", "--json"])
    assert [e["request_id"] for e in json.loads(events.stdout)] == ["r-1"]
    none = runner.invoke(app, ["events", "--ledger", ledger, "--team", "other", "--json"])
    assert json.loads(none.stdout) == []


def test_a_missing_default_ledger_names_the_option_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOKENWARD_LEDGER", raising=False)
    for args in (["events"], ["report", "chargeback"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        text = " ".join(result.output.split())
        assert "no such ledger file" in text and "--ledger URL" in text and "TOKENWARD_LEDGER" in text, args
    assert not (tmp_path / "tokenward.db").exists()
