"""Usage events as a stream of light rows, for reports over ledgers of any size.

:func:`open_rows` gives a :class:`RowSource` for a ledger URL or object. On a SQLite ledger it
reads the ``usage_events`` table directly, read-only and row by row (one cursor, SQLite's JSON
functions pulling only the fields a report asks for out of each event's JSON), so a report over
millions of events holds its aggregates in memory, never the events. Other ledgers are read
through :meth:`~tokenward.ledger.Ledger.events`.

A :class:`Row` carries what reports use; a field a report did not ask for (``need``) is None.
Token counts the provider did not report are None too (unknown, not zero); ``cost_usd`` is an
exact ``Decimal`` or None when the call could not be priced.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenward.clock import utc
from tokenward.core.budgets import SCOPES, Subject
from tokenward.core.events import UsageEvent
from tokenward.errors import ConfigError, LedgerError

__all__ = ["EXTRA_FIELDS", "Row", "RowSource", "denial_row", "open_rows", "rows_from_events"]

EXTRA_FIELDS = (
    "provider",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_estimated",
    "tags",
    "charged",
    "resolved",
    "step",
    "tool_tokens",
)
"""Fields read only when a report asks for them (``need``); the others are always read."""

_JSON_PATHS = {
    "provider": "$.provider",
    "cache_read_tokens": "$.usage.cache_read_tokens",
    "cache_write_tokens": "$.usage.cache_write_tokens",
    "reasoning_tokens": "$.usage.reasoning_tokens",
    "cost_estimated": "$.cost_estimated",
    "tags": "$.subject.tags",
    "charged": "$.charged",
    "resolved": "$.metadata.session_resolved",
    "step": "$.metadata.step",
    "tool_tokens": "$.tool_definition_tokens",
}


@dataclass(slots=True)
class Row:
    """One usage event, reduced to what reports need.

    Attributes:
        request_id, at (UTC), org, project, team, user, key, agent, session, task, model, status:
            as on the event.
        input_tokens / output_tokens / cache_read_tokens / cache_write_tokens / reasoning_tokens:
            token counts (None: unknown or not asked for).
        cost_usd: exact USD, or None when unpriced.
        provider, cost_estimated, tags (dict), charged (meter -> Decimal), resolved (the session's
        task outcome, from trace imports), step, tool_tokens (tokens of tool definitions, when
        recorded): None unless asked for.
    """

    request_id: str
    at: datetime
    org: str | None = None
    project: str | None = None
    team: str | None = None
    user: str | None = None
    key: str | None = None
    agent: str | None = None
    session: str | None = None
    task: str | None = None
    model: str | None = None
    status: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: Decimal | None = None
    provider: str | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_estimated: bool | None = None
    tags: dict[str, str] | None = None
    charged: dict[str, Decimal] | None = None
    resolved: bool | None = None
    step: int | None = None
    tool_tokens: int | None = None

    def value(self, scope: str) -> str | None:
        """The value of a subject scope (``user``...)."""
        return getattr(self, scope) if scope in SCOPES else None

    @property
    def total_tokens(self) -> int | None:
        """Input plus output tokens, or None when either is unknown."""
        if self.input_tokens is None or self.output_tokens is None:
            return None
        return self.input_tokens + self.output_tokens

    def subject(self) -> Subject:
        """The subject (tags only when they were read), with the call's model (per-model budgets)."""
        return Subject(
            org=self.org,
            project=self.project,
            team=self.team,
            user=self.user,
            key=self.key,
            agent=self.agent,
            session=self.session,
            task=self.task,
            tags=tuple(sorted((self.tags or {}).items())),
        ).with_model(self.model)


def denial_row(denial: Any) -> Row:
    """A refused call (a :class:`~tokenward.ledger.records.Denial`) as a row of status
    ``denied``: its subject, model and instant, no tokens, no cost; so reports group denials by
    the dimensions they group calls by."""
    subject = denial.subject
    return Row(
        request_id=denial.request_id or f"denial-{denial.id}",
        at=denial.at,
        **{s: subject.value(s) for s in SCOPES},
        model=denial.model,
        status="denied",
        provider=denial.provider,
        tags=dict(subject.tags),
    )


