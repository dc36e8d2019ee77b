"""``tokenward import`` and ``tokenward report ...`` as a user runs them, on a small recording."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenward.cli.main import app
from tokenward.core.budgets import Budget
from tokenward.core.windows import Window
from tokenward.ledger import open_ledger

runner = CliRunner()
START = datetime(2026, 4, 10, 9, 0, tzinfo=UTC)


def _write_traces(path: Path) -> list[dict[str, object]]:
    """Three sessions of an OpenAI-compatible agent; s-loop repeats one step."""
    rows = []
    plan = {
        "run/a": (True, [(1000, 0, 50), (1400, 1000, 60), (1900, 1400, 70)]),
        "run/b": (False, [(800, 0, 40), (1300, 800, 45)]),
        "run/s-loop": (None, [(2000, 0, 30), (2000, 1900, 30), (2000, 1900, 30), (2000, 1900, 30)]),
    }
    for session, (resolved, calls) in plan.items():
        for step, (prompt, cached, completion) in enumerate(calls, start=1):
            at = START + timedelta(minutes=len(rows))
            rows.append(
                {
                    "source": "test",
                    "session_id": session,
                    "parent_session_id": None,
                    "agent_id": None,
                    "task_id": session.split("/")[1],
                    "step": step,
                    "timestamp": at.isoformat().replace("+00:00", "Z"),
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "raw_usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                        "prompt_tokens_details": {"cached_tokens": cached},
                    },
                    "recorded_cost_usd": 0.001,
                    "recorded_cost_kind": "computed",
                    "session_resolved": resolved,
                    "response_id": f"{session}-{step}",
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    traces = tmp_path / "traces.jsonl"
    _write_traces(traces)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = runner.invoke(app, ["import", str(traces), "--ledger", url, "--tag", "arm=baseline", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["calls"] == 9 and data["admitted_calls"] == 9
    return url


def test_import_is_idempotent(ledger: str, tmp_path: Path) -> None:
    again = runner.invoke(app, ["import", str(tmp_path / "traces.jsonl"), "--ledger", ledger, "--json"])
    assert again.exit_code == 0
    store = open_ledger(ledger)
    events = store.events()
    store.close()
    assert len(events) == 9
    assert {e.metadata.get("session_resolved") for e in events} == {True, False, None}
    assert all(dict(e.subject.tags) == {"arm": "baseline"} for e in events)


def test_chargeback_formats(ledger: str, tmp_path: Path) -> None:
    table = runner.invoke(app, ["report", "chargeback", "--ledger", ledger, "--by", "session"])
    assert table.exit_code == 0, table.output
    assert "run/s-loop" in table.output and "total: 9 calls" in table.output

    as_csv = runner.invoke(app, ["report", "chargeback", "--ledger", ledger, "--by", "tag:arm", "-f", "csv"])
    (row,) = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert row["tag:arm"] == "baseline" and row["calls"] == "9"
    prompt, cached = 1000 + 1400 + 1900 + 800 + 1300 + 4 * 2000, 1000 + 1400 + 800 + 3 * 1900
    assert int(row["input_tokens"]) == prompt
    # gpt-4o-mini in the pinned table: $0.15 / 1M input, $0.075 cached, $0.60 output
    expected = (
        (prompt - cached) * Decimal("0.15") + cached * Decimal("0.075") + 385 * Decimal("0.6")
    ) / 10**6
    assert Decimal(row["cost_usd"]) == expected

    out = tmp_path / "by-day.json"
    as_json = runner.invoke(
        app, ["report", "chargeback", "--ledger", ledger, "--by", "day", "-f", "json", "-o", str(out)]
    )
    assert as_json.exit_code == 0
    data = json.loads(out.read_text())
    assert data["rows"][0]["day"] == "2026-04-10" and data["totals"]["calls"] == 9

    parquet = tmp_path / "c.parquet"
    assert (
        runner.invoke(
            app, ["report", "chargeback", "--ledger", ledger, "-f", "parquet", "-o", str(parquet)]
        ).exit_code
        == 0
    )
    assert parquet.read_bytes()[:4] == b"PAR1"


def test_period_and_filters(ledger: str) -> None:
    since = (START + timedelta(minutes=5)).isoformat()
    result = runner.invoke(
        app, ["report", "chargeback", "--ledger", ledger, "--by", "session", "--since", since, "-f", "json"]
    )
    data = json.loads(result.output)
    assert data["totals"]["calls"] == 4 and [r["session"] for r in data["rows"]] == ["run/s-loop"]
    only_a = runner.invoke(
        app,
        [
            "report",
            "chargeback",
            "--ledger",
            ledger,
            "--where",
            "session=run/a",
            "--where",
            "tag:arm=baseline",
            "-f",
            "json",
        ],
    )
    assert json.loads(only_a.output)["totals"]["calls"] == 3


def test_sessions_steps_tasks(ledger: str) -> None:
    sessions = runner.invoke(app, ["report", "sessions", "--ledger", ledger, "-f", "json"])
    data = json.loads(sessions.output)
    assert {r["session"]: r["resolved"] for r in data["rows"]} == {
        "run/a": True,
        "run/b": False,
        "run/s-loop": None,
    }
    assert data["summary"]["resolved"] == 1 and data["summary"]["cost_per_resolved_usd"] is not None
    steps = runner.invoke(app, ["report", "sessions", "--ledger", ledger, "--session", "run/a", "-f", "json"])
    rows = json.loads(steps.output)["rows"]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert Decimal(rows[-1]["cumulative_cost_usd"]) == sum(Decimal(r["cost_usd"]) for r in rows)
    tasks = runner.invoke(app, ["report", "sessions", "--ledger", ledger, "--tasks"])
    assert tasks.exit_code == 0 and "cost_per_resolved_usd" in tasks.output


def test_slo_efficiency_ab_anomalies_burn(ledger: str, tmp_path: Path) -> None:
    slo = runner.invoke(
        app,
        [
            "report",
            "slo",
            "--ledger",
            ledger,
            "--slo",
            "60% of sessions under 5,000 tokens and 10 min",
            "-f",
            "json",
        ],
    )
    (row,) = json.loads(slo.output)["rows"]
    assert (row["units"], row["within"], row["met"]) == (3, 2, True)
    config = tmp_path / "slo.yaml"
    config.write_text("slos:\n  - {name: cheap-calls, target: 99%, per: call, max_cost_usd: 0.01}\n")
    by_file = runner.invoke(app, ["report", "slo", "--ledger", ledger, "--config", str(config), "-f", "json"])
    assert json.loads(by_file.output)["rows"][0]["within"] == 9

    eff = runner.invoke(app, ["report", "efficiency", "--ledger", ledger, "-f", "json"])
    (row,) = json.loads(eff.output)["rows"]
    assert Decimal(row["cached_share"]) == (Decimal(1000 + 1400 + 800 + 3 * 1900) / 14400).quantize(
        Decimal("0.0001")
    )
    assert row["tool_definition_share"] is None

    ab = runner.invoke(
        app,
        [
            "report",
            "ab",
            "--ledger",
            ledger,
            "--by",
            "tag:arm",
            "--budget",
            "total_tokens=3000",
            "-f",
            "json",
        ],
    )
    (arm,) = json.loads(ab.output)["rows"]
    assert arm["budget_sessions_cut"] == 2 and arm["budget_resolved"] == 0  # run/a is cut at its 3rd call

    anomalies = runner.invoke(
        app, ["report", "anomalies", "--ledger", ledger, "--kind", "loop", "-f", "json"]
    )
    findings = json.loads(anomalies.output)["findings"]
    assert [f["subject_id"] for f in findings] == ["run/s-loop"]

    burn = runner.invoke(app, ["report", "burn", "--ledger", ledger, "--scope", "session", "-f", "json"])
    assert json.loads(burn.output)["rows"][0]["session"] == "run/s-loop"


def test_utilisation_and_charts(ledger: str, tmp_path: Path) -> None:
    store = open_ledger(ledger)
    store.put_budget(Budget("per-session", "session", "total_tokens", Decimal(5000)))
    store.put_budget(Budget("daily-usd", "task", "cost_usd", Decimal("0.01"), window=Window("day")))
    store.close()
    at = (START + timedelta(hours=3)).isoformat()
    util = runner.invoke(app, ["report", "utilisation", "--ledger", ledger, "--at", at, "-f", "json"])
    rows = json.loads(util.output)["rows"]
    loop = next(r for r in rows if r["budget"] == "per-session" and r["subject_id"] == "run/s-loop")
    assert loop["spent"] == str(4 * 2030) and loop["utilisation_pct"] == "162.4"
    daily = next(r for r in rows if r["budget"] == "daily-usd")
    assert daily["projected"] is not None and daily["resets_at"] == "2026-04-11T00:00:00Z"

    for kind, name in (("spend", "spend.png"), ("top", "top.svg"), ("utilisation", "util.png")):
        extra = ["--at", at] if kind == "utilisation" else []
        result = runner.invoke(
            app, ["report", "chart", kind, "--ledger", ledger, "-o", str(tmp_path / name), *extra]
        )
        assert result.exit_code == 0, result.output
    assert (tmp_path / "spend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "util.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "top.svg").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "chargeback", "--by", "colour"], "unknown report dimension 'colour'"),
        (["report", "chargeback", "--since", "yesterday"], "is not a date or instant"),
        (["report", "chargeback", "-f", "xml"], "unknown format 'xml'"),
        (["report", "chargeback", "-f", "parquet"], "give a file with --output"),
        (["report", "slo", "--slo", "most sessions are fine"], "does not parse"),
        (["report", "chart", "pie", "-o", "x.png"], "unknown chart 'pie'"),
        (["report", "ab", "--by", "model", "--budget", "dollars=1"], "unknown meter"),
    ],
)
def test_mistakes_are_one_line_errors(ledger: str, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--ledger", ledger])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_a_missing_ledger_is_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "chargeback", "--ledger", f"sqlite:///{tmp_path / 'nope.db'}"])
    assert result.exit_code == 2 and "no such ledger file" in result.output


def test_missing_extras_name_the_install_command(
    monkeypatch: pytest.MonkeyPatch, ledger: str, tmp_path: Path
) -> None:
    import sys

    from tokenward.errors import MissingDependency
    from tokenward.observe import Prometheus, Telemetry

    for module, extra, build in (
        ("prometheus_client", "prometheus", lambda: Prometheus()),
        ("opentelemetry.trace", "otel", lambda: Telemetry()),
    ):
        monkeypatch.setitem(sys.modules, module, None)
        with pytest.raises(MissingDependency, match=rf'pip install "tokenward\[{extra}\]"'):
            build()
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    result = runner.invoke(
        app, ["report", "chargeback", "--ledger", ledger, "-f", "parquet", "-o", str(tmp_path / "x.parquet")]
    )
    assert result.exit_code == 2 and 'pip install "tokenward[parquet]"' in " ".join(result.output.split())
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(app, ["report", "chart", "top", "--ledger", ledger, "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and 'pip install "tokenward[charts]"' in " ".join(result.output.split())


def test_check_exits_1_when_an_objective_is_missed_or_a_budget_is_spent(ledger: str) -> None:
    """Issue 15 item 13: ``--check`` turns a report into a gate for CI and cron jobs. Sessions
    (from the recording): run/a 4,480 tokens, run/b 2,185, run/s-loop 8,120."""
    met = ["report", "slo", "--ledger", ledger, "--slo", "60% of sessions under 5,000 tokens", "--check"]
    result = runner.invoke(app, met)
    assert result.exit_code == 0, result.output  # 2 of 3 within: 66.67% >= 60%
    missed = ["report", "slo", "--ledger", ledger, "--slo", "90% of sessions under 5,000 tokens", "--check"]
    result = runner.invoke(app, missed)
    assert result.exit_code == 1
    assert (
        "check failed: SLO '90% of sessions under 5,000 tokens' missed: 2 of 3 sessions within (66.67% < 90%)"
        in (" ".join(result.output.split()))
    )
    assert runner.invoke(app, missed[:-1]).exit_code == 0  # without --check: a report, status 0

    anomalies = runner.invoke(app, ["report", "anomalies", "--ledger", ledger, "--check"])
    assert anomalies.exit_code == 1 and "check failed: loop in session 'run/s-loop'" in anomalies.output
    assert (
        runner.invoke(
            app, ["report", "anomalies", "--ledger", ledger, "--kind", "spike", "--check"]
        ).exit_code
        == 0
    )

    at = (START + timedelta(hours=3)).isoformat()
    utilisation = ["report", "utilisation", "--ledger", ledger, "--at", at, "--check"]
    store = open_ledger(ledger)
    store.put_budget(Budget("per-session", "session", "total_tokens", Decimal(10000)))
    store.close()
    assert runner.invoke(app, utilisation).exit_code == 0  # 8,120 of 10,000 at most
    store = open_ledger(ledger)
    store.put_budget(Budget("per-session", "session", "total_tokens", Decimal(5000)))
    store.close()
    result = runner.invoke(app, utilisation)
    assert result.exit_code == 1
    assert "budget 'per-session' (session 'run/s-loop') spent 8120 of 5000 total_tokens" in result.output
