"""Subjects, meters and budgets.

A :class:`Subject` says whom a call is charged to. A :class:`Budget` limits one meter for one
scope over a window.

* **Scopes**: ``org``, ``project``, ``team``, ``user``, ``key``, ``agent``, ``session``, ``task``, and
  tags as ``tag:NAME`` (``tag:cost_center``: the subject's tag ``cost_center``). Budgets nest: a
  call is checked and charged against *every* budget that applies to its subject, up the whole
  hierarchy, all at once.
* **Templates**: a budget without ``subject_id`` applies to each value of its scope separately
  ("each user: 200,000 tokens a day"). The ledger makes an *instance* of it for a scope value on
  first use (a balance row keyed by the template's name and the value; listed by
  ``Ledger.instances``); a template's limit, window and thresholds apply to every instance, and
  changing the template changes them all. A fixed budget for one value (``user=alice``) applies
  *as well as* the template, so the tighter one decides, unless it says ``overrides: <template>``:
  then it replaces the template's instance for that value ("each user 200k a day, alice 500k").
* **Meters**: the built-in :data:`METERS` and custom ones (any lower-case identifier:
  ``tool_calls``, ``gpu_seconds``), charged through the same ledger API (``charge_meter``, or a
  usage event's ``charged``). A custom meter must be declared (``custom=True``; ``custom: true``
  in YAML and the admin API, ``;custom`` in a spec): LLM calls never charge one, so a mistyped
  built-in meter (``total_token``) would make a budget that never limits anything. The check is
  made where a :class:`Budget` is built, so every way of writing one inherits it.
* **Models**: a budget with ``models`` (``[gpt-5, "claude-*"]``, shell-style patterns) applies
  only to calls sent to a matching model, matched on the canonical model name (the one price
  resolution uses, :func:`~tokenward.core.pricebook.canonical_model`: ``google/gemini-3-pro`` and
  ``gemini-3-pro`` are one model; case-insensitive). The guard puts the model a call is actually
  sent to in its subject (:attr:`Subject.model`), again after a degrade or a fallback, so "gpt-5
  at most $50 a day for this team" is one budget. A subject with no model (a custom meter's
  charge) is charged by no per-model budget.
* **Mode**: ``hard`` (enforced), ``soft`` (never denies; alerts, may degrade), ``shadow`` (decided
  and recorded as would-be denials, never enforced).
* **Action** when a hard budget cannot pay for an LLM call: ``clamp`` (default: lower the output
  bound to what it can pay for, deny below the minimum), ``deny`` (refuse any call that does not
  fit with its full output bound), ``degrade`` (as ``clamp``, and calls are degraded by the
  guard's degrade policy once the budget runs low), ``stop`` (as ``clamp``; once exhausted the
  session or task is ended for good: see ``docs/budgets.md``).
* **Thresholds**: shares of the limit (default 50 %, 80 %, 100 %) at which the ledger records a
  threshold event, once per budget instance, window and threshold.
* **Store failure** (``on_store_failure``): what a hard budget does to a call while the ledger's
  store (Redis, PostgreSQL) is unreachable: ``closed`` (default: refuse it, the gateway answers
  503) or ``open`` (admit it unchecked; its usage is spooled locally and charged when the store
  returns). See ``docs/deploy.md``.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from tokenward.core.pricebook import canonical_model, model_candidates
from tokenward.core.pricing import Cost
from tokenward.core.usage import Usage
from tokenward.core.windows import NO_WINDOW, Window
from tokenward.errors import ConfigError
from tokenward.numbers import plain

__all__ = [
    "ACTIONS",
    "DEFAULT_THRESHOLDS",
    "METERS",
    "NAMESPACED_SCOPES",
    "SCOPES",
    "STORE_FAILURE_POLICIES",
    "Budget",
    "Subject",
    "applicable",
    "is_scope",
    "meter_amounts",
    "models_suffix",
    "parse_budget_spec",
    "parse_short_spec",
    "short_name",
    "short_spec",
    "ungrouped",
]

SCOPES: tuple[str, ...] = ("org", "project", "team", "user", "key", "agent", "session", "task")
"""Scopes a budget can apply to, widest first (besides tags: ``tag:NAME``)."""

NAMESPACED_SCOPES: tuple[str, ...] = ("user", "agent", "session", "task")
"""Scopes whose values live in a project's namespace: a subject with a project stores them as
``<project>/<value>`` (:meth:`Subject.namespaced`), so two tenants' ``main`` sessions are two
sessions. ``org``, ``project``, ``team`` and ``key`` are set only by administrators."""

METERS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_write_tokens",
    "cost_usd",
    "requests",
)
"""Built-in meters: tokens, USD, or calls."""

ACTIONS: tuple[str, ...] = ("clamp", "deny", "degrade", "stop")
"""What a hard budget does to a call it cannot pay for (see the module docstring)."""

STORE_FAILURE_POLICIES: tuple[str, ...] = ("closed", "open")
"""What a hard budget does while the ledger's store is unreachable (see the module docstring)."""

