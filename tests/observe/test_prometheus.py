"""Prometheus series served by the gateway at /metrics, parsed with prometheus_client's parser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

from tests.observe.helpers import T0, event, memory_guard
from tests.support.servers import serving
from tokenward.core.budgets import Budget
from tokenward.gateway import GatewayConfig, create_app
from tokenward.observe import Prometheus


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_series_from_guard_calls() -> None:
    prom = Prometheus(background=False)
    guard, _ = memory_guard(prom)
    prom.ledger = guard.ledger
    guard.ledger.put_budget(Budget("s-cap", "session", "total_tokens", Decimal(1000)))
    guard.charge(event("r1", T0, input_tokens=300, output_tokens=100, cost="0.25", cached=200))
    samples = _samples(prom.exposition().decode())
    assert _value(samples, "tokenward_spend_usd_total", model="gpt-4o-mini", provider="openai") == 0.25
    assert _value(samples, "tokenward_tokens_total", model="gpt-4o-mini", type="cache_read") == 200
    labels = {
        "budget": "s-cap",
        "scope": "session",
        "subject_id": "s-1",
        "meter": "total_tokens",
        "window": "none",
    }
    assert _value(samples, "tokenward_budget_spent", **labels) == 400
    assert _value(samples, "tokenward_budget_remaining", **labels) == 600
    assert _value(samples, "tokenward_budget_utilisation_ratio", **labels) == 0.4


def test_budget_series_are_bounded() -> None:
    prom = Prometheus(background=False, max_budget_series=3)
    guard, _ = memory_guard(prom)
    prom.ledger = guard.ledger
    guard.ledger.put_budget(Budget("each-session", "session", "total_tokens", Decimal(10_000)))
    for i in range(10):
        guard.charge(event(f"r{i}", T0, session=f"s-{i}"))
    families = {f.name: f for f in text_string_to_metric_families(prom.exposition().decode())}
    assert {s.labels["subject_id"] for s in families["tokenward_budget_spent"].samples} == {
        "s-7",
        "s-8",
        "s-9",
    }


@pytest.mark.slow
def test_gateway_serves_metrics_for_spend_denials_holds_and_cutoffs(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = GatewayConfig.from_mapping(
        {
            "ledger": ledger,
            "upstreams": [{"name": "fake", "provider": "fake"}],
            "keys": [{"key": "tw-k", "name": "k", "user": "alice", "project": "demo"}],
            "budgets": [{"name": "per-session", "scope": "session", "meter": "total_tokens", "limit": 200}],
        }
    )
    prom = Prometheus(ledger)
    with serving(create_app(config, observers=[prom], metrics=prom.asgi_app())) as server:
        headers = {"authorization": "Bearer tw-k", "x-tokenward-session": "s-1"}
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
            stream = {
                **body,
                "stream": True,
                "max_tokens": 5,
                "fake": {"reply_tokens": 40, "ignore_max_tokens": True},
            }
            assert client.post("/v1/chat/completions", json=stream, headers=headers).status_code == 200
            big = {**body, "messages": [{"role": "user", "content": "hello " * 400}]}
            assert client.post("/v1/chat/completions", json=big, headers=headers).status_code == 402
            prom.flush()
            response = client.get("/metrics")
    prom.close()
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert _value(samples, "tokenward_calls_total", model="gpt-4o-mini", status="ok") == 1
    assert _value(samples, "tokenward_cutoffs_total", model="gpt-4o-mini") == 1
    assert _value(samples, "tokenward_holds_total", model="gpt-4o-mini") == 2
    assert (
        _value(
            samples, "tokenward_denials_total", budget="per-session", scope="session", meter="total_tokens"
        )
        == 1
    )
    spend = [v for (name, labels), v in samples.items() if name == "tokenward_spend_usd_total"]
    assert spend and sum(spend) > 0  # labelled with the event's provider
    labels = {
        "budget": "per-session",
        "scope": "session",
        "subject_id": "demo/s-1",  # the key's project namespaces the session (tenancy)
        "meter": "total_tokens",
        "window": "none",
    }
    spent = _value(samples, "tokenward_budget_spent", **labels)
    assert 0 < spent <= 200
    assert _value(samples, "tokenward_budget_remaining", **labels) == 200 - spent
    assert _value(samples, "tokenward_budget_held", **labels) == 0
    assert _value(samples, "tokenward_budget_limit", **labels) == 200


@contextmanager
def _gauge_reads() -> Iterator[list[float]]:
    """When (``time.monotonic()``) the Prometheus thread began each of its transactions on a
    SQLite ledger opened inside the block: one per read of a subject's gauges."""
    import sqlite3
    import threading

    reads: list[float] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> Any:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(
            lambda sql: (
                reads.append(time.monotonic())
                if threading.current_thread().name == "tokenward-prometheus" and sql.startswith("BEGIN")
                else None
            )
        )
        return conn

    sqlite3.connect = traced  # type: ignore[assignment]
    try:
        yield reads
    finally:
        sqlite3.connect = connect  # type: ignore[assignment]


