"""The worked ``usage-cost`` and ``stream`` cases of ``../shared/cases``, through ``tokenward cost``.

Each case (and each variant in the same dialects) is fed to the real CLI with its fixture prices
in a price-override file; the expected figures are the case's, worked out by hand.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.support.shared import cases
from tokenward.cli.main import app

DIALECTS = {"openai-chat", "openai-compatible", "anthropic-messages"}
TOKEN_FIELDS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


def _with_variants() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for case_id, case in sorted(cases().items()):
        if case["kind"] not in ("usage-cost", "stream"):
            continue
        candidates = [(case_id, {k: v for k, v in case.items() if k != "variants"})]
        for v in case.get("variants", []):
            merged = {k: val for k, val in case.items() if k != "variants"}
            for key, value in v.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            candidates.append((f"{case_id}/{v['label']}", merged))
        for label, item in candidates:
            if item.get("dialect") in DIALECTS and item.get("kind", case["kind"]) in ("usage-cost", "stream"):
                out.append((label, item))
    return out


CASES = _with_variants()


def _prices_file(tmp_path: Path, case: dict[str, Any]) -> Path | None:
    if "prices_per_million" not in case:
        return None
    row = dict(case["prices_per_million"])
    if case.get("per_call_fees_usd"):
        row["fees"] = case["per_call_fees_usd"]
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {case.get("price_table_key") or case["model"]: row}}))
    return path


def run_cost(tmp_path: Path, case: dict[str, Any]) -> dict[str, Any]:
    args = ["cost", "--dialect", case["dialect"], "--model", case["model"], "--json"]
    prices = _prices_file(tmp_path, case)
    if prices is not None:
        args += ["--prices", str(prices)]
    if "events" in case:
        events = tmp_path / "events.json"
        events.write_text(json.dumps(case["events"]))
        args += ["--events", str(events)]
    else:
        args += ["--usage", json.dumps(case["raw_usage"])]
    estimate = (case.get("scenario") or {}).get("preflight_input_estimate_tokens")
    if estimate is not None:
        args += ["--input-estimate", str(estimate)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.skipif(not CASES, reason="../shared/cases is not available (it sits beside the project in CI)")
@pytest.mark.parametrize(("label", "case"), CASES, ids=[label for label, _ in CASES])
def test_case_through_cost_cli(tmp_path: Path, label: str, case: dict[str, Any]) -> None:
    expected = case["expected"]
    report = run_cost(tmp_path, case)
    # figures are the provider's, unless the case says they come from our own counts
    filled = "input_source" in expected or "output_source" in expected
    usage = report["budget_usage"] if filled else report["usage"]
    for name in TOKEN_FIELDS:
        if name in expected:
            assert usage[name] == expected[name], f"{label}: {name}"
    if "cost_usd" in expected:
        assert report["cost_usd"] is not None, f"{label}: cost unknown"
        assert Decimal(report["cost_usd"]) == Decimal(expected["cost_usd"]), label
    for name in ("input_source", "output_source", "usage_complete", "cost_estimated", "cost_source"):
        if name in expected:
            assert report[name] == expected[name], f"{label}: {name}"
    if "budget_input_tokens" in expected:
        assert report["budget_input_tokens"] == expected["budget_input_tokens"]
    for name in ("budget_total_tokens", "total_tokens_for_budgets"):
        if name in expected:
            assert report["budget_total_tokens"] == expected[name], f"{label}: {name}"
    if "web_search_calls" in expected:
        assert (report["usage"]["web_search_calls"] or 0) == expected["web_search_calls"]
    if expected.get("no_negative_counts"):
        assert all(v is None or v >= 0 for k, v in report["budget_usage"].items() if k.endswith("_tokens"))
    if (
        "wrong" in case
        and isinstance(case["wrong"], dict)
        and "cost_usd" in case["wrong"]
        and "cost_usd" in expected
    ):
        assert Decimal(report["cost_usd"]) != Decimal(case["wrong"]["cost_usd"])


def test_the_case_list_is_not_empty() -> None:
    if not cases():
        pytest.skip("../shared/cases is not available")
    assert len(CASES) >= 15