DEFAULT_THRESHOLDS: tuple[Decimal, ...] = (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
"""Alert thresholds, as shares of the limit: 50 %, 80 %, 100 %."""

Mode = Literal["hard", "soft", "shadow"]
Action = Literal["clamp", "deny", "degrade", "stop"]

_TAG_SCOPE = re.compile(r"^tag:([A-Za-z0-9_.\-]{1,64})$")
_METER = re.compile(r"^[a-z][a-z0-9_]*$")


def is_scope(scope: str) -> bool:
    """Whether ``scope`` is one of :data:`SCOPES` or a tag scope ``tag:NAME``."""
    return scope in SCOPES or _TAG_SCOPE.match(scope) is not None


@dataclass(frozen=True, slots=True)
class Subject:
    """Whom a call is charged to; every field is optional.

    ``tags`` are free-form ``(name, value)`` pairs (a team's cost centre, an experiment arm); a
    budget of scope ``tag:NAME`` applies to the subject's value of tag ``NAME``.

    ``model`` is not a scope: it is the canonical name of the model a call is sent to
    (:func:`~tokenward.core.pricebook.canonical_model`), set by the guard when it admits the call
    (:meth:`with_model`), so budgets limited to some ``models`` apply to it; None for a charge
    that is not a model call.
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
    model: str | None = None

    def with_model(self, model: str | None) -> Subject:
        """This subject for a call sent to ``model`` (stored by its canonical name; None: none)."""
        canonical = canonical_model(model) if model else None
        return self if canonical == self.model else replace(self, model=canonical)

    def value(self, scope: str) -> str | None:
        """The subject's value for ``scope`` (a tag's value for ``tag:NAME``; None when it has none)."""
        if scope in SCOPES:
            value = getattr(self, scope, None)
        elif scope.startswith("tag:"):
            name = scope[4:]
            value = next((v for k, v in self.tags if k == name), None)
        else:
            return None
        return value if isinstance(value, str) and value else None

    def namespaced(self) -> Subject:
        """This subject with its :data:`NAMESPACED_SCOPES` values and its tag values in its
        project's namespace: ``<project>/<value>``, left as they are when they already start with
        ``<project>/`` (so applying it twice changes nothing). A subject without a project is
        returned unchanged.

        The gateway stores every call of a project's key this way; the CLI and the admin API
        apply it to the subject of a query that names a project, so ``--project shop --session
        s-1`` finds what the gateway charged as ``shop/s-1``.
        """
        project = self.project
        if not project:
            return self
        values: dict[str, Any] = {
            scope: value if value.startswith(f"{project}/") else f"{project}/{value}"
            for scope in NAMESPACED_SCOPES
            if (value := self.value(scope)) is not None
        }
        if self.tags:
            values["tags"] = tuple(
                (name, value if value.startswith(f"{project}/") else f"{project}/{value}")
                for name, value in self.tags
            )
        return replace(self, **values) if values else self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the scopes that are set, plus ``tags`` as a mapping and ``model`` when set."""
        out: dict[str, Any] = {scope: self.value(scope) for scope in SCOPES if self.value(scope)}
        if self.tags:
            out["tags"] = dict(self.tags)
        if self.model:
            out["model"] = self.model
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Subject:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        tags = data.get("tags") or {}
        return cls(
            **{s: str(data[s]) for s in SCOPES if data.get(s) is not None},
            tags=tuple(sorted((str(k), str(v)) for k, v in dict(tags).items())),
            model=None if data.get("model") is None else str(data["model"]),
        )


_NAME = re.compile(r"^[A-Za-z0-9_.:@/=\-]{1,200}$")


