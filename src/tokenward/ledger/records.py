"""Records the ledger keeps besides budgets, balances and usage events.

All are frozen value objects with ``to_dict`` (JSON-ready: amounts as decimal strings, instants as
ISO 8601 UTC) and ``from_dict``:

* :class:`ThresholdEvent`: spend crossed an alert threshold of a budget instance (once per budget,
  instance, window and threshold), numbered by a monotonically increasing ``id``;
* :class:`ShadowDenial`: a shadow budget would have refused a call;
* :class:`Denial`: a hard budget refused a call (or a flood of refusals folded into one count);
* :class:`StopMarker`: a session or task ended for good by a budget whose action is ``stop``;
* :class:`Adjustment`: a manual credit, refund or correction, an entry of its own;
* :class:`BudgetInstance`: a template's instance for one scope value, made on first use;
* :class:`KeyRecord`: a virtual key (its SHA-256, never the key), for the gateway;
* :class:`AuditEntry`: one administrative change, who, what, when, before and after;
* :class:`IdempotentAnswer`: a request sent with an ``Idempotency-Key`` and, once answered, its
  stored answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenward.clock import parse_instant, utc
from tokenward.core.budgets import Budget, Subject
from tokenward.errors import BudgetError, BudgetExceeded, Stopped, UnpricedCall, ValidationError
from tokenward.numbers import plain

__all__ = [
    "DENIAL_RATE",
    "EVENT_LOOKUPS",
    "IDEMPOTENCY_RUNNING",
    "Adjustment",
    "AuditEntry",
    "BudgetInstance",
    "Denial",
    "IdempotentAnswer",
    "KeyRecord",
    "LeaseGroup",
    "ShadowDenial",
    "StopMarker",
    "ThresholdEvent",
    "iso",
    "parse_iso",
]


EVENT_LOOKUPS = ("response_id", "conversation", "cached_content")
"""Event metadata keys a usage event can be found by (``Ledger.event_by_metadata``): the
provider's response id, the OpenAI conversation a call added to, the Gemini cached content a
call created. Each store can index them (``json_extract(data, '$.metadata.<key>')`` in SQLite,
``data->'metadata'->>'<key>'`` in PostgreSQL)."""


def check_lookup(key: str, value: Any) -> None:
    """Refuse a lookup key outside :data:`EVENT_LOOKUPS` or a value that is not a non-empty string.

    Raises:
        ValidationError: naming the key or the value.
    """
    if key not in EVENT_LOOKUPS:
        raise ValidationError(
            f"events are looked up by one of {', '.join(EVENT_LOOKUPS)}, not {key!r}", field="key"
        )
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{key} must be a non-empty string", field=key)


def iso(at: datetime | None) -> str | None:
    """``at`` as ISO 8601 UTC with a ``Z`` (None stays None)."""
    return None if at is None else utc(at).isoformat().replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    """Inverse of :func:`iso`."""
    return None if text is None else utc(datetime.fromisoformat(str(text).replace("Z", "+00:00")))


def _amounts(data: Mapping[str, Any] | None) -> dict[str, Decimal]:
    return {k: Decimal(str(v)) for k, v in (data or {}).items()}


@dataclass(frozen=True, slots=True)
class ThresholdEvent:
    """Spend of a budget instance reached ``threshold`` (a share: 0.8 = 80 %) of its limit.

    Written by the ledger in the same transaction as the charge that crossed it, once per
    ``(budget, subject_id, window_key, threshold)`` however many processes share the ledger.

    Attributes:
        id: monotonically increasing number (a consumer resumes with ``after=id``).
        at: when the crossing charge was recorded (UTC, the ledger's clock).
        budget / scope / subject_id / meter / mode: the budget instance.
        window_key: the window (its UTC start, ``""`` for none; a rolling window: the bucket in
            which the crossing happened).
        threshold: the share crossed.
        limit: the limit at the time, in the meter's unit.
        spent: spent in the window just after the crossing charge (meter units).
        reset_at: when the window resets (UTC), or None.
        request_id: the usage event (or adjustment id) whose charge crossed it.
    """

    id: int
    at: datetime
    budget: str
    scope: str
    subject_id: str
    meter: str
    mode: str
    window_key: str
    threshold: Decimal
    limit: Decimal
    spent: Decimal
    reset_at: datetime | None = None
    request_id: str | None = None

    @property
    def key(self) -> tuple[str, str, str, Decimal]:
        """What makes it unique: ``(budget, subject_id, window_key, threshold)``."""
        return (self.budget, self.subject_id, self.window_key, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "at": iso(self.at),
            "budget": self.budget,
            "scope": self.scope,
            "subject_id": self.subject_id,
            "meter": self.meter,
            "mode": self.mode,
            "window_key": self.window_key,
            "threshold": plain(self.threshold),
            "limit": plain(self.limit),
            "spent": plain(self.spent),
            "reset_at": iso(self.reset_at),
            "request_id": self.request_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThresholdEvent:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=int(data["id"]),
            at=parse_iso(data["at"]),  # type: ignore[arg-type]
            budget=str(data["budget"]),
            scope=str(data["scope"]),
            subject_id=str(data["subject_id"]),
            meter=str(data["meter"]),
            mode=str(data["mode"]),
            window_key=str(data["window_key"]),
            threshold=Decimal(str(data["threshold"])),
            limit=Decimal(str(data["limit"])),
            spent=Decimal(str(data["spent"])),
            reset_at=parse_iso(data.get("reset_at")),
            request_id=data.get("request_id"),
        )


@dataclass(frozen=True, slots=True)
class ShadowDenial:
    """A shadow budget would have refused a call that was admitted.

    Attributes:
        id: monotonically increasing number.
        at: when the call was admitted (UTC).
        budget / scope / subject_id / meter / window_key: the budget instance.
        limit / used / held / requested: the figures a hard budget would have denied with.
        reset_at: when the window resets (UTC), or None.
        request_id: the call's idempotency key (its request id), when it had one.
        reservation_id: the reservation the call was admitted with.
        subject: whom the call was for.
    """

    id: int
    at: datetime
    budget: str
    scope: str
    subject_id: str | None
    meter: str
    window_key: str
    limit: Decimal
    used: Decimal
    held: Decimal
    requested: Decimal
    reset_at: datetime | None = None
    request_id: str | None = None
    reservation_id: str | None = None
    subject: Subject = field(default_factory=Subject)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "at": iso(self.at),
            "budget": self.budget,
            "scope": self.scope,
            "subject_id": self.subject_id,
            "meter": self.meter,
            "window_key": self.window_key,
            "limit": plain(self.limit),
            "used": plain(self.used),
            "held": plain(self.held),
            "requested": plain(self.requested),
            "reset_at": iso(self.reset_at),
            "request_id": self.request_id,
            "reservation_id": self.reservation_id,
            "subject": self.subject.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShadowDenial:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=int(data["id"]),
            at=parse_iso(data["at"]),  # type: ignore[arg-type]
            budget=str(data["budget"]),
            scope=str(data["scope"]),
            subject_id=data.get("subject_id"),
            meter=str(data["meter"]),
            window_key=str(data.get("window_key") or ""),
            limit=Decimal(str(data["limit"])),
            used=Decimal(str(data["used"])),
            held=Decimal(str(data["held"])),
            requested=Decimal(str(data["requested"])),
            reset_at=parse_iso(data.get("reset_at")),
            request_id=data.get("request_id"),
            reservation_id=data.get("reservation_id"),
            subject=Subject.from_dict(data.get("subject") or {}),
        )


DENIAL_RATE = 60
"""How many denials of one subject by one budget in one minute (UTC) are recorded one by one;
the rest of that minute are folded into one aggregated :class:`Denial` whose ``count`` says how
many there were (never dropped). A ledger's ``denial_rate`` attribute overrides it."""


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


@dataclass(frozen=True, slots=True)
class Denial:
    """A call a hard budget refused (a 402 or 429 at the gateway, ``BudgetExceeded`` in the SDK),
    or, under a flood, a count of them.

    Attributes:
        id: monotonically increasing number (assigned by the store).
        at: when the call was refused (UTC, the ledger's clock); for an aggregated record, the
            first refusal folded into it.
        subject: whom the call was for (every scope and tag it carried).
        budget / scope / subject_id / meter / window: the budget that refused it (its name, the
            scope it applies to, the instance's scope value or None for a global budget, what it
            counts, its window such as ``day`` or ``rolling:1m``; None when unknown).
        limit / used / held / requested: the refusing budget's figures in the meter's unit (its
            limit, spent and held in the window, what this call needed); None when the refusal
            had none (an unpriced model).
        reset_at: when the budget's window resets (UTC), or None.
        reason: ``budget_exceeded``, ``stopped`` (its session or task was ended by a ``stop``
            budget) or ``unpriced`` (a cost budget and a model without a price).
        model: the model asked for, when the call was a model call.
        request_id: the refused call's request id.
        key: the virtual key's name the call came with (the subject's ``key`` scope), or None.
        estimate: what the call would have held at its full output bound, by meter
            (``input_tokens``, ``output_tokens``, ``total_tokens``, ``requests``, ``cost_usd``
            when priced): the estimate it was refused on. Empty for a direct meter charge.
        endpoint / provider: the API dialect and pricing provider of the call, when known.
        count: how many refusals this record stands for: 1, or more for an aggregated record.
        aggregated: whether it folds the refusals past :data:`DENIAL_RATE` of one subject, budget
            and minute.
        last_at: the last refusal folded into an aggregated record (else ``at``).
    """

    id: int
    at: datetime
    subject: Subject
    budget: str
    scope: str | None = None
    subject_id: str | None = None
    meter: str | None = None
    window: str | None = None
    limit: Decimal | None = None
    used: Decimal | None = None
    held: Decimal | None = None
    requested: Decimal | None = None
    reset_at: datetime | None = None
    reason: str = "budget_exceeded"
    model: str | None = None
    request_id: str | None = None
    key: str | None = None
    estimate: Mapping[str, Decimal] = field(default_factory=dict)
    endpoint: str | None = None
    provider: str | None = None
    count: int = 1
    aggregated: bool = False
    last_at: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at))
        if self.last_at is None:
            object.__setattr__(self, "last_at", self.at)
        if self.key is None and self.subject.key:
            object.__setattr__(self, "key", self.subject.key)

    @classmethod
    def of(
        cls,
        error: BudgetError,
        subject: Subject,
        at: datetime,
        *,
        model: str | None = None,
        request_id: str | None = None,
        estimate: Mapping[str, Decimal] | None = None,
        endpoint: str | None = None,
        provider: str | None = None,
    ) -> Denial:
        """The record of ``error`` refusing a call of ``subject`` at ``at`` (id 0: unstored)."""
        fields: dict[str, Any] = {}
        if isinstance(error, BudgetExceeded):
            fields = {
                "scope": error.scope,
                "subject_id": error.subject_id,
                "meter": error.meter,
                "window": error.window,
                "limit": error.limit,
                "used": error.used,
                "held": error.held,
                "requested": error.requested,
                "reset_at": error.reset_at,
                "reason": "stopped" if isinstance(error, Stopped) else "budget_exceeded",
            }
        elif isinstance(error, UnpricedCall):
            fields = {"reason": "unpriced", "meter": "cost_usd"}
            model = model or error.model
        return cls(
            id=0,
            at=at,
            subject=subject,
            budget=str(getattr(error, "budget", "") or ""),
            model=model,
            request_id=request_id,
            estimate=dict(estimate or {}),
            endpoint=endpoint,
            provider=provider,
            **fields,
        )

    @property
    def subject_key(self) -> str:
        """The subject as one canonical string (what flood aggregation counts per)."""
        return json.dumps(self.subject.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def minute(self) -> str:
        """The UTC minute of ``at`` (``2026-12-07T06:45Z``), what flood aggregation counts per."""
        return self.at.strftime("%Y-%m-%dT%H:%MZ")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "at": iso(self.at),
            "subject": self.subject.to_dict(),
            "budget": self.budget,
            "scope": self.scope,
            "subject_id": self.subject_id,
            "meter": self.meter,
            "window": self.window,
            "limit": None if self.limit is None else plain(self.limit),
            "used": None if self.used is None else plain(self.used),
            "held": None if self.held is None else plain(self.held),
            "requested": None if self.requested is None else plain(self.requested),
            "reset_at": iso(self.reset_at),
            "reason": self.reason,
            "model": self.model,
            "request_id": self.request_id,
            "key": self.key,
            "estimate": {k: plain(v) for k, v in self.estimate.items()},
            "endpoint": self.endpoint,
            "provider": self.provider,
            "count": self.count,
            "aggregated": self.aggregated,
            "last_at": iso(self.last_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Denial:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=int(data.get("id") or 0),
            at=parse_iso(data["at"]),  # type: ignore[arg-type]
            subject=Subject.from_dict(data.get("subject") or {}),
            budget=str(data.get("budget") or ""),
            scope=data.get("scope"),
            subject_id=data.get("subject_id"),
            meter=data.get("meter"),
            window=data.get("window"),
            limit=_decimal(data.get("limit")),
            used=_decimal(data.get("used")),
            held=_decimal(data.get("held")),
            requested=_decimal(data.get("requested")),
            reset_at=parse_iso(data.get("reset_at")),
            reason=str(data.get("reason") or "budget_exceeded"),
            model=data.get("model"),
            request_id=data.get("request_id"),
            key=data.get("key"),
            estimate=_amounts(data.get("estimate")),
            endpoint=data.get("endpoint"),
            provider=data.get("provider"),
            count=int(data.get("count") or 1),
            aggregated=bool(data.get("aggregated", False)),
            last_at=parse_iso(data.get("last_at")),
        )


@dataclass(frozen=True, slots=True)
class StopMarker:
    """A session or task ended for good.

    Attributes:
        scope: ``session`` or ``task``.
        subject_id: the session or task id.
        at: when it was stopped (UTC).
        budget / budget_scope / budget_subject_id / meter / limit / used: the budget instance
            that stopped it, and its spend then.
        request_id: the call (or usage event) that exhausted it, when known.
    """

    scope: str
    subject_id: str
    at: datetime
    budget: str
    budget_scope: str
    budget_subject_id: str
    meter: str
    limit: Decimal
    used: Decimal
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "scope": self.scope,
            "subject_id": self.subject_id,
            "at": iso(self.at),
            "budget": self.budget,
            "budget_scope": self.budget_scope,
            "budget_subject_id": self.budget_subject_id,
            "meter": self.meter,
            "limit": plain(self.limit),
            "used": plain(self.used),
            "request_id": self.request_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StopMarker:
        """Inverse of :meth:`to_dict`."""
        return cls(
            scope=str(data["scope"]),
            subject_id=str(data["subject_id"]),
            at=parse_iso(data["at"]),  # type: ignore[arg-type]
            budget=str(data["budget"]),
            budget_scope=str(data["budget_scope"]),
            budget_subject_id=str(data["budget_subject_id"]),
            meter=str(data["meter"]),
            limit=Decimal(str(data["limit"])),
            used=Decimal(str(data["used"])),
            request_id=data.get("request_id"),
        )


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A manual entry: a credit, refund or correction, never an edit of a past event.

    Amounts are signed: a positive amount adds spend (a correction of an undercharge), a negative
    one takes it away (a credit or refund).

    Attributes:
        id: the adjustment's id (``adj_<hex>``, or the caller's idempotency key).
        seq: monotonically increasing number.
        at: when it was recorded (UTC).
        window_at: the instant whose windows it applies to (UTC).
        actor: who made it.
        reason: why (required).
        amounts: by meter, signed (tokens, USD, calls).
        subject: the subject it was applied to (every budget applying to it), or None.
        budget / subject_id: the budget instance it was applied to, or None.
        applied: ``(budget, subject_id, window_key, meter, amount)`` per balance row changed.
    """

    id: str
    seq: int
    at: datetime
    window_at: datetime
    actor: str
    reason: str
    amounts: Mapping[str, Decimal]
    subject: Subject | None = None
    budget: str | None = None
    subject_id: str | None = None
    applied: tuple[tuple[str, str, str, str, Decimal], ...] = ()

    def repeated(
        self, target: Subject | str, amounts: Mapping[str, Decimal | int], *, reason: str, actor: str
    ) -> Adjustment:
        """This adjustment as the answer to a retried request that reuses its id: the same target,
        amounts, reason and actor (so a retry after a lost answer credits once).

        Raises:
            ValidationError: the id was used for another adjustment (another target, amounts,
                reason or actor, perhaps another project's): nothing of it is shown, and nothing
                of the new request is applied.
        """
        same_target = self.budget == target if isinstance(target, str) else self.subject == target
        same_amounts = {m: Decimal(a) for m, a in amounts.items()} == dict(self.amounts)
        if same_target and same_amounts and reason.strip() == self.reason and actor.strip() == self.actor:
            return self
        raise ValidationError(
            f"adjustment id {self.id!r} is already used for another adjustment: use a new id", field="id"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "seq": self.seq,
            "at": iso(self.at),
            "window_at": iso(self.window_at),
            "actor": self.actor,
            "reason": self.reason,
            "amounts": {k: plain(v) for k, v in self.amounts.items()},
            "subject": None if self.subject is None else self.subject.to_dict(),
            "budget": self.budget,
            "subject_id": self.subject_id,
            "applied": [[b, s, w, m, plain(a)] for b, s, w, m, a in self.applied],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Adjustment:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=str(data["id"]),
            seq=int(data.get("seq") or 0),
            at=parse_iso(data["at"]),  # type: ignore[arg-type]
            window_at=parse_iso(data.get("window_at") or data["at"]),  # type: ignore[arg-type]
            actor=str(data["actor"]),
            reason=str(data["reason"]),
            amounts=_amounts(data.get("amounts")),
            subject=None if data.get("subject") is None else Subject.from_dict(data["subject"]),
            budget=data.get("budget"),
            subject_id=data.get("subject_id"),
            applied=tuple((b, s, w, m, Decimal(str(a))) for b, s, w, m, a in data.get("applied") or ()),
        )

    def with_seq(self, seq: int) -> Adjustment:
        """A copy numbered ``seq``."""
        return replace(self, seq=seq)


@dataclass(frozen=True, slots=True)
class BudgetInstance:
    """A template's instance for one scope value: made the first time the template held or
    charged anything for that value.

    Attributes:
        budget: the template's name.
        subject_id: the scope value.
        created_at: when it was made (UTC).
    """

    budget: str
    subject_id: str
    created_at: datetime

    @property
    def name(self) -> str:
        """``template[value]``."""
        return f"{self.budget}[{self.subject_id}]"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "budget": self.budget,
            "subject_id": self.subject_id,
            "name": self.name,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A virtual key as stored: its SHA-256 digest, never the key itself.

    Attributes:
        id: the key's id (stable; used to revoke it).
        name: its label; also the subject's ``key`` scope value for calls made with it.
        key_sha256: lower-case hex SHA-256 of the key.
        subject: whom its calls are charged to (``org``, ``project``, ``team``, ``user``, tags).
        allow_user_override: whether it may charge another user (``x-tokenward-user``).
        allow_client_tags: whether clients may add tags (``x-tokenward-tags``).
        allow_client_budgets: whether clients may carry session/task budgets
            (``x-tokenward-session-budget``).
        created_at / expires_at / revoked_at: UTC instants (the last two None when not set).
        project: the project that owns it (for project-scoped administration); defaults to the
            subject's project.
        prefix: the first characters of the key, to recognise it in listings (optional).
        metadata: anything else the administrator attached.
    """

    id: str
    name: str
    key_sha256: str
    subject: Subject = field(default_factory=Subject)
    allow_user_override: bool = False
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    project: str | None = None
    prefix: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    allow_client_tags: bool = False
    allow_client_budgets: bool = False

    def __post_init__(self) -> None:
        digest = str(self.key_sha256).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValidationError(
                "key_sha256 must be 64 hex digits (the SHA-256 of the key)", field="key_sha256"
            )
        object.__setattr__(self, "key_sha256", digest)
        if not self.id or not self.name:
            raise ValidationError("a key needs an id and a name", field="id" if not self.id else "name")
        if self.project is None and self.subject.project:
            object.__setattr__(self, "project", self.subject.project)
        for name in ("created_at", "expires_at", "revoked_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc(value))

    def active(self, at: datetime) -> bool:
        """Whether the key may be used at ``at``: not revoked, not expired."""
        at = utc(at)
        if self.revoked_at is not None and self.revoked_at <= at:
            return False
        return self.expires_at is None or at < self.expires_at

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "name": self.name,
            "key_sha256": self.key_sha256,
            "subject": self.subject.to_dict(),
            "allow_user_override": self.allow_user_override,
            "allow_client_tags": self.allow_client_tags,
            "allow_client_budgets": self.allow_client_budgets,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "project": self.project,
            "prefix": self.prefix,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyRecord:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValidationError: a malformed digest, or a missing id or name.
        """
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            key_sha256=str(data["key_sha256"]),
            subject=Subject.from_dict(data.get("subject") or {}),
            allow_user_override=bool(data.get("allow_user_override", False)),
            allow_client_tags=bool(data.get("allow_client_tags", False)),
            allow_client_budgets=bool(data.get("allow_client_budgets", False)),
            created_at=parse_iso(data.get("created_at")),
            expires_at=parse_iso(data.get("expires_at")),
            revoked_at=parse_iso(data.get("revoked_at")),
            project=data.get("project"),
            prefix=data.get("prefix"),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One administrative change.

    Attributes:
        id: monotonically increasing number.
        at: when it was recorded (UTC, the ledger's clock).
        actor: who made it (an admin key's name, ``cli``...).
        action: what was done (``budget.put``, ``key.revoke``...).
        target: what it was done to (a budget name, a key id...).
        before / after: JSON-ready states before and after (None when there was none).
        project: the project it belongs to, for project-scoped administrators.
    """

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    before: Any = None
    after: Any = None
    project: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "at": iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "project": self.project,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEntry:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=int(data["id"]),
            at=parse_iso(data["at"]),  # type: ignore[arg-type]
            actor=str(data["actor"]),
            action=str(data["action"]),
            target=str(data["target"]),
            before=data.get("before"),
            after=data.get("after"),
            project=data.get("project"),
        )


@dataclass(frozen=True, slots=True)
class LeaseGroup:
    """A group of leases (a shared session or task) and what it declared.

    Attributes:
        key: ``<scope>:<id>`` (``session:task-42``).
        budgets: the budgets made for it, deleted when its last lease ends.
        keep: keep those budgets when it ends (a member asked to).
        declared_by: the holder that declared the budgets.
        opened_at: when its first lease was taken (UTC).
    """

    key: str
    budgets: tuple[Budget, ...] = ()
    keep: bool = False
    declared_by: str | None = None
    opened_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "key": self.key,
            "budgets": [b.to_dict() for b in self.budgets],
            "keep": self.keep,
            "declared_by": self.declared_by,
            "opened_at": None if self.opened_at is None else self.opened_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeaseGroup:
        """Inverse of :meth:`to_dict`."""
        opened = data.get("opened_at")
        return cls(
            key=str(data["key"]),
            budgets=tuple(Budget.from_dict(b) for b in data.get("budgets") or ()),
            keep=bool(data.get("keep")),
            declared_by=data.get("declared_by"),
            opened_at=parse_instant(opened) if isinstance(opened, str) else None,
        )


IDEMPOTENCY_RUNNING = 600
"""Seconds a request with an ``Idempotency-Key`` counts as still running without finishing: a
repeat meanwhile is refused (409); past it (its process died), the key may be used again."""


@dataclass(frozen=True, slots=True)
class IdempotentAnswer:
    """A request made with an ``Idempotency-Key`` (issue 15 item 16), and its answer once stored.

    Attributes:
        namespace: whose key it is (the virtual key's SHA-256: keys never meet across clients).
        key: the ``Idempotency-Key`` the client sent.
        body_sha256: SHA-256 hex of what the request asked (method, path, query and body), so a
            repeat asking something else is told apart.
        state: ``running`` (the first request is under way) or ``done`` (its answer is stored).
        request_id: the gateway request id of the first request.
        created_at: when the first request arrived (UTC).
        expires_at: when the key may be used again (UTC): :data:`IDEMPOTENCY_RUNNING` after the
            start while running, the key's time to live after the answer once done.
        response: the stored answer, JSON-ready: ``status``, ``headers`` (a list of pairs),
            ``media_type``, and ``body`` (base64) or, for a stream, ``chunks`` (base64 each).
    """

    namespace: str
    key: str
    body_sha256: str
    state: str
    request_id: str
    created_at: datetime
    expires_at: datetime
    response: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "namespace": self.namespace,
            "key": self.key,
            "body_sha256": self.body_sha256,
            "state": self.state,
            "request_id": self.request_id,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "response": None if self.response is None else dict(self.response),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdempotentAnswer:
        """Inverse of :meth:`to_dict`."""
        return cls(
            namespace=str(data["namespace"]),
            key=str(data["key"]),
            body_sha256=str(data["body_sha256"]),
            state=str(data["state"]),
            request_id=str(data["request_id"]),
            created_at=parse_iso(data["created_at"]),  # type: ignore[arg-type]
            expires_at=parse_iso(data["expires_at"]),  # type: ignore[arg-type]
            response=data.get("response"),
        )
