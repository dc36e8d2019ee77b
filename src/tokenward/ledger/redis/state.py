"""The Redis ledger's plumbing: its URL, its connection and scripts, and what each process caches.

:class:`RedisState` is the base of :class:`~tokenward.ledger.redis.ledger.RedisLedger`: it runs the
scripts of :mod:`.lua` (translating driver errors into
:class:`~tokenward.errors.LedgerError` and :class:`~tokenward.errors.StoreUnavailable` at this one
boundary), keeps the budgets and stop markers cached by the revision counters Redis holds (a
script refuses to run on a stale copy: ``STALE``), rebuilds a lost state (``NOGEN``), lays out the
balance rows of a subject's budgets, and reads balances.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from tokenward.clock import Clock, utc
from tokenward.core.budgets import Budget, Subject, applicable
from tokenward.core.decide import Balance
from tokenward.core.events import UsageEvent
from tokenward.core.windows import parse_duration
from tokenward.errors import (
    BudgetExceeded,
    ConfigError,
    LedgerError,
    MissingDependency,
    StoreUnavailable,
)
from tokenward.ledger.admin import KeyIndex
from tokenward.ledger.base import Reservation
from tokenward.ledger.failover import (
    StoreFailure,
    StoreHealth,
    Worker,
    admit_unchecked,
    redact,
)
from tokenward.ledger.records import (
    StopMarker,
)
from tokenward.ledger.redis.units import field as row_field
from tokenward.ledger.redis.units import from_units, to_units
from tokenward.ledger.rows import (
    Rows,
    balance_of,
)
from tokenward.ledger.spool import Spool, default_spool_path
from tokenward.ledger.transactional import TransactionalLedger

try:
    import redis as redis_lib
    import redis.exceptions as redis_errors
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise MissingDependency("redis", "redis") from exc

__all__ = [
    "ATTEMPTS",
    "Again",
    "Layout",
    "Lost",
    "RedisSettings",
    "RedisState",
    "View",
    "micros",
    "parse_redis_url",
    "reservation_json",
    "reservation_of",
    "span_keys",
]

log = logging.getLogger("tokenward.ledger")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ATTEMPTS = 50  # re-runs of a step after a budget change, a rebuild or a lost race
_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,  # BusyLoadingError (a restarted Redis loading its data) included
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a replica answering after a fail-over
    redis_errors.ClusterDownError,  # MasterDownError included
    redis_errors.TryAgainError,
    redis_errors.MaxConnectionsError,
    OSError,
)
_MASTER_DOWN = ("MASTERDOWN", "LOADING", "READONLY", "CLUSTERDOWN", "TRYAGAIN")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """A parsed ``redis://`` ledger URL."""

    redis_url: str
    events_url: str
    prefix: str
    spool: Path
    timeout: float
    retention: timedelta
    cluster: bool
    reap_every: float = 10.0


