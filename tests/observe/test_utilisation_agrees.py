"""Issue 15 item 8: ``tokenward report utilisation`` lists the budget instances the ledger holds,
as ``tokenward balances`` does: no instance of a template for a value whose fixed budget
``overrides`` it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from tokenward.cli.main import app
from tokenward.core.budgets import Subject, parse_budget_spec
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.ledger import open_ledger

runner = CliRunner()


def test_utilisation_and_balances_list_the_same_instances(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = open_ledger(url)
    store.put_budget(parse_budget_spec("user:total_tokens=1000/day;name=each-user"))
    store.put_budget(parse_budget_spec("user=alice:total_tokens=5000/day;name=alice-big;overrides=each-user"))
    for request_id, user in (("r-alice", "alice"), ("r-bob", "bob")):
        store.settle(
            None,
            UsageEvent(
                request_id=request_id,
                at=datetime.now(UTC),
                subject=Subject(user=user),
                usage=Usage(input_tokens=100, output_tokens=20),
                charged={"total_tokens": Decimal(120), "requests": Decimal(1)},
            ),
        )
    store.close()
    report = runner.invoke(app, ["report", "utilisation", "--ledger", url, "-f", "json"])
    assert report.exit_code == 0, report.output
    listed = {(r["budget"], r["subject_id"], r["spent"]) for r in json.loads(report.stdout)["rows"]}
    balances = set()
    for user in ("alice", "bob"):
        result = runner.invoke(app, ["balances", "--ledger", url, "--user", user, "--json"])
        assert result.exit_code == 0, result.output
        balances |= {(b["budget"], b["subject_id"], b["spent"]) for b in json.loads(result.stdout)}
    assert listed == balances == {("alice-big", "alice", "120"), ("each-user", "bob", "120")}
