"""Service-level objectives on spend: "95% of sessions under 2,000 tokens and 10 s".

An :class:`SLO` says what share of sessions (or of calls) must stay within every one of its
bounds: tokens (total, input, output), cost in USD, duration in seconds. :func:`evaluate` gives
its compliance: the share that did, whether the target is met, and the *error budget* (how many
more units could have missed before the target failed; negative once it has).

SLOs come from config (a list of mappings) or from a sentence::

    slos:
      - name: small-sessions
        target: 95%                # or 0.95
        per: session               # session (default) or call
        max_total_tokens: 2000
        max_duration_seconds: 10
      - "99% of calls under $0.05"

Sentence form: ``<target>% of <sessions|calls> under <bound> [and <bound>]...``, where a bound is
``N tokens`` (total), ``N input tokens``, ``N output tokens``, ``$N`` or ``N USD``, ``N s`` /
``N seconds`` / ``N ms`` / ``N min``; numbers may use thousands separators (``2,000``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from tokenward.core.budgets import ungrouped
from tokenward.errors import ConfigError
from tokenward.numbers import plain
from tokenward.observe.reports.output import Table
from tokenward.observe.reports.sessions import SessionCost
from tokenward.observe.rows import Row

__all__ = ["SLO", "SLOResult", "evaluate", "parse_slo", "slo_table"]

_BOUNDS = (
    "max_total_tokens",
    "max_input_tokens",
    "max_output_tokens",
    "max_cost_usd",
    "max_duration_seconds",
)


@dataclass(frozen=True, slots=True)
class SLO:
    """An objective: ``target`` share of units within every bound that is set.

    Attributes:
        name: label.
        target: required share, in (0, 1].
        per: ``session`` or ``call``.
        max_total_tokens / max_input_tokens / max_output_tokens: token bounds (inclusive).
        max_cost_usd: USD bound (inclusive); a unit whose cost is unknown does not meet it.
        max_duration_seconds: seconds (sessions: first to last call; calls: not measured, so a
            duration bound on calls is refused).
    """

    name: str
    target: Decimal
    per: Literal["session", "call"] = "session"
    max_total_tokens: int | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_cost_usd: Decimal | None = None
    max_duration_seconds: Decimal | None = None

    def __post_init__(self) -> None:
        if not 0 < self.target <= 1:
            raise ConfigError(f"SLO {self.name!r}: target must be above 0% and at most 100%")
        if self.per not in ("session", "call"):
            raise ConfigError(f"SLO {self.name!r}: per must be session or call")
        if all(getattr(self, b) is None for b in _BOUNDS):
            raise ConfigError(f"SLO {self.name!r}: set at least one of {', '.join(_BOUNDS)}")
        if self.per == "call" and self.max_duration_seconds is not None:
            raise ConfigError(f"SLO {self.name!r}: call durations are not recorded; bound sessions instead")

    def describe(self) -> str:
        """The objective in words."""
        parts = []
        if self.max_total_tokens is not None:
            parts.append(f"{self.max_total_tokens:,} tokens")
        if self.max_input_tokens is not None:
            parts.append(f"{self.max_input_tokens:,} input tokens")
        if self.max_output_tokens is not None:
            parts.append(f"{self.max_output_tokens:,} output tokens")
        if self.max_cost_usd is not None:
            parts.append(f"${plain(self.max_cost_usd)}")
        if self.max_duration_seconds is not None:
            parts.append(f"{plain(self.max_duration_seconds)} s")
        return f"{plain(self.target * 100)}% of {self.per}s within {' and '.join(parts)}"

    def meets(
        self, *, total: int, input_: int, output: int, cost: Decimal | None, duration: Decimal | None
    ) -> bool:
        """Whether one unit is within every bound."""
        if self.max_total_tokens is not None and total > self.max_total_tokens:
            return False
        if self.max_input_tokens is not None and input_ > self.max_input_tokens:
            return False
        if self.max_output_tokens is not None and output > self.max_output_tokens:
            return False
        if self.max_cost_usd is not None and (cost is None or cost > self.max_cost_usd):
            return False
        return not (
            self.max_duration_seconds is not None
            and (duration is None or duration > self.max_duration_seconds)
        )

    @classmethod
    def from_config(cls, raw: Any, index: int = 0) -> SLO:
        """From a mapping or a sentence (see the module docstring).

        Raises:
            ConfigError: an unknown key, a bad number, or a sentence that does not parse.
        """
        if isinstance(raw, str):
            return parse_slo(raw)
        if not isinstance(raw, Mapping):
            raise ConfigError(f"slos[{index}]: expected a mapping or a sentence")
        known = {"name", "target", "per", *_BOUNDS}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"slos[{index}]: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        if raw.get("target") is None:
            raise ConfigError(f"slos[{index}]: 'target' is required (e.g. 95%)")
        values: dict[str, Any] = {}
        for bound in _BOUNDS:
            if raw.get(bound) is not None:
                number = _number(raw[bound], f"slos[{index}].{bound}")
                values[bound] = int(number) if bound.endswith("tokens") else number
        return cls(
            name=str(raw.get("name") or f"slo-{index + 1}"),
            target=_share(raw["target"], f"slos[{index}].target"),
            per=str(raw.get("per", "session")),  # type: ignore[arg-type]
            **values,
        )


def _number(value: Any, where: str) -> Decimal:
    try:
        number = Decimal(ungrouped(value, where).lstrip("$").strip())
    except InvalidOperation:
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ConfigError(f"{where}: must be a non-negative number")
    return number


def _share(value: Any, where: str) -> Decimal:
    text = str(value).strip()
    return _number(text[:-1], where) / 100 if text.endswith("%") else _number(text, where)


_SENTENCE = re.compile(
    r"^\s*(?P<target>[\d.,]+)\s*%\s+of\s+(?P<per>sessions?|calls?)\s+(?:under|within|below)\s+(?P<rest>.+)$",
    re.I,
)
_BOUND = re.compile(
    r"^(?:(?P<usd>\$\s*[\d.,_]+)|(?P<n>[\d.,_]+)\s*(?P<unit>usd|input tokens?|output tokens?|tokens?|ms|milliseconds?|s|secs?|seconds?|min|minutes?))$",
    re.I,
)


def parse_slo(text: str, *, name: str | None = None) -> SLO:
    """Parse ``"95% of sessions under 2,000 tokens and 10 s"``.

    Raises:
        ConfigError: the sentence does not parse (the expected form is shown).
    """
    match = _SENTENCE.match(text)
    form = "'<N>% of sessions|calls under <N tokens | N input tokens | N output tokens | $N | N s | N ms> [and ...]'"
    if not match:
        raise ConfigError(f"SLO {text!r} does not parse; expected {form}")
    values: dict[str, Any] = {}
    for part in re.split(r"\s*(?:,\s*and|\band\b|;)\s*", match["rest"].strip().rstrip(".")):
        bound = _BOUND.match(part.strip())
        if not bound:
            raise ConfigError(f"SLO {text!r}: cannot read the bound {part!r}; expected {form}")
        if bound["usd"]:
            values["max_cost_usd"] = _number(bound["usd"], text)
            continue
        number, unit = _number(bound["n"], text), bound["unit"].lower()
        if unit == "usd":
            values["max_cost_usd"] = number
        elif unit.startswith("input"):
            values["max_input_tokens"] = int(number)
        elif unit.startswith("output"):
            values["max_output_tokens"] = int(number)
        elif unit.startswith("token"):
            values["max_total_tokens"] = int(number)
        elif unit in ("ms", "millisecond", "milliseconds"):
            values["max_duration_seconds"] = number / 1000
        elif unit.startswith("min"):
            values["max_duration_seconds"] = number * 60
        else:
            values["max_duration_seconds"] = number
    per = "session" if match["per"].lower().startswith("session") else "call"
    return SLO(name=name or text.strip(), target=_share(match["target"] + "%", text), per=per, **values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SLOResult:
    """An SLO's compliance.

    Attributes:
        slo: the objective.
        units: sessions (or calls) measured.
        within: how many met every bound.
        compliance: ``within / units`` (None when nothing was measured).
        met: compliance at or above the target.
        error_budget: units that could still miss before the target fails (negative: by how many
            it already failed).
    """

    slo: SLO
    units: int
    within: int

    @property
    def compliance(self) -> Decimal | None:
        """Share of units within every bound."""
        return None if self.units == 0 else Decimal(self.within) / Decimal(self.units)

    @property
    def met(self) -> bool | None:
        """Whether the target is met (None without data)."""
        return None if self.compliance is None else self.compliance >= self.slo.target

    @property
    def error_budget(self) -> int:
        """Allowed misses left: ``floor(units * (1 - target)) - misses``."""
        allowed = int((Decimal(self.units) * (1 - self.slo.target)).to_integral_value(rounding="ROUND_FLOOR"))
        return allowed - (self.units - self.within)


def evaluate(
    slos: Iterable[SLO], sessions: Iterable[SessionCost], rows: Iterable[Row] | None = None
) -> list[SLOResult]:
    """Compliance of each SLO: session SLOs over ``sessions``, call SLOs over ``rows``."""
    items = list(sessions)
    out = []
    call_rows = list(rows) if rows is not None else []
    for slo in slos:
        if slo.per == "session":
            within = sum(
                slo.meets(
                    total=s.total_tokens,
                    input_=s.input_tokens,
                    output=s.output_tokens,
                    cost=s.cost_usd if s.unpriced_calls == 0 else None,
                    duration=s.duration_s,
                )
                for s in items
            )
            out.append(SLOResult(slo, len(items), within))
        else:
            within = sum(
                slo.meets(
                    total=r.total_tokens if r.total_tokens is not None else 1 << 62,
                    input_=r.input_tokens if r.input_tokens is not None else 1 << 62,
                    output=r.output_tokens if r.output_tokens is not None else 1 << 62,
                    cost=r.cost_usd,
                    duration=None,
                )
                for r in call_rows
            )
            out.append(SLOResult(slo, len(call_rows), within))
    return out


def slo_table(results: list[SLOResult]) -> Table:
    """Results as a table."""
    columns = ["slo", "objective", "units", "within", "compliance_pct", "target_pct", "met", "error_budget"]
    rows = [
        (
            r.slo.name,
            r.slo.describe(),
            r.units,
            r.within,
            None if r.compliance is None else (r.compliance * 100).quantize(Decimal("0.01")),
            r.slo.target * 100,
            r.met,
            r.error_budget,
        )
        for r in results
    ]
    return Table(
        "service-level objectives",
        columns,
        rows,
        ["error_budget: units that may still miss before the target fails"],
    )
