"""The backends the contract suite runs against.

Each backend is one entry of :data:`BACKENDS`; the ``backend`` fixture (``conftest.py``) and the
stateful test are parametrised over :data:`BACKEND_PARAMS`, one param per backend with a marker
of the same name (select with ``-m sqlite``, deselect with ``-m 'not memory'``).

Adding a service-backed ledger later (``redis://``, ``postgresql://``) is one more entry:

* ``make_url(tmp)`` returns the URL of a *fresh, empty* store (for a server: a dedicated database
  or key prefix, flushed first);
* ``unavailable()`` returns why the service cannot be used (``None`` when it can); the test is
  skipped with that reason, or fails when ``TOKENWARD_REQUIRE_SERVICES=1``;
* ``shared_store=True`` when two ledgers opened on the same URL see the same data (everything
  but ``memory://``), which the cross-connection tests need;
* and a marker of the same name in ``[tool.pytest.ini_options].markers``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["BACKENDS", "BACKEND_PARAMS", "BackendSpec", "require_available"]


def _always() -> str | None:
    return None


@dataclass(frozen=True)
class BackendSpec:
    """How to get a fresh store of one backend."""

    name: str
    make_url: Callable[[Path], str]
    shared_store: bool
    unavailable: Callable[[], str | None] = _always


BACKENDS: dict[str, BackendSpec] = {
    "memory": BackendSpec("memory", lambda tmp: "memory://", shared_store=False),
    "sqlite": BackendSpec("sqlite", lambda tmp: f"sqlite:///{tmp / 'ledger.db'}", shared_store=True),
    # "redis": BackendSpec("redis", _fresh_redis_url, shared_store=True, unavailable=_redis_down),
    # "postgresql": BackendSpec("postgresql", _fresh_pg_url, shared_store=True, unavailable=_pg_down),
}

BACKEND_PARAMS = [pytest.param(name, marks=getattr(pytest.mark, name), id=name) for name in BACKENDS]


def require_available(spec: BackendSpec) -> None:
    """Skip (or fail, with ``TOKENWARD_REQUIRE_SERVICES=1``) when the backend's service is down."""
    reason = spec.unavailable()
    if reason is None:
        return
    if os.environ.get("TOKENWARD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{spec.name} ledger required but unavailable: {reason}")
    pytest.skip(f"{spec.name} ledger unavailable: {reason}")
