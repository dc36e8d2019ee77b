"""Ledgers, chosen by URL.

``open_ledger(url)`` imports a backend only when its URL is used:

* ``memory://``: in this process only;
* ``sqlite:///path/to/ledger.db``: the embedded default (``sqlite:///tokenward.db``, in the
  working directory, when nothing is configured);
* ``postgresql://user@host:port/db[?schema=NAME]``: the whole ledger in PostgreSQL
  (:mod:`.postgres`; extra ``postgres``);
* ``redis://host:port/db?events=URL``: holds and balances in Redis, usage events and records in the
  durable store ``URL`` names (:mod:`.redis`; extra ``redis``).

An unknown scheme is a :class:`~tokenward.errors.ConfigError` naming the known ones.

This package holds the contract and what the backends share (:mod:`.base`, :mod:`.records`,
:mod:`.rows`, :mod:`.steps`, :mod:`.primitives`, :mod:`.transactional`, :mod:`.failover`,
:mod:`.admin`, :mod:`.spool`); each backend (:mod:`.memory`, :mod:`.sqlite`, :mod:`.postgres`,
:mod:`.redis`) imports those and never another backend. Only this registry knows them all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from tokenward.clock import Clock
from tokenward.errors import ConfigError
from tokenward.ledger.base import DEFAULT_TTL, AsyncLedger, Hold, Ledger, Reservation, ThreadedAsyncLedger
from tokenward.ledger.records import (
    Adjustment,
    AuditEntry,
    BudgetInstance,
    Denial,
    KeyRecord,
    LeaseGroup,
    ShadowDenial,
    StopMarker,
    ThresholdEvent,
)

__all__ = [
    "DEFAULT_LEDGER_URL",
    "DEFAULT_TTL",
    "Adjustment",
    "AsyncLedger",
    "AuditEntry",
    "BudgetInstance",
    "Denial",
    "Hold",
    "KeyRecord",
    "LeaseGroup",
    "Ledger",
    "Reservation",
    "ShadowDenial",
    "StopMarker",
    "ThreadedAsyncLedger",
    "ThresholdEvent",
    "open_async_ledger",
    "open_ledger",
    "spool_path",
]

DEFAULT_LEDGER_URL = "sqlite:///tokenward.db"
"""The ledger used when none is configured: ``tokenward.db`` in the working directory."""


def _memory(url: str, clock: Clock | None) -> Ledger:
    from tokenward.ledger.memory import MemoryLedger

    return MemoryLedger(url, clock=clock)


def _sqlite(url: str, clock: Clock | None) -> Ledger:
    from tokenward.ledger.sqlite import SQLiteLedger

    return SQLiteLedger(url, clock=clock)


def _postgres(url: str, clock: Clock | None) -> Ledger:
    from tokenward.ledger.postgres import PostgresLedger

    return PostgresLedger(url, clock=clock)


def _redis(url: str, clock: Clock | None) -> Ledger:
    from tokenward.ledger.redis import RedisLedger

    return RedisLedger(url, open_store=open_ledger, clock=clock)


_BACKENDS: dict[str, Callable[[str, Clock | None], Ledger]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
    "redis": _redis,
    "rediss": _redis,
}


def open_ledger(url: str | None = None, *, clock: Clock | None = None) -> Ledger:
    """Open the ledger at ``url`` (default :data:`DEFAULT_LEDGER_URL`).

    Raises:
        ConfigError: an unknown scheme or malformed URL.
        LedgerError: the store cannot be opened.
    """
    url = url or DEFAULT_LEDGER_URL
    scheme = urlsplit(url).scheme.lower()
    factory = _BACKENDS.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in _BACKENDS)
        raise ConfigError(f"unknown ledger URL {url!r}; known schemes: {known}")
    return factory(url, clock)


def open_async_ledger(url: str | None = None, *, clock: Clock | None = None) -> AsyncLedger:
    """The async twin of :func:`open_ledger` (embedded backends run in worker threads)."""
    return ThreadedAsyncLedger(open_ledger(url, clock=clock))


def spool_path(url: str | None = None) -> Path | None:
    """The local spool file of the ledger at ``url`` (where writes its store could not take wait,
    and its quarantine: :mod:`tokenward.ledger.spool`), or None for ``memory://``.

    Raises:
        ConfigError: an unknown scheme or malformed URL.
    """
    url = url or DEFAULT_LEDGER_URL
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        from tokenward.ledger.sqlite.ledger import parse_sqlite_url

        return parse_sqlite_url(url).spool
    if scheme in ("postgresql", "postgres"):
        from tokenward.ledger.postgres import parse_pg_url

        return parse_pg_url(url).spool
    if scheme in ("redis", "rediss"):
        from tokenward.ledger.redis import parse_redis_url

        return parse_redis_url(url).spool
    if scheme == "memory":
        return None
    known = ", ".join(f"{s}://" for s in _BACKENDS)
    raise ConfigError(f"unknown ledger URL {url!r}; known schemes: {known}")
