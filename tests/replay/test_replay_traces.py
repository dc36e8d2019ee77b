"""Replaying the recorded Gemini 3 Pro run.

Expected figures are worked out here from the raw rows with Google's published prices for
``gemini-3-pro-preview`` (https://ai.google.dev/gemini-api/docs/pricing, prompts up to 200k
tokens: $2.00 per 1M input tokens, $0.20 per 1M cached input tokens, $12.00 per 1M output tokens,
thinking included), independently of tokenward's price lookup.
"""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from tests.support.shared import GEMINI_TRACES, require
from tokenward.cli.main import app
from tokenward.replay import ReplayReport, TraceCall, replay

M = Decimal(1_000_000)


def google_price(call: TraceCall) -> Decimal:
    usage = call.raw_usage
    prompt, out = usage["prompt_tokens"], usage["completion_tokens"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    assert prompt <= 200_000  # the recording never reaches the long-context tier
    return ((prompt - cached) * Decimal(2) + cached * Decimal("0.20") + out * Decimal(12)) / M


@pytest.fixture(scope="module")
def unbudgeted(gemini_calls: list[TraceCall]) -> ReplayReport:
    return replay(gemini_calls, keep_calls=True)


@pytest.mark.slow
def test_billed_calls_match_the_recorded_cost(unbudgeted: ReplayReport) -> None:
    billed = [r for r in unbudgeted.calls if r.call.recorded_cost_kind == "billed"]
    assert len(billed) == 19_584
    for result in billed:
        assert result.cost.total_usd is not None, result.call.line
        assert abs(result.cost.total_usd - result.call.recorded_cost_usd) <= Decimal("0.000001"), (
            result.call.line
        )
        assert result.cost.total_usd == google_price(result.call)
    ours = sum((r.cost.total_usd for r in billed), Decimal(0))
    recorded = sum((r.call.recorded_cost_usd for r in billed), Decimal(0))
    assert ours.quantize(Decimal("0.01")) == recorded.quantize(Decimal("0.01")) == Decimal("224.49")


@pytest.mark.slow
def test_every_call_is_admitted_without_budgets(
    unbudgeted: ReplayReport, gemini_calls: list[TraceCall]
) -> None:
    totals = unbudgeted.totals()
    assert totals["calls"] == totals["admitted_calls"] == len(gemini_calls) == 20_163
    assert totals["sessions"] == 500 and totals["unpriced_calls"] == 0
    assert totals["input_tokens"] == 333_047_929 and totals["cache_read_tokens"] == 279_065_308


@pytest.mark.slow
def test_session_cost_budget_through_the_cli(gemini_calls: list[TraceCall]) -> None:
    limit = Decimal("0.50")
    sessions: dict[str, list[TraceCall]] = defaultdict(list)
    for call in gemini_calls:
        sessions[call.session_id].append(call)
    expected_cuts = {}
    for session_id, calls in sessions.items():
        spent = Decimal(0)
        for i, call in enumerate(sorted(calls, key=lambda c: c.step)):
            cost = google_price(call) if call.recorded_cost_kind == "billed" else None
            if cost is None:
                break  # the Portkey sessions are checked through the report's own figures below
            if spent + cost > limit:
                later = sorted(calls, key=lambda c: c.step)[i:]
                expected_cuts[session_id] = (
                    call.step,
                    sum((google_price(c) for c in later), Decimal(0)),
                    call.session_resolved,
                )
                break
            spent += cost

    result = CliRunner().invoke(
        app, ["replay", str(require(GEMINI_TRACES)), "--budget", "session:cost_usd=0.50", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    cut = {s["session_id"]: s for s in report["sessions"] if s["cuts"]}
    for session_id, (step, saved, _) in expected_cuts.items():
        assert cut[session_id]["cuts"][0]["step"] == step
        assert Decimal(cut[session_id]["cuts"][0]["saved_cost_usd"]) == saved
        assert cut[session_id]["cuts"][0]["budget"] == "session:cost_usd=0.50"
    for session in report["sessions"]:
        admitted_cost = Decimal(session["cost_usd"]) - sum(
            (Decimal(c["saved_cost_usd"]) for c in session["cuts"]), Decimal(0)
        )
        assert admitted_cost <= limit
    totals = report["totals"]
    assert totals["sessions_cut"] == len(cut) >= len(expected_cuts) > 100
    assert totals["sessions_cut_resolved"] == sum(1 for s in cut.values() if s["resolved"] is True)
    assert totals["sessions_cut_resolved"] + totals["sessions_cut_unresolved"] == totals["sessions_cut"]


def test_replay_reports_a_bad_line_clearly(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"session_id": "s", "step": 1}\n')
    result = CliRunner().invoke(app, ["replay", str(bad)])
    assert result.exit_code == 2
    assert "bad.jsonl:1" in result.output and "Traceback" not in result.output


def test_replay_refuses_a_malformed_budget_spec(tmp_path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = CliRunner().invoke(app, ["replay", str(empty), "--budget", "session:cost_usd"])
    assert result.exit_code == 2 and "SCOPE" in result.output