def _spent(prom: Prometheus, session: str) -> float:
    labels = {"scope": "session", "subject_id": session, "meter": "total_tokens", "window": "none"}
    return _value(_samples(prom.exposition().decode()), "tokenward_budget_spent", budget="s-cap", **labels)


def test_many_busy_subjects_are_read_at_most_max_refreshes_per_second_in_all(tmp_path: Path) -> None:
    """With many subjects each busy (a thousand sessions), a read per subject per second is a
    ledger read on nearly every call: the reads are capped in all, and :meth:`Prometheus.flush`
    still brings every subject's gauges up to date."""
    from tokenward.guard import Guard
    from tokenward.ledger.sqlite import SQLiteLedger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    prom = Prometheus(max_refreshes_per_second=4)
    try:
        with _gauge_reads() as reads:
            prom.bind(SQLiteLedger(url))
            guard = Guard(SQLiteLedger(url), observers=[prom])
            guard.ledger.put_budget(Budget("s-cap", "session", "total_tokens", Decimal(100_000)))
            began = time.monotonic()
            for i in range(30):
                guard.charge(
                    event(f"r{i}", T0, session=f"s-{i}", input_tokens=30, output_tokens=10, cost="0.01")
                )
            time.sleep(max(0.0, began + 1.0 - time.monotonic()))
            in_first_second = sum(1 for at in reads if at < began + 1.0)
            prom.flush()
    finally:
        prom.close()
    assert 1 <= in_first_second <= 5, in_first_second  # 4 a second (+1: the first is not waited)
    assert [_spent(prom, f"s-{i}") for i in range(30)] == [40] * 30  # flush read every subject


def test_a_busy_subjects_gauges_are_read_once_a_second_not_per_call(tmp_path: Path) -> None:
    """Issue 17: the gauges were read from the ledger after every admission and every settle,
    two balance reads per call; now at most one per subject per ``refresh_seconds``, and
    :meth:`Prometheus.flush` still shows the last call."""
    from tokenward.guard import Guard
    from tokenward.ledger.sqlite import SQLiteLedger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    prom = Prometheus(refresh_seconds=30)  # longer than the test: only the first read and flush's
    try:
        with _gauge_reads() as reads:
            prom.bind(SQLiteLedger(url))
            guard = Guard(SQLiteLedger(url), observers=[prom])
            guard.ledger.put_budget(Budget("s-cap", "session", "total_tokens", Decimal(100_000)))
            for i in range(50):
                guard.charge(event(f"r{i}", T0, input_tokens=30, output_tokens=10, cost="0.01"))
            prom.flush()
    finally:
        prom.close()
    assert 1 <= len(reads) <= 2, reads  # was 50 (one per charge)
    assert _spent(prom, "s-1") == 50 * 40


def _spent_or_none(prom: Prometheus, session: str) -> float | None:
    try:
        return _spent(prom, session)
    except KeyError:  # no gauge for this session: never read
        return None


def test_a_subject_whose_refresh_was_dropped_is_refreshed_by_its_next_call(tmp_path: Path) -> None:
    """The worker's queue is full (new sessions faster than gauge reads): a subject's refresh is
    dropped. It was remembered as waiting all the same, so its later calls were never queued
    (gauges stale for ever) and the waiting subjects grew without bound. Now a dropped subject is
    not remembered: its next call queues it, and no more subjects wait than the queue holds."""
    import threading

    from tokenward.guard import Guard
    from tokenward.ledger.sqlite import SQLiteLedger

    gate = threading.Event()  # the Prometheus thread's ledger reads wait for it
    reading = threading.Event()  # set once the Prometheus thread is inside a read

    class GatedLedger(SQLiteLedger):
        def balances(self, subject: Any, at: Any = None) -> Any:
            reading.set()
            gate.wait(30)
            return super().balances(subject, at)

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    prom = Prometheus(max_queue=3, max_refreshes_per_second=1000)
    try:
        prom.bind(GatedLedger(url))
        guard = Guard(SQLiteLedger(url), observers=[prom])
        guard.ledger.put_budget(Budget("s-cap", "session", "total_tokens", Decimal(100_000)))

        def call(request_id: str, session: str) -> None:
            guard.charge(event(request_id, T0, session=session, input_tokens=30, output_tokens=10))

        call("r0", "s-0")
        assert reading.wait(30)  # s-0 is being read and the queue is empty
        for i in range(1, 10):  # s-1..s-3 fill the queue, s-4..s-9 are dropped
            call(f"r{i}", f"s-{i}")
        waiting = len(prom._pending)
        gate.set()
        prom.flush()
        dropped_before = _spent_or_none(prom, "s-4")
        call("r10", "s-4")  # s-4's next call
        prom.flush()
    finally:
        gate.set()
        prom.close()
    assert prom._worker is not None and prom._worker.dropped == 6
    assert [_spent_or_none(prom, f"s-{i}") for i in range(4)] == [40] * 4
    assert dropped_before is None
    assert (waiting, _spent_or_none(prom, "s-4")) == (3, 80)  # was (9, None): stale for ever
