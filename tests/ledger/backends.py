"""The backends the contract suite runs against.

Each backend is one entry of :data:`BACKENDS`; the ``backend`` fixture (``conftest.py``) and the
stateful test are parametrised over :data:`BACKEND_PARAMS`, one param per backend with a marker
of the same name (select with ``-m sqlite``, ``-m "redis or postgres"``, deselect with
``-m 'not memory'``).

A backend is:

* ``make_url(tmp)``: the URL of a *fresh, empty* store (for a server: a schema or key prefix of its
  own, named at random, on the shared server; service-backed ledgers spool under ``tmp``);
* ``unavailable()``: why the service cannot be used (``None`` when it can); the test is skipped
  with that reason, or fails when ``TOKENWARD_REQUIRE_SERVICES=1``;
* ``cleanup(url)``: drops what ``make_url`` made (a schema, a key prefix); anything a test did not
  clean up (the stateful test's examples) is dropped when the test process exits;
* ``shared_store=True`` when two ledgers opened on the same URL see the same data (everything
  but ``memory://``), which the cross-connection tests need;
* and a marker of the same name in ``[tool.pytest.ini_options].markers``.

The servers are the machine's shared ones (``TOKENWARD_TEST_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/test``; ``TOKENWARD_TEST_REDIS``, default
``redis://127.0.0.1:6379/0``): tests never stop, restart or flush them, only their own schema or
prefix.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

__all__ = [
    "BACKENDS",
    "BACKEND_PARAMS",
    "POSTGRES_URL",
    "REDIS_URL",
    "BackendSpec",
    "drop_postgres_schema",
    "drop_redis_prefix",
    "fresh_postgres_url",
    "fresh_redis_url",
    "postgres_down",
    "redis_down",
    "require_available",
]

POSTGRES_URL = os.environ.get("TOKENWARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TOKENWARD_TEST_REDIS", "redis://127.0.0.1:6379/0")

_made: dict[str, Callable[[str], None]] = {}  # URLs made and not yet cleaned up


def _always() -> str | None:
    return None


def _nothing(url: str) -> None:
    return None


@dataclass(frozen=True)
class BackendSpec:
    """How to get a fresh store of one backend."""

    name: str
    make_url: Callable[[Path], str]
    shared_store: bool
    unavailable: Callable[[], str | None] = _always
    cleanup: Callable[[str], None] = _nothing


@functools.cache
def postgres_down() -> str | None:
    """Why the shared PostgreSQL server cannot be used, or None."""
    try:
        import psycopg
    except ImportError:
        return 'psycopg is not installed (pip install "tokenward[postgres]")'
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"cannot reach {POSTGRES_URL}: {exc}"
    return None


@functools.cache
def redis_down() -> str | None:
    """Why the shared Redis server cannot be used, or None."""
    try:
        import redis
    except ImportError:
        return 'redis is not installed (pip install "tokenward[redis]")'
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=3)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        return f"cannot reach {REDIS_URL}: {exc}"
    return None


def _param(url: str, name: str) -> str:
    return parse_qs(urlsplit(url).query)[name][0]


def drop_postgres_schema(url: str) -> None:
    """Drop the schema a test's ``postgresql://`` URL names (and everything in it)."""
    import psycopg

    _made.pop(url, None)
    schema = _param(url, "schema")
    assert schema.startswith("tw_t"), schema  # never anything but a test's own schema
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def fresh_postgres_url(tmp: Path) -> str:
    """A ``postgresql://`` URL of a schema of its own (made on first open), spooling under ``tmp``."""
    url = f"{POSTGRES_URL}?schema=tw_t{uuid.uuid4().hex[:12]}&spool={tmp / 'pg-spool.db'}"
    _made[url] = drop_postgres_schema
    return url


def drop_redis_prefix(url: str) -> None:
    """Delete every Redis key of a test's ``redis://`` URL (its prefix), and its events store."""
    import redis

    _made.pop(url, None)
    prefix = _param(url, "prefix")
    assert prefix.startswith("tw_t"), prefix
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
    events = url.split("events=", 1)[1]
    if events.startswith("postgresql://"):
        drop_postgres_schema(events)


def fresh_redis_url(tmp: Path, *, events: str = "sqlite") -> str:
    """A ``redis://`` URL with a key prefix of its own, spooling under ``tmp``, its events in a
    SQLite file under ``tmp`` (``events="sqlite"``) or a PostgreSQL schema of its own
    (``events="postgres"``)."""
    prefix = f"tw_t{uuid.uuid4().hex[:12]}"
    if events == "postgres":
        store = f"{POSTGRES_URL}?schema={prefix}&spool={tmp / 'events-spool.db'}"
        _made[store] = drop_postgres_schema
    else:
        store = f"sqlite:///{tmp / f'{prefix}-events.db'}"
    # reap_every=0: expiry only where the contract says (at admissions and reap()), as the
    # reference model expects; background expiry is tested in tests/scale
    url = f"{REDIS_URL}?prefix={prefix}&reap_every=0&spool={tmp / f'{prefix}-spool.db'}&events={store}"
    _made[url] = drop_redis_prefix
    return url


@atexit.register
def _sweep() -> None:  # pragma: no cover - what a test left behind
    for url, drop in list(_made.items()):
        with contextlib.suppress(Exception):
            drop(url)


BACKENDS: dict[str, BackendSpec] = {
    "memory": BackendSpec("memory", lambda tmp: "memory://", shared_store=False),
    "sqlite": BackendSpec("sqlite", lambda tmp: f"sqlite:///{tmp / 'ledger.db'}", shared_store=True),
    "redis": BackendSpec(
        "redis", fresh_redis_url, shared_store=True, unavailable=redis_down, cleanup=drop_redis_prefix
    ),
    "postgres": BackendSpec(
        "postgres",
        fresh_postgres_url,
        shared_store=True,
        unavailable=postgres_down,
        cleanup=drop_postgres_schema,
    ),
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
