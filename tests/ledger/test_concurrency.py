"""Many threads on one budget: a hard limit holds at every instant, and the totals are exact.

C39 from the cases file: limit 5.00, 4.752720 spent, four simultaneous reservations of 0.0884.
4.752720 + 2 x 0.0884 = 4.92952 fits; + 3 x 0.0884 = 5.01792 does not, so exactly two are admitted.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from decimal import Decimal

import pytest

from tests.ledger.conftest import Backend
from tests.ledger.helpers import D, cost_budget, event, spend, spent_held, usd
from tokenward.core.budgets import Budget, Subject
from tokenward.errors import BudgetExceeded
from tokenward.ledger import Ledger, Reservation


class Watcher:
    """Polls ``sample()`` from its own thread until stopped; remembers every sample."""

    def __init__(self, sample: Callable[[], Decimal]) -> None:
        self.sample = sample
        self.seen: list[Decimal] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.seen.append(self.sample())
            self.seen.append(self.sample())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error


def _run_threads(count: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def wrapped(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]


C39_SUBJECT = Subject(key="key-fx39")


def _c39_burst(
    backend: Backend, ledger: Ledger, rounds_name: str
) -> tuple[list[Reservation], list[BudgetExceeded]]:
    ledger.put_budget(cost_budget(rounds_name, "key", "5.00", "key-fx39"))
    spend(ledger, C39_SUBJECT, usd("4.752720"))
    reader = backend.reader()
    start = threading.Barrier(4)
    admitted: list[Reservation] = []
    denied: list[BudgetExceeded] = []

    def call(_: int) -> None:
        start.wait()
        try:
            admitted.append(ledger.reserve(C39_SUBJECT, usd("0.0884")))
        except BudgetExceeded as exc:
            denied.append(exc)

    def committed() -> Decimal:
        spent, held = spent_held(reader, C39_SUBJECT, rounds_name)
        return spent + held

    with Watcher(committed) as watcher:
        _run_threads(4, call)
    assert watcher.seen and max(watcher.seen) <= D("4.92952")
    return admitted, denied


def test_c39_four_simultaneous_calls_admit_exactly_two(backend: Backend) -> None:
    ledger = backend.open()
    for round_ in range(10):  # a fresh budget each round, to give the race several chances
        name = f"c39-{round_}"
        admitted, denied = _c39_burst(backend, ledger, name)

        assert (len(admitted), len(denied)) == (2, 2)
        assert spent_held(ledger, C39_SUBJECT, name) == (D("4.752720"), D("0.1768"))
        for exc in denied:  # denied only once both holds were in place
            assert (exc.used, exc.held, exc.requested) == (D("4.752720"), D("0.1768"), D("0.0884"))
        for reservation in admitted:
            ledger.settle(reservation.id, event(C39_SUBJECT, usd("0.0884"), at=ledger.clock.now()))
        assert spent_held(ledger, C39_SUBJECT, name) == (D("4.92952"), D("0"))
        ledger.delete_budget(name)


def test_c39_variant_an_admitted_call_fails_and_is_released(backend: Backend) -> None:
    ledger = backend.open()
    admitted, denied = _c39_burst(backend, ledger, "c39")
    assert (len(admitted), len(denied)) == (2, 2)
    ok, failed = admitted
    ledger.settle(ok.id, event(C39_SUBJECT, usd("0.0884"), at=ledger.clock.now()))
    assert ledger.release(failed.id) is True
    assert spent_held(ledger, C39_SUBJECT, "c39") == (D("4.84112"), D("0"))


@pytest.mark.slow
def test_many_threads_never_overspend_and_the_totals_are_exact(backend: Backend) -> None:
    """16 threads, 4 users of one team; each user 8.00, the team 25.00, calls of 0.05 to 2.00.

    Every call charges at most its hold, so spent + held must stay within both limits at every
    instant seen by an independent reader, and the final spend must equal the settled charges.
    """
    ledger = backend.open()
    ledger.put_budget(Budget("each-user", "user", "cost_usd", D("8.00")))
    ledger.put_budget(cost_budget("team-red", "team", "25.00", "red"))
    users = [Subject(team="red", user=f"u{i}") for i in range(4)]
    reader = backend.reader()
    lock = threading.Lock()
    charged_by_user = {str(u.user): D("0") for u in users}
    outcomes = {"admitted": 0, "denied": 0, "released": 0}

    def worker(index: int) -> None:
        rng = random.Random(index)
        subject = users[index % 4]
        for _ in range(40):
            hold = Decimal(rng.randint(5, 200)) / 100
            try:
                reservation = ledger.reserve(subject, usd(str(hold)))
            except BudgetExceeded:
                with lock:
                    outcomes["denied"] += 1
                continue
            if rng.random() < 0.2:
                ledger.release(reservation.id)
                with lock:
                    outcomes["released"] += 1
                continue
            charge = hold * rng.randint(0, 100) / 100
            ledger.settle(reservation.id, event(subject, usd(str(charge)), at=ledger.clock.now()))
            with lock:
                outcomes["admitted"] += 1
                charged_by_user[str(subject.user)] += charge

    def worst_excess() -> Decimal:
        """The largest (spent + held - limit) over the team and every user; <= 0 is within."""
        excess = [
            b.spent + b.held - b.budget.limit
            for u in users
            for b in reader.balances(u)
            if b.budget.name == "each-user"
        ]
        team = reader.balances(users[0])
        excess += [b.spent + b.held - b.budget.limit for b in team if b.budget.name == "team-red"]
        return max(excess)

    with Watcher(worst_excess) as watcher:
        _run_threads(16, worker)

    assert len(watcher.seen) > 1
    assert max(watcher.seen) <= 0
    assert outcomes["denied"] > 0  # the limits were really reached
    for user in users:
        assert spent_held(ledger, user, "each-user") == (charged_by_user[str(user.user)], D("0"))
    assert spent_held(ledger, users[0], "team-red") == (sum(charged_by_user.values()), D("0"))
