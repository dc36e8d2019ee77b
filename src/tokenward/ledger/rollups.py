"""Daily spend rollups, kept as usage events are written, so the dashboard's overview reads a few
thousand rows instead of a month of events.

One row per UTC day, project and (dimension, value): ``dim`` is one of :data:`ROLLUP_DIMENSIONS`
(``*`` with value ``""`` is the day's total; ``tag`` values are ``name=value``, one row per tag),
with the calls, input and output tokens, cost and unpriced calls of the events counted there.
Every backend writes the rows in the transaction that writes the event (SQLite and PostgreSQL:
table ``usage_rollup``; the memory ledger computes them on demand; Redis: in its durable store),
and an existing ledger's events are rolled up by :meth:`backfill_rollup` in small batches from a
background thread, never at start-up; until that is done :meth:`spend_rollup` answers None and
readers scan the events instead.

SQLite keeps cost in integer pico-USD (10^-12 USD, rounded half-even: exact for every price in
the tables, whose per-token prices have at most 12 decimal places); PostgreSQL in ``numeric``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from tokenward.core.events import UsageEvent

__all__ = [
    "ROLLUP_DIMENSIONS",
    "RollupRow",
    "SessionSummary",
    "merged_deltas",
    "pico",
    "rollup_query",
    "rollup_rows",
    "select_rows",
    "summarise_sessions",
    "unpico",
]

ROLLUP_DIMENSIONS = ("*", "model", "user", "project", "team", "key", "agent", "tag")
_PICO = Decimal(10) ** 12


def pico(usd: Decimal | None) -> int:
    """USD as integer pico-USD (half-even); None (unpriced) is 0."""
    if usd is None:
        return 0
    return int((usd * _PICO).to_integral_value(ROUND_HALF_EVEN))


def unpico(value: int | str | Decimal) -> Decimal:
    """Integer pico-USD back to USD."""
    return (Decimal(value) / _PICO).normalize() if value else Decimal(0)


@dataclass(frozen=True, slots=True)
class RollupRow:
    """One day's spend of one dimension value in one project (``""``: of no project).

    Attributes:
        day: the UTC day, ``YYYY-MM-DD``.
        project: the events' project, ``""`` for none.
        dim: one of :data:`ROLLUP_DIMENSIONS`.
        value: the dimension's value (``""`` for ``*``; ``(none)`` when the event had none).
        calls / input_tokens / output_tokens: counts (unknown token counts add 0).
        cost_usd: exact USD of the priced calls.
        unpriced: calls without a price.
    """

    day: str
    project: str
    dim: str
    value: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    unpriced: int


def _values(event: UsageEvent) -> list[tuple[str, str]]:
    subject = event.subject
    out = [("*", ""), ("model", event.model or "(unknown)")]
    for scope in ("user", "project", "team", "key", "agent"):
        out.append((scope, subject.value(scope) or "(none)"))
    out += [("tag", f"{k}={v}") for k, v in subject.tags] or [("tag", "(no tag)")]
    return out


def rollup_rows(events: Iterable[UsageEvent]) -> list[RollupRow]:
    """The rollup rows of ``events``, summed (what the tables hold for them)."""
    sums: dict[tuple[str, str, str, str], list[object]] = {}
    for event in events:
        key_base = (event.at.date().isoformat(), event.subject.project or "")
        for dim, value in _values(event):
            row = sums.setdefault((*key_base, dim, value), [0, 0, 0, Decimal(0), 0])
            row[0] += 1  # type: ignore[operator]
            row[1] += event.usage.input_tokens or 0  # type: ignore[operator]
            row[2] += event.usage.output_tokens or 0  # type: ignore[operator]
            if event.cost_usd is None:
                row[4] += 1  # type: ignore[operator]
            else:
                row[3] += event.cost_usd  # type: ignore[operator]
    return [RollupRow(*k, *v) for k, v in sums.items()]  # type: ignore[arg-type]


def merged_deltas(events: Iterable[UsageEvent]) -> list[tuple[str, str, str, str, int, int, int, int, int]]:
    """:func:`event_deltas` of many events, summed by row (one upsert may touch a row once)."""
    sums: dict[tuple[str, str, str, str], list[int]] = {}
    for event in events:
        for day, project, dim, value, *figures in event_deltas(event):
            row = sums.setdefault((day, project, dim, value), [0, 0, 0, 0, 0])
            for n, figure in enumerate(figures):
                row[n] += figure
    return [(*key, *figures) for key, figures in sums.items()]  # type: ignore[misc]


def event_deltas(event: UsageEvent) -> list[tuple[str, str, str, str, int, int, int, int, int]]:
    """What one event adds to the rollup table: ``(day, project, dim, value, calls, input,
    output, cost_pico, unpriced)`` per row it counts in."""
    day, project = event.at.date().isoformat(), event.subject.project or ""
    cost = pico(event.cost_usd)
    unpriced = 1 if event.cost_usd is None else 0
    tokens_in, tokens_out = event.usage.input_tokens or 0, event.usage.output_tokens or 0
    return [
        (day, project, dim, value, 1, tokens_in, tokens_out, cost, unpriced) for dim, value in _values(event)
    ]


def rollup_query(
    since: str,
    until: str | None,
    project: str | None,
    dim: str | None,
    values: Sequence[str] | None,
    by_day: bool,
    mark: str,
    cost: str,
) -> tuple[str, list[Any]]:
    """The SQL selecting rollup rows (SQLite and PostgreSQL share it; ``mark`` is the driver's
    parameter mark, ``cost`` the cost column): filtered by day range, project, dimension and
    values; with ``by_day`` False, summed over the days (``day`` is then ``since``) and over
    projects unless one is named."""
    where, params = [f"day >= {mark}"], [since]
    if until is not None:
        where.append(f"day < {mark}")
        params.append(until)
    if project is not None:
        where.append(f"project = {mark}")
        params.append(project)
    if dim is not None:
        where.append(f"dim = {mark}")
        params.append(dim)
    if values is not None:
        if not values:
            where.append("1 = 0")
        else:
            where.append(f"value IN ({', '.join([mark] * len(values))})")
            params.extend(values)
    clause = " AND ".join(where)
    if by_day:
        return (
            f"SELECT day, project, dim, value, calls, input_tokens, output_tokens, {cost}, unpriced "
            f"FROM usage_rollup WHERE {clause}",
            params,
        )
    group_project = "project" if project is not None else "''"
    return (
        f"SELECT {mark}, {group_project}, dim, value, SUM(calls), SUM(input_tokens), SUM(output_tokens), "
        f"SUM({cost}), SUM(unpriced) FROM usage_rollup WHERE {clause} GROUP BY dim, value",
        [since, *params],
    )


def select_rows(
    rows: Iterable[RollupRow],
    since: str,
    until: str | None = None,
    project: str | None = None,
    *,
    dim: str | None = None,
    values: Sequence[str] | None = None,
    by_day: bool = True,
) -> list[RollupRow]:
    """:func:`rollup_query` over rows in memory (the memory ledger's)."""
    chosen = [
        r
        for r in rows
        if r.day >= since
        and (until is None or r.day < until)
        and (project is None or r.project == project)
        and (dim is None or r.dim == dim)
        and (values is None or r.value in values)
    ]
    if by_day:
        return chosen
    sums: dict[tuple[str, str], list[Any]] = {}
    for r in chosen:
        row = sums.setdefault((r.dim, r.value), [0, 0, 0, Decimal(0), 0])
        for n, amount in enumerate((r.calls, r.input_tokens, r.output_tokens, r.cost_usd, r.unpriced)):
            row[n] += amount
    return [RollupRow(since, project or "", d, v, *x) for (d, v), x in sums.items()]


@dataclass(slots=True)
class SessionSummary:
    """One session's calls since some instant: its stored id, its user (the first call's), calls,
    input plus output tokens, exact cost of the priced calls, first and last call, and the last
    call's status."""

    session: str
    user: str | None
    calls: int
    tokens: int
    cost_usd: Decimal
    first: datetime
    last: datetime
    last_status: str


def summarise_sessions(
    rows: Iterable[tuple[str, str | None, datetime, int | None, int | None, Decimal | str | None, str]],
) -> list[SessionSummary]:
    """Fold ``(session, user, at, input_tokens, output_tokens, cost_usd, status)`` rows, in time
    order, into one summary per session (in order of first call)."""
    out: dict[str, SessionSummary] = {}
    for session, user, at, tokens_in, tokens_out, cost, status in rows:
        summary = out.get(session)
        if summary is None:
            summary = out[session] = SessionSummary(session, user, 0, 0, Decimal(0), at, at, status)
        summary.calls += 1
        summary.tokens += (tokens_in or 0) + (tokens_out or 0)
        if cost is not None:
            summary.cost_usd += Decimal(cost)
        summary.last, summary.last_status = at, status
    return list(out.values())
