"""``/metrics`` of ``tokenward serve --workers 2`` counts the calls of every worker (issue 17).

A scrape reaches one worker, whichever accepts the connection. Each worker used to keep a
registry of its own, so a scrape showed that worker's share of the calls, and the counters went
back and forth between scrapes. Here real worker processes share a SQLite ledger file, calls are
spread over both, and every scrape must show all of them; a worker killed with ``kill -9`` and
started again by the supervisor must not lose or double the calls counted before.

Expected values are worked out from the fake provider's answers, not from the code: "Say hello"
is 6 prompt tokens to the fake and it answers ``max_tokens`` = 20 words, so a call uses 26 tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import free_port, serve_gateway

pytestmark = pytest.mark.slow

PER_CALL = 6 + 20
LIMIT = 100_000
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 20}
BUDGET = {"budget": "per-session", "scope": "session", "subject_id": "scraped", "meter": "total_tokens"}


def _config(tmp_path: Path, fake_url: str) -> Path:
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
                    {"name": "per-session", "scope": "session", "meter": "total_tokens", "limit": LIMIT}
                ],
            }
        )
    )
    return path


async def _calls(port: int, n: int) -> list[int]:
    """``n`` calls at once, each on a connection of its own (so the workers share them)."""
    headers = {"authorization": "Bearer tw-one", "x-tokenward-session": "scraped"}
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits) as client:

        async def one() -> int:
            return (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status_code

        return list(await asyncio.gather(*(one() for _ in range(n))))


def _calls_on_both(port: int, log: Path, batch: int) -> int:
    """Batches of ``batch`` calls at once until both workers answered some (which worker accepts
    a connection is the kernel's choice: one can take a whole batch); returns the calls made."""
    made = 0
    for _ in range(20):
        assert asyncio.run(_calls(port, batch)) == [200] * batch
        made += batch
        if len(_pids(log, "/v1/chat/completions")) == 2:
            return made
    raise AssertionError(f"one worker answered all {made} calls")


def _scrape(port: int) -> dict[str, Any]:
    """One scrape on a new connection: the calls counted (all statuses), the settle-lag
    histogram's count, and the session budget's spent gauge (None when absent)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, headers={"connection": "close"}).text
    calls, lag_count, spent = 0.0, None, None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "tokenward_calls_total":
                calls += s.value
            elif s.name == "tokenward_settle_lag_seconds_count":
                lag_count = s.value
            elif s.name == "tokenward_budget_spent" and all(s.labels.get(k) == v for k, v in BUDGET.items()):
                spent = s.value
    return {"calls": calls, "lag_count": lag_count, "spent": spent}


def _pids(log: Path, path: str, since: int = 0) -> set[int]:
    """Pids of the workers whose access lines name ``path``, from the log's line ``since`` on."""
    lines = [json.loads(line) for line in log.read_text().splitlines()[since:] if line.startswith("{")]
    return {
        line["pid"] for line in lines if line.get("logger") == "uvicorn.access" and path in line["message"]
    }


def _until_started(log: Path, workers: int) -> None:
    """Wait until ``workers`` workers have started (the first to start answers the health check
    serve_gateway waits for; a loaded machine can take seconds to start the other)."""
    deadline = time.monotonic() + 60
    while log.read_text().count("Application startup complete") < workers:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _until_settled(port: int, calls: int, timeout: float = 20.0) -> dict[str, Any]:
    """Scrape until the counter shows ``calls`` and the spent gauge ``calls * PER_CALL`` (settling
    and the gauges' refresh run after the answer), or fail with the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        seen = _scrape(port)
        if seen["calls"] == calls and seen["spent"] == calls * PER_CALL:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"no scrape showed {calls} calls and {calls * PER_CALL} spent; last: {seen}")
        time.sleep(0.1)


def _every_scrape_shows(port: int, log: Path, calls: int) -> None:
    """At least ten scrapes, and until both workers answered one: each shows every call."""
    since = len(log.read_text().splitlines())
    scrapes = []
    for i in range(200):
        scrapes.append(_scrape(port))
        if i >= 9 and len(_pids(log, "/metrics", since)) == 2:
            break
    assert len(_pids(log, "/metrics", since)) == 2, "both workers answered scrapes"
    assert {s["calls"] for s in scrapes} == {calls}, scrapes
    assert {s["spent"] for s in scrapes} == {calls * PER_CALL}, scrapes


def _workers(supervisor: int) -> set[int]:
    """The supervisor's worker processes (its spawned children, not multiprocessing's resource
    tracker)."""
    with open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
        children = [int(p) for p in f.read().split()]
    workers = set()
    for pid in children:
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                workers.add(pid)
    return workers


def _metrics_dir(worker: int) -> Path:
    """The ``PROMETHEUS_MULTIPROC_DIR`` a worker runs with."""
    with open(f"/proc/{worker}/environ", "rb") as f:
        variables = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    return Path(variables[b"PROMETHEUS_MULTIPROC_DIR"].decode())


def test_every_scrape_counts_the_calls_of_both_workers(tmp_path: Path, fake, monkeypatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    port, log = free_port(), tmp_path / "gateway.log"
    proc = serve_gateway(_config(tmp_path, fake.url), port, log, workers=2)
    try:
        _until_started(log, 2)
        made = _calls_on_both(port, log, 40)
        _until_settled(port, made)
        _every_scrape_shows(port, log, made)
        directories = {_metrics_dir(worker) for worker in _workers(proc.pid)}
        assert len(directories) == 1  # one private directory of the supervisor's
        (directory,) = directories
        assert (
            directory.name.startswith("tokenward-metrics-") and len(list(directory.glob("counter_*.db"))) == 2
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not directory.exists()  # removed when the supervisor exits


def test_a_worker_killed_and_restarted_loses_and_doubles_no_count(tmp_path: Path, fake, monkeypatch) -> None:
    """``kill -9`` of a worker that answered calls: the supervisor starts another; the calls the
    dead one counted stay counted (prometheus-client keeps a dead process's counter file, and
    the collector adds every file), once, and the new worker's calls add to them. Here the user
    set ``PROMETHEUS_MULTIPROC_DIR``: the workers use it and it is kept."""
    given = tmp_path / "user-metrics"
    given.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    port, log = free_port(), tmp_path / "gateway.log"
    proc = serve_gateway(_config(tmp_path, fake.url), port, log, workers=2)
    try:
        _until_started(log, 2)
        made = _calls_on_both(port, log, 30)
        _until_settled(port, made)
        served = _pids(log, "/v1/chat/completions")
        victim = sorted(served)[0]
        assert victim in _workers(proc.pid)
        os.kill(victim, signal.SIGKILL)
        _until_started(log, 3)  # the replacement
        assert victim not in _workers(proc.pid) and len(_workers(proc.pid)) == 2
        assert {_metrics_dir(worker) for worker in _workers(proc.pid)} == {given}
        assert (given / f"counter_{victim}.db").exists()  # the dead worker's counts
        _every_scrape_shows(port, log, made)
        assert asyncio.run(_calls(port, 30)) == [200] * 30
        _until_settled(port, made + 30)
        _every_scrape_shows(port, log, made + 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(list(given.glob("counter_*.db"))) == 3  # kept: the user's directory