@dataclass(frozen=True, slots=True)
class Budget:
    """A limit on one meter for one scope over a window.

    Attributes:
        name: unique name, shown in denials.
        scope: one of :data:`SCOPES`, or ``tag:NAME``.
        meter: one of :data:`METERS` or a custom meter name; tokens, USD, calls, or the custom
            meter's own unit.
        limit: the limit in the meter's unit (tokens, USD, calls), exact.
        subject_id: the scope value it applies to, or None for a template ("each value of the
            scope", an instance per value made on first use).
        window: when spend resets (none, calendar, rolling).
        mode: ``hard`` (enforced), ``soft`` (never denies) or ``shadow`` (decides and records
            would-be denials without enforcing).
        unpriced: for a ``cost_usd`` budget, what to do with a call whose price is unknown:
            ``deny`` (default) or ``allow``.
        thresholds: shares of the limit (0.8 = 80 %) at which a threshold event is recorded,
            ascending; empty for none.
        action: what a hard budget does to a call it cannot pay for: ``clamp``, ``deny``,
            ``degrade`` or ``stop`` (see the module docstring).
        overrides: the name of a template (same scope) whose instance for ``subject_id`` this
            fixed budget replaces; None when it applies alongside every template.
        on_store_failure: while the ledger's store is unreachable, ``closed`` (default: refuse
            calls this hard budget applies to) or ``open`` (admit them unchecked, charge later).
        custom: ``meter`` is a custom meter (``gpu_seconds``), declared as such; required for any
            meter outside :data:`METERS`, refused on a built-in one.
        models: shell-style patterns (``gpt-5``, ``claude-*``) of the models it applies to,
            matched on the call's canonical model name (:attr:`Subject.model`); empty: every call.
        max_input_tokens: the largest prompt (input tokens, by the pre-call estimate) a call this
            hard budget applies to may send, or None for no bound: a larger prompt is refused
            before anything is spent (:class:`~tokenward.errors.PromptTooLarge`; a 400 from the
            gateway), whatever the budget's balance.
    """

    name: str
    scope: str
    meter: str
    limit: Decimal
    subject_id: str | None = None
    window: Window = field(default=NO_WINDOW)
    mode: Mode = "hard"
    unpriced: Literal["deny", "allow"] = "deny"
    thresholds: tuple[Decimal, ...] = DEFAULT_THRESHOLDS
    action: Action = "clamp"
    overrides: str | None = None
    on_store_failure: Literal["closed", "open"] = "closed"
    custom: bool = False
    models: tuple[str, ...] = ()
    max_input_tokens: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"budget name {self.name!r}: use 1-200 letters, digits and _.:@/=-")
        if not is_scope(self.scope):
            raise ConfigError(
                f"budget {self.name!r}: unknown scope {self.scope!r}; known: {', '.join(SCOPES)} or tag:NAME"
            )
        if not _METER.match(self.meter):
            raise ConfigError(f"budget {self.name!r}: meter {self.meter!r} must be a lower-case identifier")
        _check_custom(self.name, self.meter, self.custom)
        if not isinstance(self.limit, Decimal) or not self.limit.is_finite() or self.limit < 0:
            raise ConfigError(
                f"budget {self.name!r}: limit must be a non-negative number, got {self.limit!r}"
            )
        if not _sized(self.limit):
            raise ConfigError(
                f"budget {self.name!r}: limit must be below 1e31 with at most {_PLACES} decimal places, "
                f"got {self.limit!r}"
            )
        if self.mode not in ("hard", "soft", "shadow"):
            raise ConfigError(f"budget {self.name!r}: mode must be hard, soft or shadow")
        if self.unpriced not in ("deny", "allow"):
            raise ConfigError(f"budget {self.name!r}: unpriced must be deny or allow")
        if self.action not in ACTIONS:
            raise ConfigError(f"budget {self.name!r}: action must be one of {', '.join(ACTIONS)}")
        if self.on_store_failure not in STORE_FAILURE_POLICIES:
            raise ConfigError(
                f"budget {self.name!r}: on_store_failure must be closed or open, got {self.on_store_failure!r}"
            )
        if self.max_input_tokens is not None and (
            isinstance(self.max_input_tokens, bool)
            or not isinstance(self.max_input_tokens, int)
            or self.max_input_tokens < 1
        ):
            raise ConfigError(
                f"budget {self.name!r}: max_input_tokens must be a positive whole number of tokens, "
                f"got {self.max_input_tokens!r}"
            )
        if self.subject_id is not None and (not isinstance(self.subject_id, str) or not self.subject_id):
            raise ConfigError(f"budget {self.name!r}: id must be a non-empty string")
        if self.overrides is not None and (self.subject_id is None or not _NAME.match(str(self.overrides))):
            raise ConfigError(
                f"budget {self.name!r}: overrides names a template and needs an id (a fixed budget)"
            )
        object.__setattr__(self, "models", _models(self.name, self.models))
        shares = []
        for share in self.thresholds:
            if not isinstance(share, Decimal) or not share.is_finite() or not 0 < share <= 10:
                raise ConfigError(
                    f"budget {self.name!r}: threshold {share!r} must be a share of the limit above 0 "
                    "(0.8 = 80 %; at most 10)"
                )
            shares.append(share)
        object.__setattr__(self, "thresholds", tuple(sorted(set(shares))))

    @property
    def is_template(self) -> bool:
        """Whether this budget applies to each value of its scope (no ``subject_id``)."""
        return self.subject_id is None

    def instance_name(self, subject_id: str) -> str:
        """How one instance is named in listings: ``each-user[alice]`` (a fixed budget: its name)."""
        return f"{self.name}[{subject_id}]" if self.subject_id is None else self.name

    def applies_to(self, subject: Subject, *, every_model: bool = False) -> str | None:
        """The scope value this budget charges for ``subject``, or None when it does not apply.

        A template charges the subject's value. A fixed budget charges its own ``subject_id``
        when the subject's value is that id, or, for an id that names no project (no ``/``) on a
        :data:`NAMESPACED_SCOPES` or tag scope, that id in the subject's project: ``id: alice``
        applies to ``alice`` and to ``demo/alice`` of project ``demo``; ``id: demo/alice`` only to
        the latter. A budget with ``models`` applies only when the subject's model matches one
        (``every_model``: to a subject without a model too, for listings of what applies).
        """
        value = subject.value(self.scope)
        if value is None:
            return None
        if self.models and not self.covers(subject.model) and not (every_model and subject.model is None):
            return None
        if self.subject_id is None:
            return value
        if value == self.subject_id:
            return value
        in_project = (
            (self.scope in NAMESPACED_SCOPES or self.scope.startswith("tag:"))
            and subject.project
            and "/" not in self.subject_id
            and value == f"{subject.project}/{self.subject_id}"
        )
        return self.subject_id if in_project else None

    def covers(self, model: str | None) -> bool:
        """Whether a call sent to ``model`` is one this budget counts: always without ``models``;
        else when the canonical name of ``model`` matches one of them (``fnmatch``, lower case),
        or, like price resolution (:func:`~tokenward.core.pricebook.model_candidates`), that name
        without a trailing date: ``gpt-5`` counts the dated snapshot ``gpt-5-2025-08-07``, while a
        pattern naming a snapshot counts that snapshot only."""
        if not self.models:
            return True
        if not model:
            return False
        names = {canonical_model(name) for name in model_candidates(canonical_model(model))}
        return any(fnmatch.fnmatchcase(name, pattern) for name in names for pattern in self.models)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (limit and thresholds as decimal strings, the window as its string;
        ``models`` only when set)."""
        out: dict[str, Any] = {
            "name": self.name,
            "scope": self.scope,
            "meter": self.meter,
            "limit": plain(self.limit),
            "subject_id": self.subject_id,
            "window": str(self.window),
            "mode": self.mode,
            "unpriced": self.unpriced,
            "thresholds": [plain(t) for t in self.thresholds],
            "action": self.action,
            "overrides": self.overrides,
            "on_store_failure": self.on_store_failure,
            "custom": self.custom,
        }
        if self.max_input_tokens is not None:
            out["max_input_tokens"] = self.max_input_tokens
        if self.models:
            out["models"] = list(self.models)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        """Build from a config or :meth:`to_dict` mapping.

        Accepted keys: ``name``, ``scope`` (or ``tag:NAME``), ``meter``, ``limit``,
        ``id``/``subject_id``, ``window`` (``none``, ``day``, ``month@Europe/Paris``,
        ``rolling:5h``, or a mapping such as ``{type: rolling, duration: 5h}``), ``week_start``
        (``sunday`` or 0-6, for week windows), ``mode``, ``unpriced``, ``thresholds`` (shares
        ``[0.5, 0.9]`` or percents ``["50%", "90%"]``; ``[]`` for none), ``action``,
        ``overrides`` (a template this fixed budget replaces for its id), ``on_store_failure``
        (``closed`` or ``open``), ``custom`` (``true`` declares ``meter`` a custom meter),
        ``max_input_tokens`` (the largest prompt a call may send under this budget),
        ``models`` (patterns of the models it applies to: ``[gpt-5, "claude-*"]`` or
        ``"gpt-5,claude-*"``).

        Raises:
            ConfigError: a missing or invalid field (named), or a meter outside :data:`METERS`
                without ``custom: true``.
        """
        known = {
            "name", "scope", "meter", "limit", "id", "subject_id", "window", "week_start",
            "mode", "unpriced", "thresholds", "alerts", "action", "overrides", "on_store_failure",
            "custom", "models", "max_input_tokens",
        }  # fmt: skip
        unknown = set(data) - known
        label = data.get("name", "?")
        if unknown:
            raise ConfigError(f"budget {label!r}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        for required in ("scope", "meter", "limit"):
            if data.get(required) is None:
                raise ConfigError(f"budget {label!r}: {required!r} is required")
        subject_id = data.get("subject_id", data.get("id"))
        if isinstance(subject_id, bool) or not isinstance(subject_id, str | int | None):
            # YAML reads id: no (Norway's org) as false: the budget was for the id "False"
            raise ConfigError(
                f"budget {label!r}: id must be a string, got {subject_id!r} (quote it in YAML: id: 'no')"
            )
        scope, meter = str(data["scope"]), str(data["meter"])
        name = data.get("name") or f"{scope}{'=' + str(subject_id) if subject_id else ''}:{meter}"
        try:
            window = Window.from_value(data.get("window"), week_start=data.get("week_start"))
        except ConfigError as exc:
            raise ConfigError(f"budget {name!r}: {exc}") from None
        raw_thresholds = data.get("thresholds", data.get("alerts"))
        return cls(
            name=str(name),
            scope=scope,
            meter=meter,
            limit=_amount(data["limit"], f"budget {name!r}: limit"),
            subject_id=None if subject_id is None else str(subject_id),
            window=window,
            mode=str(data.get("mode", "hard")),  # type: ignore[arg-type]
            unpriced=str(data.get("unpriced", "deny")),  # type: ignore[arg-type]
            thresholds=DEFAULT_THRESHOLDS
            if raw_thresholds is None
            else _thresholds(raw_thresholds, f"budget {name!r}"),
            action=str(data.get("action", "clamp")),  # type: ignore[arg-type]
            overrides=None if data.get("overrides") is None else str(data["overrides"]),
            on_store_failure=str(data.get("on_store_failure") or "closed"),  # type: ignore[arg-type]
            custom=data.get("custom", False),
            models=_model_list(data.get("models"), f"budget {name!r}"),
            max_input_tokens=_whole(data.get("max_input_tokens"), f"budget {name!r}: max_input_tokens"),
        )


def _check_custom(name: str, meter: str, custom: bool) -> None:
    """Refuse an undeclared custom meter (a typo would never charge) and a built-in one declared
    custom; the message says how to fix either."""
    if not isinstance(custom, bool):
        raise ConfigError(f"budget {name!r}: custom must be true or false, got {custom!r}")
    if custom and meter in METERS:
        raise ConfigError(f"budget {name!r}: {meter!r} is a built-in meter; drop custom")
    if custom or meter in METERS:
        return
    close = difflib.get_close_matches(meter, METERS, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"budget {name!r}: unknown meter {meter!r}; {hint}the built-in meters are {', '.join(METERS)}. "
        "A custom meter (charged only by Ledger.charge_meter) must be declared: custom: true on a "
        "YAML or admin-API budget, ;custom in a spec"
    )


_MODEL_PATTERN = re.compile(r"^[A-Za-z0-9_.:@/*?\[\]!\-]{1,200}$")


def _model_list(value: Any, where: str) -> tuple[str, ...]:
    """``models`` as written in a config: a list of patterns or one comma-separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{where}: models must be a list of model names or patterns, e.g. [gpt-5, 'claude-*']"
        )
    if not value:
        raise ConfigError(f"{where}: models must name at least one model (leave it out for every model)")
    return tuple(v.strip() for v in value)


