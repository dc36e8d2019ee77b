"""The ``redis://...?cluster=true`` ledger on a small Redis Cluster started by the tests (three
masters made with ``redis-cli --cluster create``): every key of a ledger shares one hash slot, so
each step is one atomic script; the contract's concurrency tests and its reference-model state
machine run against it unchanged."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.ledger import test_concurrency, test_lifecycle
from tests.ledger.backends import BACKENDS, BackendSpec, require_available
from tests.ledger.conftest import Backend
from tests.ledger.helpers import T0, cost_budget, event, usd
from tests.ledger.test_stateful import build_machine
from tests.scale.services import RedisClusterNodes
from tokenward.clock import ManualClock
from tokenward.core.budgets import Subject
from tokenward.ledger import open_ledger
from tokenward.ledger.redis.lua import KEY_NAMES

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server / redis-cli not installed: cannot start a local cluster")
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def _spec(cluster: RedisClusterNodes) -> BackendSpec:
    def make_url(tmp: Path) -> str:
        prefix = f"tw_c{uuid.uuid4().hex[:12]}"
        return f"{cluster.url}?cluster=true&reap_every=0&prefix={prefix}&spool={tmp / f'{prefix}.spool'}&events=sqlite:///{tmp / f'{prefix}.db'}"

    return BackendSpec("redis-cluster", make_url, shared_store=True)


@pytest.fixture
def backend(cluster: RedisClusterNodes, tmp_path: Path) -> Iterator[Backend]:
    spec = _spec(cluster)
    opened = Backend(spec, spec.make_url(tmp_path), ManualClock(T0))
    yield opened
    opened.close()


def test_every_key_of_a_ledger_is_in_one_slot_and_several_slots_are_used(
    cluster: RedisClusterNodes, tmp_path: Path
) -> None:
    slots = set()
    for n in range(6):
        url = _spec(cluster).make_url(tmp_path / str(n))
        ledger = open_ledger(url, clock=ManualClock(T0))
        try:
            ledger.put_budget(cost_budget("team", "team", "5", "red"))
            reservation = ledger.reserve(Subject(team="red", user="a"), usd("1"))
            ledger.settle(reservation.id, event(Subject(team="red", user="a"), usd("0.5"), at=T0))
            keys = [f"{{{ledger.settings.prefix}}}:{name}" for name in KEY_NAMES]  # type: ignore[attr-defined]
            ledger_slots = {
                int(subprocess.run(
                    ["redis-cli", "-p", str(cluster.ports[0]), "cluster", "keyslot", key],
                    capture_output=True, text=True, check=True,
                ).stdout)
                for key in keys
            }  # fmt: skip
            assert len(ledger_slots) == 1
            slots |= ledger_slots
            assert [b.spent for b in ledger.balances(Subject(team="red"))] == [Decimal("0.5")]
            assert len(ledger.events()) == 1
        finally:
            ledger.close()
    assert len(slots) > 1  # ledgers with other prefixes land elsewhere in the cluster


def test_c39_on_the_cluster(backend: Backend) -> None:
    test_concurrency.test_c39_four_simultaneous_calls_admit_exactly_two(backend)


def test_many_threads_never_overspend_on_the_cluster(backend: Backend) -> None:
    test_concurrency.test_many_threads_never_overspend_and_the_totals_are_exact(backend)


def test_expired_reservations_are_reaped_on_the_cluster(backend: Backend) -> None:
    ledger = backend.open()
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    test_lifecycle.test_reap_releases_reservations_past_their_ttl(ledger, backend.clock)


def test_the_cluster_ledger_matches_the_reference_model(cluster: RedisClusterNodes, tmp_path: Path) -> None:
    require_available(BACKENDS["redis"])  # the same client library
    run_state_machine_as_test(
        build_machine(_spec(cluster), tmp_path),
        settings=settings(
            max_examples=15,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
