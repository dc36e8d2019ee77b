"""Issue 15 item 1: a mistyped meter is refused wherever a budget is written, never turned into a
custom meter that nothing charges (``meter: total_token`` used to let 125 tokens through a "30"
budget). A custom meter is declared: ``custom: true`` in YAML and the admin API, ``;custom`` in
specs and in the SDK session's short form."""

from __future__ import annotations

import json
import logging
import sqlite3
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

import tokenward
from tests.gateway.test_admin_api import ADMIN, ADMIN_KEYS, admin
from tests.support.fixtures import UPSTREAM_KEY
from tokenward.cli.main import app
from tokenward.core.budgets import Budget, Subject
from tokenward.errors import ConfigError
from tokenward.gateway import GatewayConfig

MESSAGES = [{"role": "user", "content": "Say hello"}]
TYPO = {"name": "tight", "scope": "session", "meter": "total_token", "limit": 30}


def _config(tmp_path: Path, budget: dict[str, object]) -> Path:
    path = tmp_path / "tokenward.yaml"
    path.write_text(
        json.dumps(
            {
                "ledger": "sqlite:///ledger.db",
                "upstreams": [{"name": "fake", "provider": "fake"}],
                "keys": [{"key": "tw-k", "name": "k"}],
                "budgets": [budget],
            }
        )
    )
    return path


def test_a_gateway_config_with_an_undeclared_custom_meter_does_not_start(tmp_path: Path) -> None:
    path = _config(tmp_path, TYPO)
    with pytest.raises(
        ConfigError, match=r"budgets\[0\].*unknown meter 'total_token'; did you mean 'total_tokens'"
    ):
        GatewayConfig.load(path)
    result = CliRunner().invoke(app, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "did you mean 'total_tokens'?" in message and "custom: true" in message  # the fix
    assert not (tmp_path / "ledger.db").exists()  # refused before anything was opened
    declared = GatewayConfig.load(_config(tmp_path, {**TYPO, "meter": "gpu_seconds", "custom": True}))
    assert (declared.budgets[0].meter, declared.budgets[0].custom) == ("gpu_seconds", True)


def test_the_admin_api_and_the_cli_refuse_an_undeclared_custom_meter(
    start_gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = start_gateway(admin_keys=ADMIN_KEYS)
    refused = admin(gateway, "POST", "/admin/budgets", json=TYPO)
    assert refused.status_code == 400
    assert "did you mean 'total_tokens'" in refused.json()["error"]["message"]
    created = admin(gateway, "POST", "/admin/budgets", json={**TYPO, "meter": "gpu_seconds", "custom": True})
    assert created.status_code == 201 and created.json()["custom"] is True
    monkeypatch.setenv("TOKENWARD_GATEWAY", gateway.url)
    monkeypatch.setenv("TOKENWARD_ADMIN_KEY", ADMIN)
    runner = CliRunner()
    result = runner.invoke(app, ["budgets", "set", "session:total_token=30"])
    assert result.exit_code == 2 and "mark a custom meter with ;custom" in " ".join(result.output.split())
    result = runner.invoke(app, ["budgets", "set", "agent:tool_calls=20;custom", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["custom"] is True
    assert [b["name"] for b in admin(gateway, "GET", "/admin/budgets").json()["budgets"]] == [
        "agent:tool_calls=20",
        "tight",
    ]


def test_an_sdk_session_with_a_mistyped_meter_is_refused_before_any_call(fake) -> None:
    guard = tokenward.Guard("memory://")
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    with (
        pytest.raises(ConfigError, match="did you mean 'total_tokens'"),
        guard.session("s-typo", budget="total_token=30"),
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # never reached
    assert guard.ledger.events() == [] and guard.ledger.budgets() == []
    # Spelt right, the same budget refuses the second call: 6 + 20 = 26 of 30, then 4 tokens left.
    with guard.session("s-right", budget="total_tokens=30;action=deny"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
        with pytest.raises(tokenward.BudgetExceeded):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert sum(e.usage.total_tokens or 0 for e in guard.ledger.events()) == 26


def test_a_custom_budget_stored_before_the_rule_still_opens_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    ledger = tokenward.open_ledger(url)
    ledger.put_budget(Budget("gpu", "agent", "gpu_seconds", Decimal(60), custom=True))
    ledger.close()
    with sqlite3.connect(tmp_path / "old.db") as db:  # as a ledger written before `custom` existed
        (spec,) = db.execute("SELECT spec FROM budgets WHERE name = 'gpu'").fetchone()
        old = {k: v for k, v in json.loads(spec).items() if k != "custom"}
        db.execute("UPDATE budgets SET spec = ? WHERE name = 'gpu'", (json.dumps(old),))
    with caplog.at_level(logging.WARNING, logger="tokenward.ledger"):
        ledger = tokenward.open_ledger(url)
        try:
            (budget,) = ledger.budgets()
            assert (budget.meter, budget.custom) == ("gpu_seconds", True)
            assert [b.budget.name for b in ledger.balances(Subject(agent="a"))] == ["gpu"]
        finally:
            ledger.close()
    assert any("'gpu'" in r.getMessage() and "custom: true" in r.getMessage() for r in caplog.records)
