"""Subjects, meters and budgets.

A :class:`Subject` says whom a call is charged to. A :class:`Budget` limits one meter for one
scope over a window. A budget either names one scope value (``user: alice``) or none, in which
case it is a template: every value of the scope gets an instance of its own on first use ("each
session: 50,000 tokens").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from tokenward.core.pricing import Cost
from tokenward.core.usage import Usage
from tokenward.core.windows import NO_WINDOW, Window
from tokenward.errors import ConfigError

__all__ = [
    "METERS",
    "SCOPES",
    "Budget",
    "Subject",
    "applicable",
    "meter_amounts",
    "parse_budget_spec",
]

SCOPES: tuple[str, ...] = ("org", "project", "team", "user", "key", "agent", "session", "task")
"""Scopes a budget can apply to, widest first."""

METERS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_write_tokens",
    "cost_usd",
    "requests",
)
"""Built-in meters: tokens, USD, or calls."""

Mode = Literal["hard", "soft", "shadow"]


@dataclass(frozen=True, slots=True)
class Subject:
    """Whom a call is charged to; every field is optional.

    ``tags`` are free-form ``(name, value)`` pairs (a team's cost centre, an experiment arm).
    """

    org: str | None = None
    project: str | None = None
    team: str | None = None
    user: str | None = None
    key: str | None = None
    agent: str | None = None
    session: str | None = None
    task: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def value(self, scope: str) -> str | None:
        """The subject's value for ``scope`` (None when it has none)."""
        value = getattr(self, scope, None) if scope in SCOPES else None
        return value if isinstance(value, str) and value else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the scopes that are set, plus ``tags`` as a mapping."""
        out: dict[str, Any] = {scope: self.value(scope) for scope in SCOPES if self.value(scope)}
        if self.tags:
            out["tags"] = dict(self.tags)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Subject:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        tags = data.get("tags") or {}
        return cls(
            **{s: str(data[s]) for s in SCOPES if data.get(s) is not None},
            tags=tuple(sorted((str(k), str(v)) for k, v in dict(tags).items())),
        )


_NAME = re.compile(r"^[A-Za-z0-9_.:@/=\-]{1,200}$")


@dataclass(frozen=True, slots=True)
class Budget:
    """A limit on one meter for one scope over a window.

    Attributes:
        name: unique name, shown in denials.
        scope: one of :data:`SCOPES`.
        meter: one of :data:`METERS` or a custom meter name; tokens, USD or calls.
        limit: the limit in the meter's unit (tokens, USD, calls), exact.
        subject_id: the scope value it applies to, or None for "each value of the scope".
        window: when spend resets.
        mode: ``hard`` (enforced), ``soft`` (never denies) or ``shadow`` (decides without
            enforcing).
        unpriced: for a ``cost_usd`` budget, what to do with a call whose price is unknown:
            ``deny`` (default) or ``allow``.
    """

    name: str
    scope: str
    meter: str
    limit: Decimal
    subject_id: str | None = None
    window: Window = field(default=NO_WINDOW)
    mode: Mode = "hard"
    unpriced: Literal["deny", "allow"] = "deny"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"budget name {self.name!r}: use 1-200 letters, digits and _.:@/=-")
        if self.scope not in SCOPES:
            raise ConfigError(
                f"budget {self.name!r}: unknown scope {self.scope!r}; known: {', '.join(SCOPES)}"
            )
        if not re.match(r"^[a-z][a-z0-9_]*$", self.meter):
            raise ConfigError(f"budget {self.name!r}: meter {self.meter!r} must be a lower-case identifier")
        if not isinstance(self.limit, Decimal) or not self.limit.is_finite() or self.limit < 0:
            raise ConfigError(
                f"budget {self.name!r}: limit must be a non-negative number, got {self.limit!r}"
            )
        if self.mode not in ("hard", "soft", "shadow"):
            raise ConfigError(f"budget {self.name!r}: mode must be hard, soft or shadow")
        if self.unpriced not in ("deny", "allow"):
            raise ConfigError(f"budget {self.name!r}: unpriced must be deny or allow")

    def applies_to(self, subject: Subject) -> str | None:
        """The scope value this budget charges for ``subject``, or None when it does not apply."""
        value = subject.value(self.scope)
        if value is None:
            return None
        if self.subject_id is not None and value != self.subject_id:
            return None
        return value

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (limit as a decimal string)."""
        return {
            "name": self.name,
            "scope": self.scope,
            "meter": self.meter,
            "limit": str(self.limit),
            "subject_id": self.subject_id,
            "window": str(self.window),
            "mode": self.mode,
            "unpriced": self.unpriced,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        """Build from a config or :meth:`to_dict` mapping.

        Accepted keys: ``name``, ``scope``, ``meter``, ``limit``, ``id``/``subject_id``,
        ``window`` (``none``, ``day``, ``month@Europe/Paris``...), ``mode``, ``unpriced``.

        Raises:
            ConfigError: a missing or invalid field (named).
        """
        known = {"name", "scope", "meter", "limit", "id", "subject_id", "window", "mode", "unpriced"}
        unknown = set(data) - known
        label = data.get("name", "?")
        if unknown:
            raise ConfigError(f"budget {label!r}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        for required in ("scope", "meter", "limit"):
            if data.get(required) is None:
                raise ConfigError(f"budget {label!r}: {required!r} is required")
        subject_id = data.get("subject_id", data.get("id"))
        scope, meter = str(data["scope"]), str(data["meter"])
        name = data.get("name") or f"{scope}{'=' + str(subject_id) if subject_id else ''}:{meter}"
        return cls(
            name=str(name),
            scope=scope,
            meter=meter,
            limit=_amount(data["limit"], f"budget {name!r}: limit"),
            subject_id=None if subject_id is None else str(subject_id),
            window=Window.parse(None if data.get("window") is None else str(data["window"])),
            mode=str(data.get("mode", "hard")),  # type: ignore[arg-type]
            unpriced=str(data.get("unpriced", "deny")),  # type: ignore[arg-type]
        )


def _amount(value: Any, where: str) -> Decimal:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        number = Decimal(str(value).replace("_", "").replace(",", "").lstrip("$"))
    except InvalidOperation:
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ConfigError(f"{where}: must be a non-negative number, got {value!r}")
    return number


_SPEC = re.compile(
    r"^\s*(?P<scope>[a-z]+)(?:=(?P<id>[^:]+))?:(?P<meter>[a-z_]+)=(?P<limit>[^/]+)(?:/(?P<window>.+))?$"
)


def parse_budget_spec(spec: str) -> Budget:
    """Parse ``SCOPE[=ID]:METER=LIMIT[/WINDOW]``.

    Examples: ``session:total_tokens=50000`` (each session), ``session:cost_usd=0.50``,
    ``task:cost_usd=1/day``, ``user=alice:cost_usd=5/month@Europe/Paris``.

    Raises:
        ConfigError: the spec does not parse, or names an unknown scope, meter or window.
    """
    match = _SPEC.match(spec)
    if not match:
        raise ConfigError(
            f"budget spec {spec!r}: expected SCOPE[=ID]:METER=LIMIT[/WINDOW], e.g. session:cost_usd=0.50 "
            "or task:total_tokens=200000/day"
        )
    if match["meter"] not in METERS:
        # A typo (``tokens`` for ``total_tokens``) would make a budget that never charges anything.
        raise ConfigError(
            f"budget spec {spec!r}: unknown meter {match['meter']!r}; known: {', '.join(METERS)}"
        )
    return Budget.from_dict(
        {
            "name": spec.strip(),
            "scope": match["scope"],
            "id": match["id"],
            "meter": match["meter"],
            "limit": match["limit"],
            "window": match["window"],
        }
    )


def applicable(budgets: Iterable[Budget], subject: Subject) -> list[tuple[Budget, str]]:
    """Every budget that applies to ``subject``, with the scope value it charges."""
    out = []
    for budget in budgets:
        value = budget.applies_to(subject)
        if value is not None:
            out.append((budget, value))
    return out


def meter_amounts(usage: Usage, cost: Cost | None = None, *, requests: int = 1) -> dict[str, Decimal]:
    """What one call charges to each built-in meter.

    Args:
        usage: the call's usage, with unknown input/output already filled in from our own
            counts where possible; a still-unknown count charges nothing to its meters.
        cost: the call's cost; an unknown cost charges nothing to ``cost_usd``.
        requests: calls to count (1).

    Returns:
        ``{meter: amount}``: tokens, USD or calls.
    """
    out: dict[str, Decimal] = {"requests": Decimal(requests)}
    if usage.input_tokens is not None:
        out["input_tokens"] = Decimal(usage.input_tokens)
    if usage.output_tokens is not None:
        out["output_tokens"] = Decimal(usage.output_tokens)
    if usage.input_tokens is not None or usage.output_tokens is not None:
        out["total_tokens"] = Decimal((usage.input_tokens or 0) + (usage.output_tokens or 0))
    out["cache_write_tokens"] = Decimal(usage.cache_write_tokens or 0)
    if cost is not None and cost.total_usd is not None:
        out["cost_usd"] = cost.total_usd
    return out
