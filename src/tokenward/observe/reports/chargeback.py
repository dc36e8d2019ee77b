"""Chargeback and showback: spend grouped by any subject dimension, tag, model or period.

A *dimension* is one of:

* a subject scope: ``org``, ``project``, ``team``, ``user``, ``key``, ``agent``, ``session``,
  ``task``;
* ``model`` (one name per model, :func:`~tokenward.core.pricebook.canonical_model`:
  ``google/gemini-3-pro-preview`` and ``gemini-3-pro-preview`` are one model), ``provider``,
  ``status``;
* ``tag:NAME``: the value of a free-form subject tag (``tag:cost_center``);
* a period: ``hour``, ``day``, ``week`` (from Monday), ``month``, in UTC or a time zone:
  ``day@Europe/Paris`` (the label is the local date).

:func:`chargeback` adds up calls, tokens and exact cost per combination of dimension values.
Chargeback and showback are the same figures; showback shows them, chargeback bills them. A call
whose cost is unknown (unpriced) is counted in ``unpriced_calls`` and adds nothing to ``cost_usd``
(which is then a lower bound, and the report says so); unknown token counts likewise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from tokenward.core.budgets import SCOPES
from tokenward.core.pricebook import canonical_model
from tokenward.core.windows import Window
from tokenward.errors import ConfigError
from tokenward.numbers import plain
from tokenward.observe.reports.output import Table
from tokenward.observe.rows import Row, denial_row

__all__ = ["ChargebackLine", "ChargebackReport", "chargeback", "dimension", "fields_for"]

ZERO = Decimal(0)
_PLAIN = ("model", "status", "provider")
_FORMATS = {"hour": "%Y-%m-%dT%H:00", "day": "%Y-%m-%d", "week": "%Y-%m-%d", "month": "%Y-%m"}


def dimension(name: str) -> Callable[[Row], str | None]:
    """The function giving a row's value for dimension ``name`` (see the module docstring).

    Raises:
        ConfigError: an unknown dimension (the known ones are named).
    """
    if name == "model":
        return lambda row: canonical_model(row.model) if row.model else None
    if name in SCOPES or name in _PLAIN:
        return lambda row: getattr(row, name)
    if name.startswith("tag:") and len(name) > 4:
        tag = name[4:]
        return lambda row: (row.tags or {}).get(tag)
    unit = name.partition("@")[0]
    if unit in _FORMATS:
        window = Window.parse(name)
        zone = ZoneInfo(window.time_zone)
        fmt = _FORMATS[unit]

        last: list[Any] = [None, None, None]  # [start, end, label] of the last window seen

        def period(row: Row) -> str | None:
            start, end, label = last
            if start is not None and start <= row.at < end:
                return label  # type: ignore[no-any-return]
            start, end = window.start(row.at), window.reset_at(row.at)
            if start is None:
                return None
            label = start.astimezone(zone).strftime(fmt)
            last[:] = [start, end, label]
            return label

        return period
    known = ", ".join((*SCOPES, *_PLAIN, "tag:NAME", "hour", "day", "week", "month", "day@Zone/Name"))
    raise ConfigError(f"unknown report dimension {name!r}; known: {known}")


def fields_for(dimensions: Iterable[str]) -> set[str]:
    """The extra row fields (:data:`~tokenward.observe.rows.EXTRA_FIELDS`) dimensions need."""
    out = set()
    for name in dimensions:
        if name == "provider":
            out.add("provider")
        elif name.startswith("tag:"):
            out.add("tags")
    return out


@dataclass
class ChargebackLine:
    """Totals for one combination of dimension values.

    Attributes:
        key: the dimension values (None where a call has no value, e.g. no ``team``).
        calls: calls counted.
        input_tokens / cache_read_tokens / output_tokens / reasoning_tokens: token sums over the
            calls that reported them.
        cost_usd: exact USD over priced calls.
        unpriced_calls: calls whose cost is unknown (not in ``cost_usd``).
        unknown_token_calls: calls with an unknown input or output count.
        first_at / last_at: the earliest and latest call (UTC).
        denials: calls a budget refused (402/429, ``BudgetExceeded``), from the ledger's denials
            (a flood's aggregated record counts each refusal it folds); not in ``calls``.
    """

    key: tuple[str | None, ...]
    calls: int = 0
    denials: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = ZERO
    unpriced_calls: int = 0
    unknown_token_calls: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def add(self, row: Row) -> None:
        """Count one row."""
        self.calls += 1
        if row.input_tokens is None or row.output_tokens is None:
            self.unknown_token_calls += 1
        self.input_tokens += row.input_tokens or 0
        self.output_tokens += row.output_tokens or 0
        self.cache_read_tokens += row.cache_read_tokens or 0
        self.reasoning_tokens += row.reasoning_tokens or 0
        if row.cost_usd is None:
            self.unpriced_calls += 1
        else:
            self.cost_usd += row.cost_usd
        if self.first_at is None or row.at < self.first_at:
            self.first_at = row.at
        if self.last_at is None or row.at > self.last_at:
            self.last_at = row.at

    def merge(self, other: ChargebackLine) -> None:
        """Add another line's totals into this one."""
        self.calls += other.calls
        self.denials += other.denials
        self.input_tokens += other.input_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.output_tokens += other.output_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.cost_usd += other.cost_usd
        self.unpriced_calls += other.unpriced_calls
        self.unknown_token_calls += other.unknown_token_calls
        for at in (other.first_at, other.last_at):
            if at is not None:
                self.first_at = at if self.first_at is None or at < self.first_at else self.first_at
                self.last_at = at if self.last_at is None or at > self.last_at else self.last_at


@dataclass
class ChargebackReport:
    """Spend per combination of dimension values, largest cost first.

    Attributes:
        dimensions: the grouping, e.g. ``["user", "day"]``.
        lines: one per combination.
        total: all lines together (its ``key`` is empty).
        since / until: the period asked for (None: open).
    """

    dimensions: list[str]
    lines: list[ChargebackLine]
    total: ChargebackLine
    since: datetime | None = None
    until: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self, *, title: str = "chargeback") -> Table:
        """As a :class:`~tokenward.observe.reports.output.Table` (share of cost in percent)."""
        columns = [
            *self.dimensions,
            "calls",
            "denials",
            "input_tokens",
            "cache_read_tokens",
            "output_tokens",
            "reasoning_tokens",
            "total_tokens",
            "cost_usd",
            "cost_share_pct",
            "unpriced_calls",
        ]
        rows = []
        for line in self.lines:
            share = (
                (line.cost_usd * 100 / self.total.cost_usd).quantize(Decimal("0.01"))
                if self.total.cost_usd
                else None
            )
            rows.append(
                (
                    *line.key,
                    line.calls,
                    line.denials,
                    line.input_tokens,
                    line.cache_read_tokens,
                    line.output_tokens,
                    line.reasoning_tokens,
                    line.total_tokens,
                    line.cost_usd,
                    share,
                    line.unpriced_calls,
                )
            )
        notes = []
        if self.total.unpriced_calls:
            notes.append(
                f"{self.total.unpriced_calls:,} calls are unpriced: their cost is unknown and not in cost_usd"
            )
        notes.append(
            f"total: {self.total.calls:,} calls, {self.total.total_tokens:,} tokens, ${plain(self.total.cost_usd)}"
            + (f"; {self.total.denials:,} calls refused by budgets" if self.total.denials else "")
        )
        return Table(title, columns, rows, notes, self.meta())

    def meta(self) -> dict[str, Any]:
        """Period, grouping and totals, JSON-ready except for Decimals and datetimes."""
        t = self.total
        return {
            "dimensions": self.dimensions,
            "since": self.since,
            "until": self.until,
            "totals": {
                "calls": t.calls,
                "denials": t.denials,
                "input_tokens": t.input_tokens,
                "cache_read_tokens": t.cache_read_tokens,
                "output_tokens": t.output_tokens,
                "reasoning_tokens": t.reasoning_tokens,
                "total_tokens": t.total_tokens,
                "cost_usd": t.cost_usd,
                "unpriced_calls": t.unpriced_calls,
                "unknown_token_calls": t.unknown_token_calls,
            },
            **self.extra,
        }


