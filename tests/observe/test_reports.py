"""Reports on the imported real traces agree with sums computed here from the raw rows."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tokenward.core.pricebook import PriceBook, PriceContext
from tokenward.ledger import Ledger
from tokenward.observe.reports import (
    ab_test,
    chargeback,
    efficiency,
    evaluate,
    parse_slo,
    session_costs,
    session_steps,
    summarize,
    task_costs,
    write_table,
)
from tokenward.observe.rows import open_rows

pytestmark = pytest.mark.slow


def _raw_tokens(row: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input, cached, output, reasoning) of one raw row, by the traces README's rules."""
    usage = row["raw_usage"]
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    # Portkey rows report reasoning beside the completion (README, caveat 5)
    output = completion + reasoning if reasoning > completion else completion
    return prompt, cached, output, reasoning


def _raw_cost(row: dict[str, Any], book: PriceBook) -> Decimal:
    """Cost from the pinned table's rates, by the formula of the cases README (no tier crossed)."""
    prompt, cached, output, _ = _raw_tokens(row)
    assert prompt <= 200_000
    at = datetime.fromisoformat(
        row["timestamp"].replace("Z", "+00:00")
    )  # DeepSeek's price depends on the hour
    rates = book.resolve(row["model"], context=PriceContext(at=at)).rates  # type: ignore[union-attr]

    def rate(key: str) -> Decimal:
        value = rates[key]
        return Decimal(getattr(value, "base", value))

    return (
        (prompt - cached) * rate("input") + cached * rate("cache_read") + output * rate("output")
    ) / 1_000_000


@pytest.mark.parametrize("name", ["deepseek", "gemini"])
def test_chargeback_by_session_and_day_agrees_with_raw_sums(
    name: str, imported: dict[str, Ledger], raw_traces: dict[str, list[dict[str, Any]]]
) -> None:
    raw = raw_traces[name]
    book = PriceBook.default()
    by_session: dict[str, list[Any]] = defaultdict(lambda: [0, 0, 0, 0, Decimal(0), 0])
    by_day: dict[str, Decimal] = defaultdict(Decimal)
    for row in raw:
        prompt, cached, output, reasoning = _raw_tokens(row)
        cost = _raw_cost(row, book)
        s = by_session[row["session_id"]]
        s[0] += prompt
        s[1] += cached
        s[2] += output
        s[3] += reasoning
        s[4] += cost
        s[5] += 1
        by_day[row["timestamp"][:10]] += cost

    source = open_rows(imported[name])
    report = chargeback(source.scan(), ["session"])
    assert len(report.lines) == len(by_session)
    for line in report.lines:
        expected = by_session[line.key[0]]
        got = [
            line.input_tokens,
            line.cache_read_tokens,
            line.output_tokens,
            line.reasoning_tokens,
            line.cost_usd,
            line.calls,
        ]
        assert got == expected, line.key
    total = report.total
    assert total.calls == len(raw)
    assert total.input_tokens == sum(s[0] for s in by_session.values())
    assert total.cost_usd == sum((s[4] for s in by_session.values()), Decimal(0))
    assert total.unpriced_calls == 0

    daily = chargeback(source.scan(need={"tags"}), ["day", "tag:dataset"])
    assert {line.key[0]: line.cost_usd for line in daily.lines} == dict(by_day)
    assert {line.key[1] for line in daily.lines} == {name}
    assert [line.key[0] for line in daily.lines] == sorted(by_day)  # periods in time order


def test_published_token_totals(imported: dict[str, Ledger]) -> None:
    """The figures the traces README publishes."""
    gemini = chargeback(open_rows(imported["gemini"]).scan(), []).total
    assert (gemini.calls, gemini.input_tokens, gemini.cache_read_tokens) == (20_163, 333_047_929, 279_065_308)
    deepseek = chargeback(open_rows(imported["deepseek"]).scan(), ["model"])
    assert deepseek.total.input_tokens == 318_304_367 and deepseek.total.cache_read_tokens == 312_230_592
    assert deepseek.total.output_tokens == 3_169_899 and deepseek.total.reasoning_tokens == 89_747


def test_sessions_tasks_and_outcomes_agree_with_raw_rows(
    imported: dict[str, Ledger], raw_traces: dict[str, list[dict[str, Any]]]
) -> None:
    raw = raw_traces["gemini"]
    outcome = {r["session_id"]: r["session_resolved"] for r in raw}
    first = {}
    last = {}
    for r in raw:
        at = datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00"))
        first.setdefault(r["session_id"], at)
        last[r["session_id"]] = at
    sessions = session_costs(open_rows(imported["gemini"]).scan())
    assert {s: c.resolved for s, c in sessions.items()} == outcome
    summary = summarize(sessions.values())
    assert (summary["sessions"], summary["resolved"], summary["unresolved"]) == (500, 371, 129)
    assert summary["cost_per_resolved_usd"] == (summary["cost_usd"] / 371).quantize(Decimal("0.000001"))
    sid = "swebv-gemini3pro-20251118/django__django-11099"
    assert sessions[sid].duration_s == Decimal(int((last[sid] - first[sid]).total_seconds()))
    tasks = task_costs(sessions.values())
    assert len(tasks) == 500 and sum(t.resolved_sessions for t in tasks.values()) == 371

    steps = session_steps(open_rows(imported["gemini"]).scan(), sid)
    rows = [r for r in raw if r["session_id"] == sid]
    assert [s.step for s in steps] == [r["step"] for r in rows]
    assert steps[-1].cumulative_cost_usd == sessions[sid].cost_usd


