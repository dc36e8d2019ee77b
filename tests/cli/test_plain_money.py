"""Issue 15 item 12: money reads as a plain decimal wherever a person reads it (``events``,
``balances``, denial messages, reports, budget listings): never ``0E-7``, ``6E-8`` or
``0.0008500``. Amounts with those exponents arise naturally: a zero cost priced at 7 places, a
tiny call's cost, a hold quantized to the price table's places."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenward.cli.main import app
from tokenward.core.budgets import Budget, Subject, parse_budget_spec
from tokenward.core.decide import Balance
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.ledger import open_ledger

runner = CliRunner()
ALICE = Subject(user="alice")
EXPONENT = re.compile(r"\d[eE][+-]?\d")
TRAILING_ZERO = re.compile(r"(?<![\d.])\d+\.\d*0(?![\d.])")  # 0.0008500, 1.50
COSTS = [Decimal("6E-8"), Decimal("0E-7"), Decimal("0.0008500")]


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = open_ledger(url)
    store.put_budget(parse_budget_spec("user=alice:cost_usd=0.0010000/day;name=alice-usd"))
    for index, cost in enumerate(COSTS):
        store.settle(
            None,
            UsageEvent(
                request_id=f"req-{index}",
                at=datetime.now(UTC),
                subject=ALICE,
                usage=Usage(input_tokens=3, output_tokens=index),
                model="gpt-4o-mini",
                cost_usd=cost,
                charged={"cost_usd": cost, "requests": Decimal(1)},
            ),
        )
    store.close()
    return url


def _plain_only(text: str) -> None:
    assert not EXPONENT.search(text), text
    assert not TRAILING_ZERO.search(text), text


def test_events_balances_reports_and_listings_write_plain_decimals(ledger: str) -> None:
    events = runner.invoke(app, ["events", "--ledger", ledger])
    assert events.exit_code == 0, events.output
    _plain_only(events.output)
    cells = [line.split("│")[-2].strip() for line in events.output.splitlines() if "gpt-4o-mini" in line]
    assert cells == ["0.00000006", "0", "0.00085"]
    balances = runner.invoke(app, ["balances", "--ledger", ledger, "--user", "alice"])
    assert balances.exit_code == 0, balances.output
    _plain_only(balances.output)
    # spent 0.00000006 + 0 + 0.00085 = 0.00085006; remaining 0.001 - 0.00085006 = 0.00014994
    assert "0.00085006" in balances.output and "0.00014994" in balances.output
    for report in (["chargeback"], ["utilisation"], ["sessions"]):
        result = runner.invoke(app, ["report", *report, "--ledger", ledger])
        assert result.exit_code == 0, result.output
        _plain_only(result.output)


def test_denial_messages_and_budget_listings_write_plain_decimals() -> None:
    budget = Budget("alice-usd", "user", "cost_usd", Decimal("0.0010000"), subject_id="alice")
    denial = Balance(budget, "alice", "", Decimal("0E-7"), Decimal("6E-8"), None).exceeded(
        Decimal("0.0008500")
    )
    message = str(denial)
    _plain_only(message)
    assert "limit 0.001, used 0, held 0.00000006, this call needs 0.00085" in message
    assert json.dumps(budget.to_dict()).count('"limit": "0.001"') == 1


def test_a_gateway_denial_message_is_plain(start_gateway) -> None:
    import httpx

    from tests.support.fixtures import KEY

    gateway = start_gateway(
        budgets=[{"name": "tiny", "scope": "user", "id": "alice", "meter": "cost_usd", "limit": "0.0000100"}]
    )
    # gpt-4o-mini: $0.15 / $0.60 per 1M; 6 prompt tokens + a 20-token bound hold
    # (6 * 0.15 + 20 * 0.60) / 1e6 = 0.0000129 > 0.00001, and 16 output tokens (the minimum) do not
    # fit either: (0.9 + 9.6) / 1e6 = 0.0000105.
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Say hello"}],
            "max_tokens": 20,
        },
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 402, response.text
    error = response.json()["error"]
    _plain_only(error["message"])
    _plain_only(json.dumps(error["budget"]))
    assert "limit 0.00001," in error["message"]


@pytest.mark.parametrize(
    ("value", "places", "text"),
    [
        ("6E-8", None, "0.00000006"),
        ("0E-7", None, "0"),
        ("0.0008500", None, "0.00085"),
        ("1E+2", None, "100"),
        ("-0.0", None, "0"),
        ("-1.20", None, "-1.2"),
        # 49 digits: exact, not rounded to the decimal context's 28
        (
            "1000000000000000000000000000000.000000000000000001",
            None,
            "1000000000000000000000000000000.000000000000000001",
        ),
        ("66.666666", 2, "66.67"),
        ("0.0008500", 2, "0"),
        ("12345678901234567890123456789.55", 1, "12345678901234567890123456789.6"),
    ],
)
def test_plain_is_the_one_formatting_helper(value: str, places: int | None, text: str) -> None:
    from tokenward.numbers import plain

    assert plain(Decimal(value), places=places) == text
