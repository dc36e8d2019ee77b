"""``tokenward serve --workers N`` (issue 17): every worker enforces the same budgets through the
shared ledger, a reload reaches every worker, SIGTERM drains them all, ``memory://`` is refused.

Issue 14's promise tests run against two workers here: the burst on a budget worth exactly ten
calls (:mod:`tests.gateway.test_admission_wait`, same arithmetic), SIGHUP/SIGTERM with an open
stream (:mod:`tests.gateway.test_gateway_process`) and SIGKILL with streams open
(:mod:`tests.gateway.test_crash_recovery`), each of the last two parametrized with ``workers``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.support.servers import free_port, serve_gateway
from tokenward.cli.main import app
from tokenward.core.budgets import Subject
from tokenward.ledger.sqlite import SQLiteLedger

pytestmark = pytest.mark.slow

# as in test_admission_wait: "Say hello" is 6 tokens to the fake, estimated 9; the fake answers 20
PER_CALL = 6 + 20
HOLD = 9 + 20
LIMIT = 9 * PER_CALL + HOLD  # 263: the tenth call's hold just fits after nine settled
BURST = 100


def test_more_than_one_worker_on_a_memory_ledger_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "ledger": "memory://",
                "upstreams": [{"name": "f", "provider": "fake"}],
                "keys": [{"key": "tw-a", "name": "a"}],
            }
        )
    )
    result = CliRunner().invoke(app, ["serve", "--config", str(config), "--workers", "2"])
    assert result.exit_code == 2
    assert "memory://" in result.output and "--workers 1" in result.output
    assert "Traceback" not in result.output
    zero = CliRunner().invoke(app, ["serve", "--config", str(config), "--workers", "0"])
    assert zero.exit_code == 2 and "--workers must be 1 or more" in zero.output


def _burst_config(tmp_path: Path, fake_url: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        json.dumps(
            {
                "ledger": "sqlite:///ledger.db",
                "upstreams": [
                    {
                        "name": "fake",
                        "provider": "fake",
                        "base_url": fake_url,
                        "api_key_env": "FAKE_UPSTREAM_KEY",
                    }
                ],
                "keys": [{"key": "tw-one", "name": "one", "user": "alice"}],
                "budgets": [
                    {"name": "ten-calls", "scope": "session", "meter": "total_tokens", "limit": LIMIT}
                ],
                "defaults": {"min_output_tokens": 20, "admission_wait_seconds": 10},
            }
        )
    )
    return path


async def _burst(port: int) -> list[int]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 20}
    headers = {
        "authorization": "Bearer tw-one",
        "x-tokenward-session": "burst",
        "x-fake-options": json.dumps({"latency_ms": 50}),
    }
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits) as client:

        async def one() -> int:
            return (await client.post("/v1/chat/completions", json=body, headers=headers)).status_code

        return list(await asyncio.gather(*(one() for _ in range(BURST))))


def test_two_workers_admit_exactly_what_a_budget_of_ten_calls_pays_for(tmp_path: Path, fake) -> None:
    config = _burst_config(tmp_path, fake.url)
    port, log = free_port(), tmp_path / "gateway.log"
    proc = serve_gateway(config, port, log, workers=2)
    try:
        statuses = asyncio.run(_burst(port))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sorted(set(statuses)) == [200, 402], statuses
    assert statuses.count(200) == 10, f"{statuses.count(200)} admitted"
    ledger = SQLiteLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        (balance,) = ledger.balances(Subject(session="burst"))
        assert balance.held == 0
        assert balance.spent == 10 * PER_CALL
        events = ledger.events(subject=Subject(session="burst"))
        assert len(events) == 10 and all(e.usage.output_tokens == 20 for e in events)
    finally:
        ledger.close()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    serving = {line["pid"] for line in lines if line.get("logger") in ("tokenward.calls", "uvicorn.access")}
    assert len(serving) == 2, "both workers answered calls of the burst"
    assert log.read_text().count("tokenward gateway ready on") == 1  # said once, by the first worker
