"""Fixtures of the ledger contract suite: a fresh ledger of each backend on a manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ledger.backends import BACKEND_PARAMS, BACKENDS, BackendSpec, require_available
from tests.ledger.helpers import T0
from tokenward.clock import Clock, ManualClock
from tokenward.ledger import Ledger, open_ledger


class Backend:
    """One fresh store of one backend, and every ledger a test opened on it (closed at the end)."""

    def __init__(self, spec: BackendSpec, url: str, clock: ManualClock) -> None:
        self.spec = spec
        self.name = spec.name
        self.url = url
        self.clock = clock
        self._opened: list[Ledger] = []
        self._first: Ledger | None = None

    def open(self, clock: Clock | None = None) -> Ledger:
        """A ledger on this store (a new connection where the backend has connections)."""
        if not self.spec.shared_store and self._first is not None:
            return self._first  # memory://: the store is the object itself
        ledger = open_ledger(self.url, clock=clock or self.clock)
        self._opened.append(ledger)
        self._first = self._first or ledger
        return ledger

    def reader(self) -> Ledger:
        """A second ledger on the same store, for watching from another connection."""
        return self.open()

    def close(self) -> None:
        for ledger in self._opened:
            ledger.close()


@pytest.fixture
def clock() -> ManualClock:
    """The clock every ledger of a test reads; starts at :data:`T0`."""
    return ManualClock(T0)


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> Iterator[Backend]:
    """A fresh store of each backend."""
    spec = BACKENDS[request.param]
    require_available(spec)
    backend = Backend(spec, spec.make_url(tmp_path), clock)
    yield backend
    backend.close()
    spec.cleanup(backend.url)


@pytest.fixture
def ledger(backend: Backend) -> Ledger:
    """A ledger on a fresh store, on the manual clock."""
    return backend.open()