def parse_redis_url(url: str) -> RedisSettings:
    """Split a ``redis://`` ledger URL into the Redis URL, the durable store's URL and options.

    Raises:
        ConfigError: no ``events=``, an events store that is not durable, or a bad option.
    """
    head, sep, events = url.partition("events=")
    if not sep or not events:
        raise ConfigError(
            f"{redact(url)!r}: a redis:// ledger needs events=<URL>, the durable store of usage events and "
            "records, as its last parameter: e.g. redis://127.0.0.1:6379/0?events=postgresql://user@host/db"
        )
    if "%3A" in events[:16].upper():
        events = unquote(events)
    if not events.startswith(("postgresql://", "postgres://", "sqlite:///")):
        raise ConfigError(
            f"{redact(url)!r}: events= must be a durable ledger URL (postgresql://... or sqlite:///...), "
            f"got {redact(events)!r}"
        )
    parts = urlsplit(head.rstrip("?&"))
    own = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(own) - {"prefix", "spool", "timeout", "retention", "cluster", "reap_every"}
    if unknown:
        raise ConfigError(f"{redact(url)!r}: unknown parameters {sorted(unknown)}")
    prefix = own.get("prefix", "tokenward")
    if not prefix or any(c in prefix for c in "{}") or not prefix.isprintable():
        raise ConfigError(f"{redact(url)!r}: prefix {prefix!r} must be non-empty, printable, without braces")
    cluster_flag = (own.get("cluster") or "false").lower()
    if cluster_flag not in ("true", "false"):
        raise ConfigError(f"{redact(url)!r}: cluster must be true or false, got {own['cluster']!r}")
    try:
        timeout = float(own.get("timeout") or 2)
        if not timeout > 0 or timeout == float("inf"):
            raise ValueError(f"timeout must be a positive number of seconds, got {own.get('timeout')!r}")
        retention = parse_duration(own.get("retention") or "7d")
        reap = own.get("reap_every") or "10s"
        reap_every = 0.0 if reap.strip() == "0" else parse_duration(reap).total_seconds()
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"{redact(url)!r}: {exc}") from None
    spool = Path(own["spool"]) if own.get("spool") else default_spool_path(url)
    cluster = cluster_flag == "true"
    redis_url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return RedisSettings(redis_url, events, prefix, spool, timeout, retention, cluster, reap_every)


def micros(at: datetime) -> int:
    """Microseconds since the Unix epoch."""
    return (utc(at) - _EPOCH) // timedelta(microseconds=1)


def reservation_json(r: Reservation) -> str:
    """The reservation as Redis keeps it (compact: the ``EXTEND`` script rewrites its
    ``"expires_at":"..."`` in place)."""
    return json.dumps({"id": r.id, **r.body(), "idempotency_key": r.idempotency_key}, separators=(",", ":"))


def reservation_of(text: str, state: str) -> Reservation:
    data = json.loads(text)
    return Reservation.from_body(
        data, id=data["id"], idempotency_key=data.get("idempotency_key"), state=state or "active"
    )


class Again(Exception):
    """The step must run again: the budgets changed, or the state was rebuilt."""


class Lost(Exception):
    """The Redis state is gone and the caller may not rebuild it (it holds the store lock)."""


@dataclass(frozen=True, slots=True)
class View:
    """What this process knows of the budgets and stop markers, with their revisions in Redis."""

    budgets_rev: str
    budgets: list[Budget]
    stops_rev: str
    stops: Mapping[tuple[str, str], StopMarker]


@dataclass
class Layout:
    """The balance rows of the budgets applying to a subject at an instant."""

    at: datetime
    pairs: list[tuple[Budget, str]]
    fields: list[str] = field(default_factory=list)
    spans: list[list[int]] = field(default_factory=list)  # per pair: 1-based indices into fields
    keys: list[tuple[str, str, str]] = field(default_factory=list)  # per field: its row key


def span_keys(budget: Budget, at: datetime) -> list[str]:
    """The window keys a balance of ``budget`` at ``at`` sums (one; a rolling window's buckets)."""
    window = budget.window
    if not window.rolling:
        return [window.key(at)]
    step = window.bucket
    return [window.key(at - i * step) for i in range(window.buckets, -1, -1)]


