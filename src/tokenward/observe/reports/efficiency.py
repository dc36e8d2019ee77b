"""Token efficiency: where the tokens go, per model (or any dimension) and overall.

Figures (all from the usage events; a count the provider did not report adds nothing and the
calls missing it are counted):

* ``cached_share``: cache reads over all input tokens (1 = every prompt token came from cache);
* ``context_per_output``: input tokens per output token ("context against generation"; an agent
  that re-sends its history has hundreds);
* ``reasoning_share``: reasoning tokens over output tokens;
* ``tool_definition_share``: tokens of tool definitions (the event's ``tool_definition_tokens``,
  counted by the guard's estimator from the request's tool definitions) over the input tokens of
  the calls that recorded them (a call offering no tools records 0); unknown when no call of the
  group recorded them (events recorded before they were measured), never reported as 0;
* ``tokens_per_resolved`` / ``cost_per_resolved_usd``: all tokens (or cost) over resolved
  sessions, where outcomes are known.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tokenward.observe.reports.chargeback import dimension
from tokenward.observe.reports.output import Table
from tokenward.observe.rows import Row

__all__ = ["EFFICIENCY_FIELDS", "Efficiency", "efficiency", "efficiency_table"]

ZERO = Decimal(0)
EFFICIENCY_FIELDS = frozenset(
    {"cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "tool_tokens", "resolved"}
)
_Q = Decimal("0.0001")


@dataclass
class Efficiency:
    """Token sums for one group, and the ratios above."""

    key: tuple[str | None, ...]
    calls: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    calls_with_reasoning: int = 0
    tool_tokens: int = 0
    calls_with_tool_tokens: int = 0
    tool_input_tokens: int = 0
    cost_usd: Decimal = ZERO
    sessions: int = 0
    resolved_sessions: int = 0

    def _ratio(self, num: int, den: int) -> Decimal | None:
        return None if den == 0 else (Decimal(num) / Decimal(den)).quantize(_Q)

    @property
    def cached_share(self) -> Decimal | None:
        """Cache reads over input tokens."""
        return self._ratio(self.cache_read_tokens, self.input_tokens)

    @property
    def context_per_output(self) -> Decimal | None:
        """Input tokens per output token."""
        return self._ratio(self.input_tokens, self.output_tokens)

    @property
    def reasoning_share(self) -> Decimal | None:
        """Reasoning tokens over output tokens (None when no call reported a reasoning count)."""
        return (
            None if self.calls_with_reasoning == 0 else self._ratio(self.reasoning_tokens, self.output_tokens)
        )

    @property
    def tool_definition_share(self) -> Decimal | None:
        """Tool-definition tokens over the input of the calls that recorded them (None: unknown)."""
        return (
            None
            if self.calls_with_tool_tokens == 0
            else self._ratio(self.tool_tokens, self.tool_input_tokens)
        )

    @property
    def tokens_per_resolved(self) -> int | None:
        """All tokens over resolved sessions."""
        return (
            None
            if self.resolved_sessions == 0
            else (self.input_tokens + self.output_tokens) // self.resolved_sessions
        )

    @property
    def cost_per_resolved_usd(self) -> Decimal | None:
        """All cost over resolved sessions (exact to 1e-6)."""
        return (
            None
            if self.resolved_sessions == 0
            else (self.cost_usd / self.resolved_sessions).quantize(Decimal("0.000001"))
        )

    def to_dict(self) -> dict[str, Any]:
        """Sums and ratios (Decimals kept)."""
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cached_share": self.cached_share,
            "context_per_output": self.context_per_output,
            "reasoning_share": self.reasoning_share,
            "tool_definition_share": self.tool_definition_share,
            "sessions": self.sessions,
            "resolved_sessions": self.resolved_sessions,
            "tokens_per_resolved": self.tokens_per_resolved,
            "cost_per_resolved_usd": self.cost_per_resolved_usd,
        }


def efficiency(rows: Iterable[Row], by: Sequence[str] = ()) -> tuple[list[Efficiency], Efficiency]:
    """Efficiency per group of ``by`` dimensions, and overall.

    Returns:
        (groups sorted by input tokens, the overall figures).
    """
    keys = [dimension(name) for name in by]
    groups: dict[tuple[str | None, ...], Efficiency] = {}
    total = Efficiency(())
    outcome: dict[str, bool | None] = {}
    session_group: dict[str, tuple[str | None, ...]] = {}
    for row in rows:
        key = tuple(f(row) for f in keys)
        group = groups.get(key) or groups.setdefault(key, Efficiency(key))
        for target in (group, total):
            target.calls += 1
            target.input_tokens += row.input_tokens or 0
            target.cache_read_tokens += row.cache_read_tokens or 0
            target.cache_write_tokens += row.cache_write_tokens or 0
            target.output_tokens += row.output_tokens or 0
            if row.reasoning_tokens is not None:
                target.reasoning_tokens += row.reasoning_tokens
                target.calls_with_reasoning += 1
            target.cost_usd += row.cost_usd or ZERO
            if row.tool_tokens is not None:
                target.tool_tokens += row.tool_tokens
                target.calls_with_tool_tokens += 1
                target.tool_input_tokens += row.input_tokens or 0
        if row.session is not None:
            session_group.setdefault(row.session, key)
            if row.resolved is not None or row.session not in outcome:
                outcome[row.session] = row.resolved if row.resolved is not None else outcome.get(row.session)
    for session, key in session_group.items():
        for target in (groups[key], total):
            target.sessions += 1
            target.resolved_sessions += outcome.get(session) is True
    return sorted(groups.values(), key=lambda g: -g.input_tokens), total


def efficiency_table(groups: list[Efficiency], total: Efficiency, by: Sequence[str]) -> Table:
    """As a table, one line per group and a final ``(all)`` line."""
    columns = [
        *by,
        "calls",
        "input_tokens",
        "cached_share",
        "context_per_output",
        "reasoning_share",
        "tool_definition_share",
        "sessions",
        "resolved_sessions",
        "tokens_per_resolved",
        "cost_per_resolved_usd",
    ]

    def line(e: Efficiency, key: tuple[Any, ...]) -> tuple[Any, ...]:
        return (
            *key,
            e.calls,
            e.input_tokens,
            e.cached_share,
            e.context_per_output,
            e.reasoning_share,
            e.tool_definition_share,
            e.sessions,
            e.resolved_sessions,
            e.tokens_per_resolved,
            e.cost_per_resolved_usd,
        )

    rows = [line(g, g.key) for g in groups]
    if by:
        rows.append(line(total, ("(all)",) + (None,) * (len(by) - 1)))
    else:
        rows = [line(total, ())]
    notes = ["shares are fractions (0.84 = 84%); unknown = not reported by any call"]
    return Table("token efficiency", columns, rows, notes, {"overall": total.to_dict()})
