"""Commands that only read a ledger refuse one that does not exist; ``TOKENWARD_LEDGER``."""

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

READERS = [
    ["events"],
    ["balances", "--user", "alice"],
    ["reprice"],
    ["report", "chargeback"],
    ["report", "utilisation"],
]


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a))
def test_a_missing_ledger_is_refused_and_not_created(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "typo" / "ledgr.db"
    result = runner.invoke(app, [*args, "--ledger", f"sqlite:///{missing}"])
    assert result.exit_code == 2, result.output
    assert "no such ledger file" in result.output and str(missing) in " ".join(result.output.split())
    assert len(result.output.strip().splitlines()) == 1
    assert not missing.exists() and not missing.parent.exists()


def test_estimate_refuses_a_missing_calibration_ledger(tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
    missing = tmp_path / "nope.db"
    result = runner.invoke(app, ["estimate", str(request), "--ledger", f"sqlite:///{missing}"])
    assert result.exit_code == 2 and "no such ledger file" in result.output
    assert not missing.exists()


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = open_ledger(url)
    store.put_budget(parse_budget_spec("user=alice:total_tokens=1000/day"))
    store.settle(
        None,
        UsageEvent(
            request_id="req-1",
            at=datetime.now(UTC),
            subject=Subject(user="alice", session="session-with-a-rather-long-identifier-0123456789"),
            usage=Usage(input_tokens=12, output_tokens=3),
            model="gpt-4o-mini",
            cost_usd=Decimal("0.0000036"),
            charged={"total_tokens": Decimal(15), "requests": Decimal(1)},
        ),
    )
    store.close()
    return url


def test_existing_ledgers_are_read(ledger: str) -> None:
    events = runner.invoke(app, ["events", "--ledger", ledger])
    assert events.exit_code == 0, events.output
    # Not a terminal: nothing is cut at 80 columns.
    assert "session=session-with-a-rather-long-identifier-0123456789" in events.output
    balances = runner.invoke(app, ["balances", "--ledger", ledger, "--user", "alice", "--json"])
    assert balances.exit_code == 0, balances.output
    assert json.loads(balances.stdout)[0]["spent"] == "15"
    as_json = runner.invoke(app, ["events", "--ledger", ledger, "--json"])
    assert [e["request_id"] for e in json.loads(as_json.stdout)] == ["req-1"]  # a JSON array


def test_the_ledger_can_come_from_the_environment(ledger: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENWARD_LEDGER", ledger)
    for args in (["events", "--json"], ["report", "chargeback", "-f", "json"], ["reprice", "--json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert "req-1" in result.stdout or '"calls": 1' in result.stdout, result.stdout
    # --ledger still wins over the environment.
    other = runner.invoke(app, ["events", "--ledger", "sqlite:///does-not-exist.db"])
    assert other.exit_code == 2 and "does-not-exist.db" in other.output


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/0?timeout=0&events=sqlite:///e.db", "timeout must be a positive"),
        ("postgresql://postgres@127.0.0.1/test?schema=Upper", "lower-case identifier"),
        ("mysql://h/db", "unknown ledger"),
    ],
)
def test_serve_refuses_a_bad_ledger_url_in_one_line_before_starting(
    tmp_path: Path, url: str, message: str
) -> None:
    """Checked when the ledger is opened, before the server starts (not as a traceback from its
    start-up)."""
    config = tmp_path / "gw.yaml"
    config.write_text(
        "keys: [{key: tw-k, name: k, user: u}]\nupstreams: [{name: fake, provider: fake, base_url: 'http://127.0.0.1:9'}]\n"
    )
    result = runner.invoke(app, ["serve", "--config", str(config), "--ledger", url, "--port", "9"])
    assert result.exit_code == 2, result.output
    assert message in result.output.lower() and "Traceback" not in result.output
    # The one-line error alone: the ready line comes only once the server listens.
    assert "ready" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_serve_warns_when_the_config_names_no_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every relative path in a config is taken from its folder, except the default ledger,
    which is ./tokenward.db in the working directory: a gateway started from elsewhere starts on
    an empty ledger, its spend forgotten. ``serve`` says so, and which file it uses."""
    config = tmp_path / "conf" / "gw.yaml"
    config.parent.mkdir()
    config.write_text(
        "keys: [{key: tw-k, name: k, user: u}]\nupstreams: [{name: fake, provider: fake, base_url: 'http://127.0.0.1:9'}]\n"
    )
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["serve", "--config", str(config), "--workers", "0"])  # stops before starting
    text = " ".join(result.output.split())
    assert f"warning: {config} names no ledger, so the gateway uses {tmp_path / 'tokenward.db'}" in text
    named = runner.invoke(
        app, ["serve", "--config", str(config), "--ledger", "sqlite:///x.db", "--workers", "0"]
    )
    assert "names no ledger" not in named.output