def chargeback(
    rows: Iterable[Row],
    by: Sequence[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    top: int | None = None,
    denials: Iterable[Any] = (),
) -> ChargebackReport:
    """Group rows by ``by`` and add up calls, tokens and exact cost, and the calls budgets
    refused (``denials``: :class:`~tokenward.ledger.records.Denial` records of the same period;
    a group with refusals only is a line of 0 calls).

    Args:
        rows: the usage rows (already limited to the period; ``since``/``until`` are only
            recorded in the report).
        by: dimensions (see the module docstring); none gives one line for everything.
        top: keep the ``top`` first lines (the most expensive; the earliest periods when the first
            dimension is a period); the total still covers every row.

    Raises:
        ConfigError: an unknown dimension.
    """
    keys = [dimension(name) for name in by]
    groups: dict[tuple[str | None, ...], ChargebackLine] = {}
    total = ChargebackLine(())
    for row in rows:
        key = tuple(f(row) for f in keys)
        line = groups.get(key)
        if line is None:
            line = groups[key] = ChargebackLine(key)
        line.add(row)
    for denial in denials:
        key = tuple(f(denial_row(denial)) for f in keys)
        line = groups.get(key)
        if line is None:
            line = groups[key] = ChargebackLine(key)
        line.denials += denial.count
    for line in groups.values():
        total.merge(line)
    if by and by[0].partition("@")[0] in _FORMATS:  # a period first: in time order
        lines = sorted(
            groups.values(), key=lambda line: (tuple(str(k) for k in line.key[:1]), -line.cost_usd)
        )
    else:
        lines = sorted(
            groups.values(),
            key=lambda line: (-line.cost_usd, -line.total_tokens, tuple(str(k) for k in line.key)),
        )
    if top is not None:
        lines = lines[:top]
    return ChargebackReport(list(by), lines, total, since, until)