def _models(name: str, models: Any) -> tuple[str, ...]:
    """Check and normalise the patterns: canonical (no provider prefix, lower case), unique, in order."""
    if not isinstance(models, tuple | list):
        raise ConfigError(f"budget {name!r}: models must be a list of model names or patterns")
    out: list[str] = []
    for pattern in models:
        if not isinstance(pattern, str) or not _MODEL_PATTERN.match(pattern.strip()):
            raise ConfigError(
                f"budget {name!r}: model {pattern!r} must be a model name or a pattern such as 'claude-*' "
                "(letters, digits, _.:@/-, and * ? [ ])"
            )
        canonical = canonical_model(pattern)
        if canonical not in out:
            out.append(canonical)
    return tuple(out)


def _thresholds(value: Any, where: str) -> tuple[Decimal, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(";", ",").split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: thresholds must be a list of shares (0.8) or percents ('80%')")
    out = []
    for item in value:
        text = str(item).strip()
        try:
            share = Decimal(text[:-1]) / 100 if text.endswith("%") else _amount(item, f"{where}: threshold")
        except InvalidOperation:
            raise ConfigError(f"{where}: threshold {item!r} is not a number") from None
        if not share.is_finite() or not _sized(share):  # NaN% is no share; 1e-1000000 no readable one
            raise ConfigError(
                f"{where}: threshold {item!r}: write a share (0.8) or a percent ('80%'), "
                f"at most {_PLACES} decimal places"
            )
        if share > 10 and not text.endswith("%"):
            raise ConfigError(
                f"{where}: threshold {item!r} is a share of the limit (0.8 = 80 %); write '{item}%'"
            )
        out.append(share)
    return tuple(out)


_PLACES = 18


def _sized(number: Decimal) -> bool:
    """Whether a limit (a threshold) is one the ledger's arithmetic and a person can read: below ``1e31``, with
    at most :data:`_PLACES` decimal places (``1e1000000`` overflows the decimal context, and
    ``1e-1000000`` is a million digits in a 402 message)."""
    exponent = number.as_tuple().exponent
    if number.is_zero():
        return isinstance(exponent, int) and -_PLACES <= exponent <= 30
    return number.adjusted() <= 30 and int(number.normalize().as_tuple().exponent) >= -_PLACES


_GROUPED = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?$")


def ungrouped(value: Any, where: str) -> str:
    """``value`` as text without ``_`` and thousands separators (``"1,000,000"``, ``"5_000"``).

    A comma is read only as a thousands separator (a digit group of three after it): ``"0,50"``
    or ``"5,5"``, a decimal comma, would otherwise be read as 50 or 55, a limit 100 or 10 times
    the one meant.

    Raises:
        ConfigError: a comma that does not separate thousands.
    """
    text = str(value).replace("_", "").strip()
    if "," not in text:
        return text
    if not _GROUPED.match(text.lstrip("$")):
        raise ConfigError(
            f"{where}: {value!r}: a comma is read only as a thousands separator (1,000); "
            "write decimals with a point (0.50)"
        )
    return text.replace(",", "")


def _whole(value: Any, where: str) -> int | None:
    """A whole number of tokens from a config or spec value (``"8000"``, ``8_000``), or None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a whole number, got {value!r}")
    try:
        return int(ungrouped(value, where))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a whole number") from None


def _amount(value: Any, where: str) -> Decimal:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        number = Decimal(ungrouped(value, where).lstrip("$"))
    except InvalidOperation:
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ConfigError(f"{where}: must be a non-negative number, got {value!r}")
    return number


_SPEC = re.compile(
    r"^\s*(?P<scope>tag:[A-Za-z0-9_.\-]+|[a-z]+)(?:=(?P<id>[^:;]+))?:(?P<meter>[a-z_]+)=(?P<limit>[^/;]+)"
    r"(?:/(?P<window>[^;]+))?(?P<options>(?:;[^;]*)*)$"
)
_OPTIONS = {
    "mode", "action", "thresholds", "unpriced", "week_start", "name", "overrides", "on_store_failure", "models",
    "max_input_tokens",
}  # fmt: skip


def parse_budget_spec(spec: str) -> Budget:
    """Parse ``SCOPE[=ID]:METER=LIMIT[/WINDOW][;OPTION=VALUE...]``.

    Examples: ``session:total_tokens=50000`` (each session), ``session:cost_usd=0.50``,
    ``task:cost_usd=1/day``, ``user=alice:cost_usd=5/month@Europe/Paris``,
    ``user:total_tokens=200000/day@Europe/Berlin;action=deny``,
    ``tag:cost_center=cc-42:cost_usd=500/month;mode=shadow``, ``key:cost_usd=2/rolling:5h``,
    ``agent:gpu_seconds=3600;custom`` (a custom meter must be marked ``custom``, so a typo such as
    ``tokens`` for ``total_tokens`` is an error rather than a budget that never charges anything).
    Options: ``mode``, ``action``, ``thresholds`` (``50%,90%``), ``unpriced``, ``week_start``,
    ``name``, ``overrides``, ``on_store_failure``, ``models`` (``gpt-5,claude-*``: the budget
    applies to calls sent to those models only), and the flag ``custom``. The budget is named by
    the spec without its options (and with :func:`models_suffix` for ``models``) unless ``name``
    says otherwise.

    Raises:
        ConfigError: the spec does not parse, or names an unknown scope, meter, window or option.
    """
    match = _SPEC.match(spec)
    if not match:
        raise ConfigError(
            f"budget spec {spec!r}: expected SCOPE[=ID]:METER=LIMIT[/WINDOW][;OPTION=VALUE], e.g. "
            "session:cost_usd=0.50 or task:total_tokens=200000/day"
        )
    options = _spec_options(spec, match["options"])
    named = options.pop("name", None)
    data: dict[str, Any] = {
        # the default name is the spec without the "$" and thousands commas a limit may have
        # (neither is allowed in a name): "user=alice:cost_usd=$5" is named "user=alice:cost_usd=5"
        "name": named or spec.strip().partition(";")[0].strip().replace("$", "").replace(",", ""),
        "scope": match["scope"],
        "id": match["id"],
        "meter": match["meter"],
        "limit": match["limit"],
        "window": match["window"],
        **options,
    }
    budget = _spec_budget(spec, data)
    if named or not budget.models:
        return budget
    return replace(budget, name=budget.name + models_suffix(budget.models))


def models_suffix(models: Iterable[str]) -> str:
    """What a default budget name adds for its ``models``, so per-model budgets written with one
    spec (``team=search:cost_usd=50/day;models=gpt-5`` and ``...;models=claude-*``) are two
    budgets, not one replacing the other: ``:models=gpt-5/gpt-5-mini``, or, for patterns a name
    cannot hold (``claude-*``), ``:models=sha256-`` and 16 hex digits of them."""
    joined = "/".join(models)
    if not (_NAME.match(joined) and len(joined) <= 64):
        joined = "sha256-" + hashlib.sha256(",".join(models).encode()).hexdigest()[:16]
    return f":models={joined}"


_SHORT_SPEC = re.compile(
    r"^\s*(?P<meter>[a-z_][a-z0-9_]*)=(?P<limit>[^/;]+)(?:/(?P<window>[^;]+))?(?P<options>(?:;[^;]*)*)$"
)


def parse_short_spec(spec: str, *, scope: str, subject_id: str) -> Budget:
    """Parse the short form ``METER=LIMIT[/WINDOW][;OPTION=VALUE...]`` of a budget for one scope
    value (an SDK session's or task's own budget): ``total_tokens=50000``,
    ``cost_usd=0.50/day;action=deny``, ``tool_calls=20;custom``. The options are those of
    :func:`parse_budget_spec`; the budget is named ``SCOPE=ID:METER`` (:func:`short_name`) unless
    ``name`` says otherwise.

    Raises:
        ConfigError: the spec does not parse, or names an unknown meter, window or option.
    """
    match = _SHORT_SPEC.match(spec)
    if not match:
        raise ConfigError(
            f"budget {spec!r}: expected METER=LIMIT[/WINDOW][;OPTION=VALUE], e.g. total_tokens=50000 "
            "or cost_usd=0.50/day;action=deny"
        )
    options = _spec_options(spec, match["options"])
    named = options.pop("name", None)
    data: dict[str, Any] = {
        "name": named or f"{scope}={subject_id}:{match['meter']}",
        "scope": scope,
        "id": subject_id,
        "meter": match["meter"],
        "limit": match["limit"].strip(),
        "window": None if match["window"] is None else match["window"].strip(),
        **options,
    }
    budget = _spec_budget(spec, data)
    return budget if named else replace(budget, name=short_name(budget))


def short_name(budget: Budget) -> str:
    """The name a short form gives its budget unless ``name`` says otherwise: ``SCOPE=ID:METER``,
    and :func:`models_suffix` when it has ``models``."""
    base = f"{budget.scope}={budget.subject_id}:{budget.meter}"
    return base + models_suffix(budget.models) if budget.models else base


def short_spec(budget: Budget, *, named: bool = True) -> str:
    """The short form of ``budget`` (:func:`parse_short_spec` reads it back for the same scope
    value): ``total_tokens=30000``, ``cost_usd=0.5/day;action=deny;models=gpt-5``. Options left at
    their defaults are left out; the name is kept only when it is not the default one, and never
    without ``named``.

    Raises:
        ConfigError: the budget overrides a template (a short form cannot say so).
    """
    if budget.overrides is not None:
        raise ConfigError(f"budget {budget.name!r} overrides a template; it has no short form")
    window = "" if str(budget.window) == "none" else f"/{budget.window}"
    options = [
        f"{name}={value}"
        for name, value, default in (
            ("mode", budget.mode, "hard"),
            ("action", budget.action, "clamp"),
            ("unpriced", budget.unpriced, "deny"),
            ("on_store_failure", budget.on_store_failure, "closed"),
        )
        if value != default
    ]
    if budget.thresholds != DEFAULT_THRESHOLDS:
        options.append("thresholds=" + ",".join(plain(t) for t in budget.thresholds))
    if budget.models:
        options.append("models=" + ",".join(budget.models))
    if named and budget.subject_id is not None and budget.name != short_name(budget):
        options.append(f"name={budget.name}")
    if budget.custom:
        options.append("custom")
    return f"{budget.meter}={plain(budget.limit)}{window}" + "".join(f";{o}" for o in options)


def _spec_options(spec: str, text: str) -> dict[str, Any]:
    """The ``;OPTION=VALUE`` part of a spec as budget fields (the flag ``custom`` as ``True``)."""
    options: dict[str, Any] = {}
    for option in (o.strip() for o in text.split(";")):
        if not option:
            continue
        if option == "custom":
            options["custom"] = True
            continue
        key, eq, value = option.partition("=")
        if not eq or key.strip() not in _OPTIONS:
            raise ConfigError(
                f"budget spec {spec!r}: unknown option {option!r}; known: {', '.join(sorted(_OPTIONS))}, custom"
            )
        options[key.strip()] = value.strip()
    return options


def _spec_budget(spec: str, data: Mapping[str, Any]) -> Budget:
    """The budget of a parsed spec; an undeclared custom meter is named with the spec's own fix."""
    if data["meter"] not in METERS and not data.get("custom"):
        # A typo (``tokens`` for ``total_tokens``) would make a budget that never charges anything.
        close = difflib.get_close_matches(data["meter"], METERS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"budget spec {spec!r}: unknown meter {data['meter']!r}; {hint}known: {', '.join(METERS)} "
            "(mark a custom meter with ;custom)"
        )
    return Budget.from_dict(data)


def applicable(
    budgets: Iterable[Budget], subject: Subject, *, every_model: bool = False
) -> list[tuple[Budget, str]]:
    """Every budget that applies to ``subject``, with the scope value it charges.

    A template's instance is left out where a fixed budget of the same scope for that value
    ``overrides`` it. ``every_model``: per-model budgets apply to a subject without a model (a
    listing of balances: ``tokenward balances``, ``guard.remaining()``), never to a charge.
    """
    out = []
    replaced = set()
    for budget in budgets:
        value = budget.applies_to(subject, every_model=every_model)
        if value is not None:
            out.append((budget, value))
            if budget.overrides is not None:  # the template's instance is keyed by the subject's value
                replaced.add((budget.overrides, budget.scope, subject.value(budget.scope)))
    if not replaced:
        return out
    return [(b, v) for b, v in out if not (b.subject_id is None and (b.name, b.scope, v) in replaced)]


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