def rows_from_events(events: Iterable[UsageEvent]) -> Iterator[Row]:
    """Rows from usage events (every field filled)."""
    for e in events:
        u = e.usage
        resolved = e.metadata.get("session_resolved")
        step = e.metadata.get("step")
        tool = e.tool_definition_tokens
        yield Row(
            request_id=e.request_id,
            at=e.at,
            **{s: e.subject.value(s) for s in SCOPES},
            model=e.model,
            status=e.status,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cost_usd=e.cost_usd,
            provider=e.provider,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            reasoning_tokens=u.reasoning_tokens,
            cost_estimated=e.cost_estimated,
            tags=dict(e.subject.tags),
            charged=dict(e.charged),
            resolved=resolved if isinstance(resolved, bool) else None,
            step=step if isinstance(step, int) else None,
            tool_tokens=tool if isinstance(tool, int) else None,
        )


def _ts(at: datetime) -> str:
    return utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class RowSource:
    """Where rows come from: a SQLite file read directly, or any ledger's ``events()``.

    Use :func:`open_rows` to make one.
    """

    def __init__(self, *, path: str | None = None, ledger: Any = None, url: str = "") -> None:
        self.path = path
        self.ledger = ledger
        self.url = url
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
                self._conn.execute("SELECT 1 FROM usage_events LIMIT 1")
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot read usage events from {self.path}: {exc}") from exc
        return self._conn

    def _where(
        self, since: datetime | None, until: datetime | None, where: Subject | None
    ) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for scope in SCOPES:
            value = where.value(scope) if where else None
            if value is not None:
                clauses.append(f"{scope} = ?")
                params.append(value)
        if since is not None:
            clauses.append("at >= ?")
            params.append(_ts(since))
        if until is not None:
            clauses.append("at < ?")
            params.append(_ts(until))
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params

    def count(
        self, *, since: datetime | None = None, until: datetime | None = None, where: Subject | None = None
    ) -> int:
        """How many events the same filters select (for progress bars)."""
        if self.path is None:
            return len(self.ledger.events(subject=where, since=since, until=until))
        sql, params = self._where(since, until, where)
        try:
            return int(
                self._connect().execute(f"SELECT COUNT(*) FROM usage_events {sql}", params).fetchone()[0]
            )
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: {exc}") from exc

    def scan(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        where: Subject | None = None,
        need: Iterable[str] = EXTRA_FIELDS,
        progress: Callable[[int], None] | None = None,
        every: int = 10_000,
    ) -> Iterator[Row]:
        """Rows in time order.

        Args:
            since / until: the period, ``since <= at < until`` (UTC; either may be None).
            where: only events whose subject has these scope values and tags.
            need: extra fields to read (:data:`EXTRA_FIELDS`); the fewer, the faster on SQLite.
            progress: called with the number of rows read so far, every ``every`` rows and at
                the end.
        """
        wanted = [f for f in EXTRA_FIELDS if f in set(need)]
        if where is not None and where.tags and "tags" not in wanted:
            wanted.append("tags")
        rows = (
            self._scan_sqlite(since, until, where, wanted)
            if self.path is not None
            else self._scan_ledger(since, until, where, wanted)
        )
        done = 0
        for row in rows:
            if where is not None and where.tags:
                tags = row.tags or {}
                if any(tags.get(k) != v for k, v in where.tags):
                    continue
            done += 1
            if progress is not None and done % every == 0:
                progress(done)
            yield row
        if progress is not None:
            progress(done)

    def denials(
        self, *, since: datetime | None = None, until: datetime | None = None, where: Subject | None = None
    ) -> list[Any]:
        """The refused calls (:class:`~tokenward.ledger.records.Denial`) of the same filters,
        oldest first; none from a SQLite file written before denials were recorded."""
        from tokenward.ledger.denials import check_denial_query, matches
        from tokenward.ledger.records import Denial

        if self.path is None:
            found = getattr(self.ledger, "denials", None)
            return [] if found is None else list(reversed(found(since, until, where, None, None, 0)))
        query = check_denial_query(since, until, where, None, None, 0)
        clauses, params = [], []
        if since is not None:
            clauses.append("at >= ?")
            params.append(_ts(since))
        if until is not None:
            clauses.append("at < ?")
            params.append(_ts(until))
        sql = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        conn = self._connect()
        try:
            if (
                conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'denials'"
                ).fetchone()
                is None
            ):
                return []
            rows = conn.execute(
                f"SELECT id, count, last_at, data FROM denials {sql} ORDER BY id", params
            ).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: {exc}") from exc
        out = [
            Denial.from_dict({**json.loads(data), "id": i, "count": n, "last_at": last})
            for i, n, last, data in rows
        ]
        return [d for d in out if matches(d, query)]

    def _scan_ledger(
        self, since: datetime | None, until: datetime | None, where: Subject | None, wanted: list[str]
    ) -> Iterator[Row]:
        plain_where = None if where is None else dataclasses.replace(where, tags=())
        yield from rows_from_events(self.ledger.events(subject=plain_where, since=since, until=until))

    def _scan_sqlite(
        self, since: datetime | None, until: datetime | None, where: Subject | None, wanted: list[str]
    ) -> Iterator[Row]:
        sql, params = self._where(since, until, where)
        extra = "".join(f", json_extract(data, '{_JSON_PATHS[f]}')" for f in wanted)
        base = ["request_id", "at", *SCOPES, "model", "status", "input_tokens", "output_tokens", "cost_usd"]
        query = f"SELECT {', '.join(base)}{extra} FROM usage_events {sql} ORDER BY at, seq"
        try:
            cursor = self._connect().execute(query, params)
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: {exc}") from exc
        cursor.arraysize = 1000
        n_base = len(base)
        decoders = [(name, n_base + i) for i, name in enumerate(wanted)]
        while True:
            try:
                batch = cursor.fetchmany()
            except sqlite3.Error as exc:
                raise LedgerError(f"{self.path}: {exc}") from exc
            if not batch:
                return
            for record in batch:
                # the base columns are Row's first fields, in order
                row = Row(  # type: ignore[call-arg]
                    record[0],
                    _parse_at(record[1]),
                    *record[2:14],
                    None if record[14] is None else Decimal(record[14]),
                )
                for name, index in decoders:
                    setattr(row, name, _decode(name, record[index]))
                yield row

    def close(self) -> None:
        """Close the read-only connection (or the ledger this source opened)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _decode(name: str, raw: Any) -> Any:
    if raw is None:
        return None
    if name == "tags":
        return {str(k): str(v) for k, v in json.loads(raw).items()}
    if name == "charged":
        return {str(k): Decimal(str(v)) for k, v in json.loads(raw).items()}
    if name in ("cost_estimated", "resolved"):
        return bool(raw)
    if name == "provider":
        return str(raw)
    return int(raw) if isinstance(raw, int | float) else None


def open_rows(ledger: Any) -> RowSource:
    """A row source for a ledger URL (``sqlite:///...`` is read directly, read-only) or a ledger
    object.

    Raises:
        ConfigError: a malformed URL, or a SQLite file that does not exist.
    """
    if isinstance(ledger, str):
        if ledger.startswith("sqlite:"):
            from tokenward.ledger.sqlite import path_from_url

            path = path_from_url(ledger)
            if not path.exists():
                raise ConfigError(f"{ledger}: no such ledger file ({path})")
            return RowSource(path=str(path), url=ledger)
        from tokenward.ledger import open_ledger

        return RowSource(ledger=open_ledger(ledger), url=ledger)
    inner = getattr(ledger, "sync", ledger)
    file = getattr(inner, "path", None)
    if file is not None and type(inner).__name__ == "SQLiteLedger":
        return RowSource(path=str(file), url=getattr(inner, "url", ""))
    return RowSource(ledger=inner, url=getattr(inner, "url", ""))


def totals(rows: Iterable[Row]) -> Mapping[str, Any]:
    """Plain sums over rows (calls, tokens, exact cost): a cross-check used by tests and reports."""
    out: dict[str, Any] = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": Decimal(0)}
    for row in rows:
        out["calls"] += 1
        out["input_tokens"] += row.input_tokens or 0
        out["output_tokens"] += row.output_tokens or 0
        out["cost_usd"] += row.cost_usd or 0
    return out