class RedisState:
    """Connection, scripts, caches and balance reads of a Redis ledger (see the module docstring)."""

    url: str
    clock: Clock
    settings: RedisSettings
    store: TransactionalLedger
    spool: Spool
    health: StoreHealth
    client: Any
    _keys: list[str]
    _scripts: dict[str, Any]
    _view_cache: View | None
    _keys_cache: tuple[str, KeyIndex] | None
    _last_refresh: float
    _drainer: Worker

    def _connect(self) -> Any:
        s = self.settings
        options: dict[str, Any] = {
            "socket_timeout": s.timeout,
            "socket_connect_timeout": s.timeout,
            "decode_responses": True,
            "retry": Retry(NoBackoff(), 1, supported_errors=(redis_errors.ConnectionError,)),
            "client_name": "tokenward",
        }
        try:
            if s.cluster:
                from redis.cluster import RedisCluster

                return RedisCluster.from_url(s.redis_url, **options)
            return redis_lib.Redis.from_url(s.redis_url, health_check_interval=30, **options)
        except (redis_errors.RedisError, redis_errors.RedisClusterException) as exc:
            if "cluster support disabled" in str(exc) or "Cluster mode is not enabled" in str(exc):
                raise ConfigError(
                    f"Redis ledger {redact(s.redis_url)}: cluster=true, but this Redis is not a cluster"
                ) from None
            raise StoreUnavailable(f"Redis ledger {redact(s.redis_url)}: cannot connect: {exc}") from exc

    def _translate(self, exc: Exception) -> LedgerError:
        where = f"Redis ledger {redact(self.settings.redis_url)}"
        message = str(exc)
        if isinstance(exc, _UNAVAILABLE) or message.startswith(_MASTER_DOWN):
            return StoreUnavailable(f"{where}: unreachable: {type(exc).__name__}: {exc}")
        return LedgerError(f"{where}: {type(exc).__name__}: {exc}")

    def _redis(self, call: Callable[[], Any]) -> Any:
        """Run one Redis command or pipeline, translating driver errors."""
        try:
            with self.health.attempt():
                result = call()
        except (redis_errors.RedisError, OSError) as exc:
            raise self._translate(exc) from exc
        if self.health.down:
            self.health.recovered(self.clock.now())
        return result

    def _script(
        self, name: str, view: View | None, *args: Any, now: datetime | None = None, rebuild: bool = True
    ) -> list[Any]:
        """Run a script with the common arguments; ``NOGEN`` and ``STALE`` become :class:`Again`
        after the state was rebuilt or the caches reloaded (``NOGEN`` becomes :class:`Lost`
        without ``rebuild``)."""
        head = [
            micros(now or self.clock.now()),
            int(self.settings.retention.total_seconds() * 1_000_000),
            view.budgets_rev if view is not None else "",
            view.stops_rev if view is not None else "",
        ]
        script = self._scripts[name]
        answer = self._redis(lambda: script(keys=self._keys, args=[*head, *args]))
        status = answer[0]
        if status == "NOGEN":
            if not rebuild:
                raise Lost
            self._rebuild()
            raise Again
        if status == "STALE":
            self._refresh(str(answer[1]), str(answer[2]))
            raise Again
        return list(answer)

    def _rebuild(self) -> None:
        """Build a lost Redis state again from the durable store (the ledger does it, with
        :func:`.drain.rebuild`)."""
        raise NotImplementedError

    def _wake(self) -> None:
        self._drainer.wake()

    def _revisions(self) -> tuple[str | None, str, str, str]:
        gen_key, rev_key = self._keys[0], self._keys[1]

        def read() -> Any:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(gen_key)
            pipe.hmget(rev_key, ["budgets", "stops", "keys"])
            return pipe.execute()

        gen, revs = self._redis(read)
        return gen, revs[0] or "0", revs[1] or "0", revs[2] or "0"

    def _view(self, rebuild: bool = True) -> View:
        view = self._view_cache
        if view is not None:
            return view
        for _ in range(ATTEMPTS):
            gen, budgets_rev, stops_rev, _ = self._revisions()
            if gen is None:
                if not rebuild:
                    raise Lost
                self._rebuild()
                continue
            view = View(budgets_rev, self._load_budgets(None), stops_rev, self._load_stops())
            self._view_cache = view
            return view
        raise LedgerError("Redis ledger: the state keeps disappearing")  # pragma: no cover

    def _load_budgets(self, old: list[Budget] | None) -> list[Budget]:
        try:
            return sorted(self.store.budgets(), key=lambda b: b.name)
        except LedgerError as exc:
            if old is None:
                raise StoreUnavailable(f"cannot read the budgets from the durable store: {exc}") from exc
            log.warning(
                "budgets changed but the durable store is unreachable (%s); using the cached ones", exc
            )
            self._last_refresh = 0.0  # retry soon, from the drainer
            return old

    def _load_stops(self) -> dict[tuple[str, str], StopMarker]:
        raw = self._redis(lambda: self.client.hgetall(self._keys[10]))
        markers = [StopMarker.from_dict(json.loads(v)) for v in raw.values()]
        return {(m.scope, m.subject_id): m for m in markers}

    def _refresh(self, budgets_rev: str, stops_rev: str) -> None:
        """Reload what changed since the cached view (the revisions Redis holds now)."""
        view = self._view_cache
        if view is None:
            return
        budgets = view.budgets if view.budgets_rev == budgets_rev else self._load_budgets(view.budgets)
        stops = view.stops if view.stops_rev == stops_rev else self._load_stops()
        self._view_cache = View(budgets_rev, budgets, stops_rev, stops)

    def _bump(self, name: str) -> None:
        """Tell every replica that ``name`` (budgets, keys) changed in the durable store."""
        try:
            self._redis(lambda: self.client.hincrby(self._keys[1], name, 1))
        except StoreUnavailable as exc:  # the drainer compares with the store and bumps again
            log.warning("could not announce a %s change to the other replicas: %s", name, exc)
            self._last_refresh = 0.0
        self._view_cache = None
        self._keys_cache = None

    def _layout(
        self, budgets: Sequence[Budget], subject: Subject, at: datetime, *, listing: bool = False
    ) -> Layout:
        pairs = applicable(budgets, subject, every_model=listing)
        layout = Layout(at, sorted(pairs, key=lambda p: (p[0].name, p[1])))
        index: dict[str, int] = {}
        for budget, sid in layout.pairs:
            positions = []
            for key in span_keys(budget, at):
                name = row_field(budget.name, sid, key)
                if name not in index:
                    layout.fields.append(name)
                    layout.keys.append((budget.name, sid, key))
                    index[name] = len(layout.fields)
                positions.append(index[name])
            layout.spans.append(positions)
        return layout

    @staticmethod
    def _rows(layout: Layout, values: Sequence[Any]) -> Rows:
        rows: Rows = {}
        for key, value in zip(layout.keys, values, strict=True):
            if value:
                spent, held = str(value).split(" ")
                rows[key] = (from_units(spent), from_units(held))
        return rows

    def _balances(self, layout: Layout, values: Sequence[Any]) -> list[Balance]:
        rows = self._rows(layout, values)
        return [balance_of(b, sid, layout.at, rows) for b, sid in layout.pairs]

    @staticmethod
    def _checks(layout: Layout, amounts: Mapping[str, Decimal]) -> list[Any]:
        """The script arguments checking every hard budget the amounts charge."""
        out: list[Any] = []
        count = 0
        for (budget, _), positions in zip(layout.pairs, layout.spans, strict=True):
            amount = amounts.get(budget.meter)
            if budget.mode != "hard" or not amount:
                continue
            count += 1
            out += [to_units(budget.limit, up=False), to_units(amount), len(positions), *positions]
        return [count, *out]

    @staticmethod
    def _denial(balances: Sequence[Balance], amounts: Mapping[str, Decimal]) -> BudgetExceeded:
        """The denial the script's check made, found again in the same units."""
        for balance in balances:
            amount = amounts.get(balance.budget.meter)
            if balance.budget.mode != "hard" or not amount:
                continue
            used = to_units(balance.spent) + to_units(balance.held) + to_units(amount)
            if used > to_units(balance.budget.limit, up=False):
                return balance.exceeded(amount)
        raise LedgerError("Redis ledger: a hold was refused but no budget is short")  # pragma: no cover

    def _read(self, view: View, fields: Sequence[str]) -> list[Any] | None:
        """The values of ``fields`` and whether ``view`` is current (None: it was not; reloaded)."""
        gen_key, rev_key, bal_key = self._keys[0], self._keys[1], self._keys[2]

        def read() -> Any:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(gen_key)
            pipe.hmget(rev_key, ["budgets", "stops"])
            if fields:
                pipe.hmget(bal_key, list(fields))
            return pipe.execute()

        answer = self._redis(read)
        if answer[0] is None:
            self._rebuild()
            return None
        budgets_rev, stops_rev = answer[1][0] or "0", answer[1][1] or "0"
        if (budgets_rev, stops_rev) != (view.budgets_rev, view.stops_rev):
            self._refresh(budgets_rev, stops_rev)
            return None
        return list(answer[2]) if fields else []

    def _retry_again(self, step: Callable[[], list[Any]]) -> list[Any]:
        for _ in range(ATTEMPTS):
            try:
                return step()
            except Again:
                continue
        raise LedgerError("Redis ledger: the state keeps changing")  # pragma: no cover

    def _settled(self, request_id: str) -> UsageEvent | None:
        """The event Redis recorded for ``request_id``, or None."""
        text = self._redis(lambda: self.client.hget(self._keys[8], request_id))
        return None if text is None else UsageEvent.from_dict(json.loads(text))

    def _apply_rows(self, key: str, record: Mapping[str, Any], charges: Sequence[Any]) -> bool:
        """Add signed spend to balance rows (``field, units`` pairs), once per ``key``; False when
        the state is gone (a rebuild takes the figures from the durable store)."""
        args = [key, json.dumps(record), "", "", len(charges) // 2, *charges, 0, 0, 0]
        try:
            self._retry_again(lambda: self._script("settle", None, *args, rebuild=False))
        except Lost:
            return False
        return True

    def _find_idempotent(self, key: str) -> Reservation | None:
        """The key's reservation while it is kept, else the answer of the call settled under it
        (:meth:`~tokenward.ledger.base.Reservation.answered`), else None."""
        rid = self._redis(lambda: self.client.hget(self._keys[7], key))
        if rid is not None:
            return self.reservation(rid)
        event = self._settled(key)
        return None if event is None else Reservation.answered(event)

    def reservation(self, reservation_id: str) -> Reservation | None:
        """A reservation by id while it is kept: None once settled or released (forgotten at
        once), an expired or reclaimed one forgotten after the retention."""
        res_key, rst_key = self._keys[3], self._keys[4]

        def read() -> Any:
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(res_key, reservation_id)
            pipe.hget(rst_key, reservation_id)
            return pipe.execute()

        text, state = self._redis(read)
        return None if text is None else reservation_of(text, state)

    def _failed(self, operation: str, outcome: str, exc: Exception, subject: Subject | None) -> None:
        self.health.failed(
            StoreFailure(self.clock.now(), self.health.store, operation, outcome, str(exc), (), subject)
        )
        self._wake()

    def _admit_unchecked(self, operation: str, subject: Subject, exc: StoreUnavailable) -> None:
        """Refuse (raise) unless every hard budget applying to ``subject`` fails open."""
        view = self._view_cache
        admit_unchecked(
            self.health,
            operation,
            subject,
            exc,
            view.budgets if view is not None else None,
            view.stops if view is not None else {},
            self.clock.now(),
        )

    def _record_alert(self, action: str, details: dict[str, Any]) -> None:
        self.spool.append("audit", {"action": action, "details": details, "target": self.health.store})
        drainer = getattr(self, "_drainer", None)
        if drainer is not None:
            drainer.wake()

    def balances(self, subject: Subject, at: datetime | None = None) -> list[Balance]:
        """Every budget instance applying to ``subject`` in the window containing ``at`` (now),
        sorted by budget name (per-model budgets too when ``subject`` names no model)."""
        at = utc(at) if at else self.clock.now()
        for _ in range(ATTEMPTS):
            view = self._view()
            layout = self._layout(view.budgets, subject, at, listing=True)
            values = self._read(view, layout.fields)
            if values is not None:
                return self._balances(layout, values)
        raise LedgerError("Redis ledger: the budgets keep changing")  # pragma: no cover
