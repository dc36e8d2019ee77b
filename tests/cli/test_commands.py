"""``replay --top``, ``cost`` on the shipped stream, start-up lines and other finishing touches."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tokenward.cli.main import app
from tokenward.ledger import open_ledger

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 4, 10, 9, 0, tzinfo=UTC)


def _traces(path: Path) -> None:
    """Three sessions of 5, 3 and 1 calls of 1,000 prompt and 100 output tokens each."""
    rows = []
    for session, calls, resolved in (("big", 5, False), ("mid", 3, True), ("small", 1, True)):
        for step in range(1, calls + 1):
            rows.append(
                {
                    "session_id": session,
                    "task_id": session,
                    "step": step,
                    "timestamp": (START + timedelta(minutes=len(rows))).isoformat(),
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "raw_usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
                    "session_resolved": resolved,
                    "response_id": f"{session}-{step}",
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_replay_top_lists_the_costliest_cut_sessions(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    _traces(traces)
    budget = "session:total_tokens=2500"  # two calls of 1,100 fit, the third is cut
    result = runner.invoke(app, ["replay", str(traces), "--budget", budget, "--top", "5"])
    assert result.exit_code == 0, result.output
    assert "the 2 costliest of 2 sessions cut" in result.output
    rows = [line.split("│")[1:-1] for line in result.output.splitlines() if re.match(r"│ (big|mid) ", line)]
    cells = [[c.strip() for c in row] for row in rows]
    assert [c[0] for c in cells] == ["big", "mid"]  # costliest first; "small" was never cut
    big, mid = cells
    assert big[1:5] == ["no", "5", big[3], "3"] and mid[1:5] == ["yes", "3", mid[3], "3"]
    assert big[5] == budget and mid[5] == budget
    # What the cut saves: 3 of big's 5 calls, 1 of mid's 3.
    per_call = float(big[3].lstrip("$")) / 5
    assert float(big[6].lstrip("$")) == pytest.approx(3 * per_call)
    assert float(mid[6].lstrip("$")) == pytest.approx(per_call)
    one = runner.invoke(app, ["replay", str(traces), "--budget", budget, "--top", "1"])
    assert "the 1 costliest of 2 sessions cut" in one.output and "│ mid " not in one.output


def test_replay_top_without_cuts(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    _traces(traces)
    result = runner.invoke(app, ["replay", str(traces), "--top", "3"])
    assert result.exit_code == 0 and "no session was cut: give a --budget" in result.output
    zero = runner.invoke(app, ["replay", str(traces), "--top", "0"])
    assert zero.exit_code == 2


def _readme_cost_command() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "--events examples/stream.json" in line)
    words = line.split()
    assert words[0] == "tokenward"
    return words[1:]


def test_the_readme_cost_command_works_on_the_shipped_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, _readme_cost_command())
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["usage"]["input_tokens"] == 6 and report["usage"]["output_tokens"] == 12
    assert report["stream"]["usage_arrived"] and report["stream"]["counted_output_tokens"] == 12
    assert report["cost_usd"] is not None


def test_the_shipped_stream_is_what_the_fake_provider_streams() -> None:
    """examples/stream.json is a recording of the fake provider (only ``created`` differs)."""
    from tokenward.fake import FakeSettings, create_app

    async def record() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(app=create_app(FakeSettings(reply_tokens=12, chunk_tokens=4)))
        body = {
            "model": "gpt-4o-mini",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Say hello"}],
        }
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://fake") as client,
            client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            return [
                json.loads(line[6:])
                async for line in response.aiter_lines()
                if line.startswith("data: ") and line != "data: [DONE]"
            ]

    shipped = json.loads((ROOT / "examples" / "stream.json").read_text())
    fresh = asyncio.run(record())
    assert [{**e, "created": 0} for e in shipped] == [{**e, "created": 0} for e in fresh]


def test_cost_says_not_reported_for_unknown_counts() -> None:
    usage = '{"prompt_tokens": 1200, "completion_tokens": 30}'  # no details: cached, reasoning unknown
    result = runner.invoke(
        app, ["cost", "--dialect", "openai-chat", "--model", "gpt-4o-mini", "--usage", usage]
    )
    assert result.exit_code == 0, result.output
    assert "None" not in result.output
    assert "input 1,200 (provider)" in result.output and "reasoning not reported" in result.output


def test_start_up_lines_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import tokenward.fake
    import tokenward.gateway.logs

    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: None)
    # No logging set up on the test runner's short-lived stderr (it would outlive this test).
    monkeypatch.setattr(tokenward.gateway.logs, "configure_logging", lambda *a, **k: None)
    monkeypatch.setattr(tokenward.fake, "serve", lambda *a, **k: None)
    served = runner.invoke(
        app, ["serve", "--config", str(ROOT / "examples" / "tokenward.yaml"), "--workers", "1"]
    )
    assert served.exit_code == 0, served.output
    # Nothing before the server listens: its one line says it is ready (tests/gateway/test_readme_try_it.py).
    assert served.output.strip() == ""
    fake = runner.invoke(app, ["fake-provider", "--port", "9199"])
    assert fake.exit_code == 0, fake.output
    banner = [line for line in fake.output.splitlines() if line.strip()]
    assert len(banner) == 1 and banner[0].startswith("fake provider on http://127.0.0.1:9199")
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings"):
        assert path in banner[0]
    for path in ("/v1/messages,", "/v1/messages/count_tokens", ":generateContent", ":streamGenerateContent"):
        assert path in banner[0]


def test_a_utilisation_chart_without_budgets_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).close()
    image = tmp_path / "budgets.png"
    result = runner.invoke(app, ["report", "chart", "utilisation", "--ledger", url, "-o", str(image)])
    assert result.exit_code == 1
    assert "no budgets to chart" in result.output and not image.exists()
