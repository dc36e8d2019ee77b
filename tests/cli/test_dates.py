"""Dates and instants on the command line: out-of-range ones are one-line errors, not tracebacks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenward.cli.main import app
from tokenward.clock import parse_instant, utc
from tokenward.errors import ValidationError
from tokenward.ledger import open_ledger

runner = CliRunner()
EDGES = ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"]


@pytest.mark.parametrize("text", EDGES)
def test_instants_outside_utc_are_validation_errors(text: str) -> None:
    with pytest.raises(ValidationError, match="cannot be represented in UTC") as caught:
        parse_instant(text, field="--since")
    assert caught.value.field == "--since" and str(caught.value).startswith("--since: ")
    with pytest.raises(ValidationError, match="cannot be represented in UTC"):
        utc(datetime.fromisoformat(text))


def test_parse_instant_reads_dates_and_instants() -> None:
    assert parse_instant("2025-11-18") == datetime(2025, 11, 18, tzinfo=UTC)
    assert parse_instant("2025-11-18T22:00:00Z") == datetime(2025, 11, 18, 22, tzinfo=UTC)
    assert parse_instant("2025-11-18T22:00:00+02:00") == datetime(2025, 11, 18, 20, tzinfo=UTC)
    assert parse_instant("0001-01-01T00:01:00+00:01") == datetime(1, 1, 1, tzinfo=UTC)  # just inside
    assert parse_instant("9999-12-31T23:59:59Z").tzinfo is UTC
    at = datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=-5)))
    assert utc(at) == datetime(2025, 1, 1, 5, tzinfo=UTC)
    with pytest.raises(ValidationError, match="is not a date or instant"):
        parse_instant("yesterday")


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).close()
    return url


@pytest.mark.parametrize("text", EDGES)
@pytest.mark.parametrize(
    "args",
    [
        ["report", "chargeback", "--since"],
        ["report", "chargeback", "--until"],
        ["report", "utilisation", "--at"],
        ["report", "burn", "--at"],
        ["reprice", "--since"],
    ],
    ids=lambda a: " ".join(a),
)
def test_out_of_range_dates_are_one_line_errors(ledger: str, args: list[str], text: str) -> None:
    result = runner.invoke(app, [*args, text, "--ledger", ledger])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "OverflowError" not in result.output
    assert "cannot be represented in UTC" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("text", EDGES)
def test_cost_at_out_of_range(text: str) -> None:
    usage = '{"prompt_tokens": 10, "completion_tokens": 2}'
    args = ["cost", "--dialect", "openai-chat", "--model", "gpt-4o-mini", "--usage", usage, "--at", text]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "cannot be represented in UTC" in result.output


def test_a_last_period_before_year_one_is_an_error(ledger: str) -> None:
    result = runner.invoke(app, ["report", "chargeback", "--last", "99999999d", "--ledger", ledger])
    assert result.exit_code == 2 and "before the year 1" in result.output
