"""The worked ``usage-cost`` and ``stream`` cases of ``../shared/cases``, through ``tokenward cost``.

Each case (and each variant) is fed to the real CLI with its fixture prices in a price-override
file, in every dialect; a case with ``response_fields`` is given as a whole response
(``--response``: the served model, service tier and output items count), a case with
``context.batch`` with ``--batch``, a stream case whose upstream went on after the client left with
those events appended. The expected figures are the case's, worked out by hand.
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

DIALECTS = {
    "openai-chat",
    "openai-compatible",
    "openai-responses",
    "anthropic-messages",
    "gemini",
    "bedrock-converse",
    "ollama",
}
TOKEN_FIELDS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "output_image_tokens",
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
            if "wrong" not in v:
                merged.pop("wrong", None)  # the case's negative control is not the variant's
            candidates.append((f"{case_id}/{v['label']}", merged))
        for label, item in candidates:
            if item.get("dialect") in DIALECTS and item.get("kind", case["kind"]) in ("usage-cost", "stream"):
                out.append((label, item))
    return out


CASES = _with_variants()


def case_prices_file(tmp_path: Path, case: dict[str, Any]) -> Path | None:
    """The case's fixture prices (and per-call fees) as a price-override file, or None."""
    if "prices_per_million" not in case:
        return None
    row = dict(case["prices_per_million"])
    if case.get("per_call_fees_usd"):
        row["fees"] = case["per_call_fees_usd"]
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {case.get("price_table_key") or case["model"]: row}}))
    return path


def whole_response(case: dict[str, Any]) -> dict[str, Any]:
    """The case's usage wrapped in a response of its dialect, with its ``response_fields``."""
    dialect, raw, fields = case["dialect"], case["raw_usage"], case.get("response_fields") or {}
    if dialect == "openai-responses":
        base = {
            "object": "response",
            "model": case["model"],
            "status": "completed",
            "output": [],
            "usage": raw,
        }
    elif dialect in ("openai-chat", "openai-compatible"):
        base = {"object": "chat.completion", "model": case["model"], "choices": [], "usage": raw}
    elif dialect == "anthropic-messages":
        base = {"type": "message", "model": case["model"], "usage": raw}
    elif dialect == "gemini":
        base = {"usageMetadata": raw}
    elif dialect == "bedrock-converse":
        base = {"usage": raw}
    else:  # ollama: the final object is the response
        base = dict(raw)
    return {**base, **fields}


def run_cost(tmp_path: Path, case: dict[str, Any]) -> dict[str, Any]:
    args = ["cost", "--dialect", case["dialect"], "--model", case["model"], "--json"]
    prices = case_prices_file(tmp_path, case)
    if prices is not None:
        args += ["--prices", str(prices)]
    if "events" in case:
        events = tmp_path / "events.json"
        events.write_text(json.dumps(case["events"] + case.get("upstream_events_after_disconnect", [])))
        args += ["--events", str(events)]
    elif case.get("response_fields"):
        response = tmp_path / "response.json"
        response.write_text(json.dumps(whole_response(case)))
        args += ["--response", str(response)]
    else:
        args += ["--usage", json.dumps(case["raw_usage"])]
    if (case.get("context") or {}).get("batch"):
        args.append("--batch")
    scenario = case.get("scenario") or {}
    estimate = scenario.get("preflight_input_estimate_tokens", scenario.get("input_estimate_tokens"))
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
    arrived = report["stream"] is None or report["stream"]["usage_arrived"]
    filled = "input_source" in expected or "output_source" in expected or not arrived
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
    if "output_tokens_for_budgets" in expected:
        assert report["budget_usage"]["output_tokens"] == expected["output_tokens_for_budgets"], label
    if "speed" in expected:
        assert report["speed"] == expected["speed"], label
    if "billable_search_units" in expected:
        fee = report["breakdown"].get("fee:web_search", {"tokens": 0})
        assert fee["tokens"] == expected["billable_search_units"], label
    for name in ("budget_total_tokens", "total_tokens_for_budgets"):
        if name in expected:
            assert report["budget_total_tokens"] == expected[name], f"{label}: {name}"
    if "web_search_calls" in expected:
        assert report["usage"]["web_search_calls"] == expected["web_search_calls"], label
    if "service_tier_priced" in expected:
        assert report["service_tier"] == expected["service_tier_priced"], label
    if "service_tier_source" in expected:
        assert report["service_tier_source"] == expected["service_tier_source"], label
    if "resolved_price_key" in expected:
        assert report["price"]["model"] == expected["resolved_price_key"], label
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
    # every usage-cost and stream case, in every dialect, with its variants of the same kind
    wanted = {i for i, c in cases().items() if c["kind"] in ("usage-cost", "stream")}
    assert {label.split("/")[0] for label, _ in CASES} == wanted
    assert len(CASES) >= 30
