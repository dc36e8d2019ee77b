"""Prometheus series of several processes sharing ``PROMETHEUS_MULTIPROC_DIR`` (``serve --workers N``).

Real spawned processes, each with a Prometheus observer on a guard over one shared SQLite ledger
file; a third process scrapes. Expected values are worked out by hand from the events charged.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sqlite3
import subprocess
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

from tests.observe.helpers import T0, event
from tokenward.core.budgets import Budget
from tokenward.errors import ConfigError
from tokenward.guard import Guard
from tokenward.ledger import open_ledger
from tokenward.observe import Prometheus
from tokenward.observe.multiprocess import GAUGES_FILE, SharedBudgetGauges, shared_metrics_dir

LIMIT = 10_000
PER_EVENT = 100 + 10  # event(): 100 input and 10 output tokens


def _charge(ledger_url: str, tag: str, sessions: list[str], lags: list[float], max_series: int) -> None:
    """In a spawned process: one call per entry of ``sessions``, then the settle lags."""
    prom = Prometheus(background=False, max_budget_series=max_series)
    guard = Guard(open_ledger(ledger_url), observers=[prom])
    prom.bind(guard.ledger)
    for i, session in enumerate(sessions):
        guard.charge(event(f"{tag}-{i}", T0, session=session))
    for lag in lags:
        prom.observe_settle_lag(lag)
    prom.close()
    guard.ledger.close()


def _scrape(out: str, max_series: int = 1000) -> None:
    """In a spawned process: what its /metrics would serve."""
    Path(out).write_bytes(Prometheus(background=False, max_budget_series=max_series).exposition())


def _run(target: Any, *args: Any) -> None:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join(60)
    assert process.exitcode == 0


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"{key} exported twice"
            out[key] = sample.value
    return out


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A multiprocess directory for the processes this test spawns, and the ledger's URL."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    ledger.put_budget(Budget("per-session", "session", "total_tokens", Decimal(LIMIT)))
    ledger.close()
    return url


def _budget(session: str) -> frozenset[tuple[str, str]]:
    return frozenset(
        {
            "budget": "per-session",
            "scope": "session",
            "subject_id": session,
            "meter": "total_tokens",
            "window": "none",
        }.items()
    )


def test_counters_and_histogram_add_up_and_gauges_keep_the_latest_reading(
    tmp_path: Path, shared: str
) -> None:
    _run(_charge, shared, "a", ["s-1", "s-1", "s-1"], [0.00005, 0.003], 1000)
    _run(_charge, shared, "b", ["s-1", "s-1", "s-2"], [0.2, 20.0], 1000)  # after a: its readings are later
    out = tmp_path / "scrape.txt"
    _run(_scrape, str(out))
    samples = _samples(out.read_text())
    ok = frozenset({"model": "gpt-4o-mini", "status": "ok"}.items())
    assert samples[("tokenward_calls_total", ok)] == 6
    assert (
        samples[("tokenward_tokens_total", frozenset({"model": "gpt-4o-mini", "type": "input"}.items()))]
        == 600
    )
    lag = {le: samples[("tokenward_settle_lag_seconds_bucket", frozenset({"le": le}.items()))] for le in
           ("0.0001", "0.00025", "0.005", "0.1", "0.25", "10.0", "+Inf")}  # fmt: skip
    assert lag == {"0.0001": 1, "0.00025": 1, "0.005": 2, "0.1": 2, "0.25": 3, "10.0": 3, "+Inf": 4}
    assert samples[("tokenward_settle_lag_seconds_count", frozenset())] == 4
    assert samples[("tokenward_settle_lag_seconds_sum", frozenset())] == pytest.approx(20.20305)
    # s-1: five calls in all; b read the ledger last, after all five: 550 spent. a's last reading
    # (330 spent, 9670 remaining) is older: a "max" rule would keep its 9670 remaining.
    assert samples[("tokenward_budget_spent", _budget("s-1"))] == 5 * PER_EVENT
    assert samples[("tokenward_budget_remaining", _budget("s-1"))] == LIMIT - 5 * PER_EVENT
    assert samples[("tokenward_budget_utilisation_ratio", _budget("s-1"))] == 5 * PER_EVENT / LIMIT
    assert samples[("tokenward_budget_limit", _budget("s-2"))] == LIMIT
    assert samples[("tokenward_budget_spent", _budget("s-2"))] == PER_EVENT
    assert samples[("tokenward_budget_held", _budget("s-2"))] == 0


def test_budget_series_are_bounded_across_processes(tmp_path: Path, shared: str) -> None:
    _run(_charge, shared, "a", ["a-0", "a-1", "a-2", "a-3"], [], 3)
    _run(_charge, shared, "b", ["b-0", "b-1"], [], 3)
    out = tmp_path / "scrape.txt"
    _run(_scrape, str(out), 3)
    families = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    for name in ("tokenward_budget_spent", "tokenward_budget_limit", "tokenward_budget_remaining"):
        assert {s.labels["subject_id"] for s in families[name].samples} == {"a-3", "b-0", "b-1"}


def test_the_shared_table_keeps_the_later_reading_and_trims_itself(tmp_path: Path) -> None:
    gauges = SharedBudgetGauges(str(tmp_path), max_series=10)
    labels = ("b", "session", "s", "total_tokens", "none")
    gauges.put([(labels, (100.0, 30.0, 0.0, 70.0, 0.3))], at=2.0)
    gauges.put([(labels, (100.0, 20.0, 0.0, 80.0, 0.2))], at=1.0)  # read earlier, written later
    assert gauges.latest() == [(list(labels), (100.0, 30.0, 0.0, 70.0, 0.3))]
    for i in range(510):  # 512 writes in all: trimmed at the 256th and the 512th
        gauges.put(
            [(("b", "session", f"s-{i}", "total_tokens", "none"), (1.0, 0.0, 0.0, 1.0, 0.0))], at=10.0 + i
        )
    assert [row[0][2] for row in gauges.latest()] == [f"s-{i}" for i in range(509, 499, -1)]
    gauges.close()
    with sqlite3.connect(tmp_path / GAUGES_FILE) as db:
        assert db.execute("SELECT count(*) FROM budget_gauges").fetchone() == (10,)


def test_settle_lag_in_one_process() -> None:
    prom = Prometheus(background=False)
    assert prom.scrape_registry is prom.registry  # no multiprocess directory in this process
    for seconds in (0.00009, 0.0001, 0.0004, 0.7, -0.001):  # a negative lag counts as 0
        prom.observe_settle_lag(seconds)
    samples = _samples(prom.exposition().decode())
    bucket = {le: samples[("tokenward_settle_lag_seconds_bucket", frozenset({"le": le}.items()))] for le in
              ("0.0001", "0.00025", "0.0005", "0.5", "1.0", "+Inf")}  # fmt: skip
    assert bucket == {"0.0001": 3, "0.00025": 3, "0.0005": 4, "0.5": 4, "1.0": 5, "+Inf": 5}
    assert samples[("tokenward_settle_lag_seconds_sum", frozenset())] == pytest.approx(0.70059)


def test_a_supervisors_directory_private_or_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor's side (:func:`shared_metrics_dir`), in this process."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    dead = subprocess.Popen(["true"])  # a pid that has exited
    dead.wait()
    orphan = tmp_path / f"tokenward-metrics-{dead.pid}-abc"  # its supervisor was killed
    live = tmp_path / f"tokenward-metrics-{os.getppid()}-abc"  # a running supervisor's
    for path in (orphan, live):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"")
    with shared_metrics_dir() as made:
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == made
        assert Path(made).parent == tmp_path and Path(made).name.startswith(
            f"tokenward-metrics-{os.getpid()}-"
        )
        assert not orphan.exists() and live.exists()
    assert not Path(made).exists() and "PROMETHEUS_MULTIPROC_DIR" not in os.environ

    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_7.db").write_bytes(b"")  # of an earlier run
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    with caplog.at_level(logging.WARNING, "tokenward.observe"), shared_metrics_dir() as used:
        assert used == str(given)
    assert given.exists() and os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(given)
    assert "1 series files of an earlier run" in caplog.text
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="is not a directory"), shared_metrics_dir():
        pass