def test_deepseek_tasks_repeat_across_runs(imported: dict[str, Ledger]) -> None:
    sessions = session_costs(open_rows(imported["deepseek"]).scan())
    tasks = task_costs(sessions.values())
    assert len(sessions) == 178 and len(tasks) < 178  # the dev tasks ran in several runs
    reasoner = [s for s in sessions.values() if s.session.startswith("deepseek_reasoner_dev/")]
    assert reasoner and all(s.resolved is None for s in reasoner)


def test_efficiency_and_slo_on_real_sessions(
    imported: dict[str, Ledger], raw_traces: dict[str, list[dict[str, Any]]]
) -> None:
    groups, total = efficiency(open_rows(imported["deepseek"]).scan(), ["model"])
    raw = raw_traces["deepseek"]
    prompt = sum(_raw_tokens(r)[0] for r in raw)
    cached = sum(_raw_tokens(r)[1] for r in raw)
    assert total.cached_share == (Decimal(cached) / prompt).quantize(Decimal("0.0001"))
    chat = next(g for g in groups if g.key == ("deepseek-chat",))
    assert chat.reasoning_share is None  # deepseek-chat reports no reasoning count: unknown, not 0
    assert total.tool_definition_share is None

    sessions = session_costs(open_rows(imported["gemini"]).scan())
    per_session_tokens = defaultdict(int)
    for r in raw_traces["gemini"]:
        prompt_, _, output, _ = _raw_tokens(r)
        per_session_tokens[r["session_id"]] += prompt_ + output
    (result,) = evaluate([parse_slo("95% of sessions under 1,300,000 tokens")], sessions.values())
    within = sum(1 for v in per_session_tokens.values() if v <= 1_300_000)
    assert (result.units, result.within) == (500, within)
    assert result.met is (Decimal(within) / 500 >= Decimal("0.95"))


def test_ab_under_an_equal_budget(imported: dict[str, Ledger]) -> None:
    rows = list(open_rows(imported["gemini"]).scan()) + list(open_rows(imported["deepseek"]).scan())
    rows.sort(key=lambda r: r.at)
    arms = {a.arm: a for a in ab_test(rows, "tag:dataset", meter="cost_usd", limit=Decimal("0.50"))}
    assert set(arms) == {"deepseek", "gemini"}
    g = arms["gemini"]
    assert (g.sessions, g.resolved) == (500, 371)
    ub = g.under_budget
    assert ub["cost_usd"] + ub["saved_usd"] == g.cost_usd
    assert 0 < ub["sessions_cut"] < 500 and ub["resolved"] < g.resolved
    # no budget: nothing cut
    plain_arms = ab_test(rows, "tag:dataset")
    assert all(not a.under_budget for a in plain_arms)


def test_formats_keep_money_exact(imported: dict[str, Ledger], tmp_path: Path) -> None:
    report = chargeback(open_rows(imported["deepseek"]).scan(), ["model"])
    table = report.table()
    expected = {line.key[0]: line.cost_usd for line in report.lines}

    buffer = io.StringIO()
    write_table(table, "csv", stream=buffer)
    parsed = {r["model"]: Decimal(r["cost_usd"]) for r in csv.DictReader(io.StringIO(buffer.getvalue()))}
    assert parsed == expected

    buffer = io.StringIO()
    write_table(table, "json", stream=buffer)
    data = json.loads(buffer.getvalue())
    assert {r["model"]: Decimal(r["cost_usd"]) for r in data["rows"]} == expected
    assert Decimal(data["totals"]["cost_usd"]) == report.total.cost_usd

    pq = pytest.importorskip("pyarrow.parquet")
    write_table(table, "parquet", tmp_path / "c.parquet")
    back = pq.read_table(tmp_path / "c.parquet").to_pylist()
    assert {r["model"]: r["cost_usd"] for r in back} == expected
    assert all(isinstance(r["cost_usd"], Decimal) for r in back)


@pytest.mark.slow
def test_sqlite_streaming_matches_the_ledger_api(
    imported: dict[str, Ledger], raw_traces: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The same DeepSeek import through SQLite, read row by row with SQLite's JSON functions."""
    import tokenward.cli.main  # noqa: F401
    from tests.support.shared import DEEPSEEK_TRACES
    from tokenward.cli.import_cmd import import_traces

    url = f"sqlite:///{tmp_path / 'ds.db'}"
    import_traces([DEEPSEEK_TRACES], url, tags={"dataset": "deepseek"})
    dims = ["task", "model", "tag:dataset", "day@Europe/Paris"]
    from_sqlite = chargeback(
        open_rows(url).scan(need={"tags", "cache_read_tokens", "reasoning_tokens"}), dims
    )
    from_memory = chargeback(open_rows(imported["deepseek"]).scan(), dims)
    assert from_sqlite.total.calls == len(raw_traces["deepseek"])
    assert [(x.key, x.calls, x.input_tokens, x.cost_usd) for x in from_sqlite.lines] == [
        (x.key, x.calls, x.input_tokens, x.cost_usd) for x in from_memory.lines
    ]
    since = datetime(2026, 4, 13, tzinfo=UTC)
    source = open_rows(url)
    assert source.count(since=since) == sum(
        1 for r in raw_traces["deepseek"] if r["timestamp"] >= "2026-04-13"
    )
    sessions = session_costs(source.scan(since=since, need={"resolved"}))
    assert all(s.first_at is not None and s.first_at >= since for s in sessions.values())
