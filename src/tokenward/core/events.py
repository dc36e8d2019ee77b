"""The usage event: one per call that reached a provider, the audit trail's unit."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from tokenward.clock import utc
from tokenward.core.budgets import Subject
from tokenward.core.usage import Usage
from tokenward.numbers import plain

__all__ = ["STATUSES", "Status", "UsageEvent"]

Status = Literal[
    "ok", "cut_off", "client_aborted", "upstream_error", "stream_broken", "replayed", "reclaimed"
]
STATUSES: tuple[str, ...] = (
    "ok",
    "cut_off",
    "client_aborted",
    "upstream_error",
    "stream_broken",
    "replayed",
    "reclaimed",
)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """What one call used, cost and was charged.

    Attributes:
        request_id: unique id (the idempotency key: an event is written once per id).
        at: when the call was admitted (UTC).
        subject: whom it was charged to.
        model: the model requested (``model_served`` in ``metadata`` when the response differs).
        provider: the upstream's provider kind (``openai``, ``anthropic``, ``fake``...).
        endpoint: the dialect (``openai-chat``, ``anthropic-messages``...).
        status: ``ok``; ``cut_off`` (ended by tokenward at the hold); ``client_aborted``;
            ``upstream_error``; ``stream_broken`` (the upstream dropped the stream); ``replayed``;
            ``reclaimed`` (never settled: its process died or it was abandoned, so the ledger
            charged its hold; see :mod:`tokenward.ledger.reclaim`).
        usage: the usage charged (unknown counts filled in from our own, with their sources).
        cost_usd: exact cost in USD, or None when it could not be priced.
        cost_estimated: the cost rests partly on our own counts or a stand-in price.
        price_source / price_version: the price row's source and its version.
        charged: what was charged to each meter (tokens, USD, calls).
        held: what was reserved for the call, by meter.
        reservation_id: the reservation settled, if any.
        metadata: anything else (response id, served model, finish reason, cut-off flag;
            ``disputed`` when the provider's figures were below what tokenward counted, see
            :attr:`disputed`).
        tool_definition_tokens: the request's tool definitions, in tokens, as the guard's
            estimator counts them (:attr:`tokenward.core.estimate.Estimate.tool_definition_tokens`):
            a part of the input tokens; 0 for a call that offered no tools; None when unknown
            (an event recorded before it was measured, an endpoint without tools).
    """

    request_id: str
    at: datetime
    subject: Subject
    usage: Usage
    model: str | None = None
    provider: str | None = None
    endpoint: str | None = None
    status: Status = "ok"
    cost_usd: Decimal | None = None
    cost_estimated: bool = False
    price_source: str | None = None
    price_version: str | None = None
    charged: Mapping[str, Decimal] = field(default_factory=dict)
    held: Mapping[str, Decimal] = field(default_factory=dict)
    reservation_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tool_definition_tokens: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at))

    @property
    def disputed(self) -> bool:
        """Whether the provider reported less than tokenward counted passing through, and was
        charged our floor instead (:mod:`tokenward.core.floor`); what was disputed is in
        ``metadata["disputed"]`` (kept there, in the event's stored data, on every ledger)."""
        return bool(self.metadata.get("disputed"))

    @property
    def overage(self) -> dict[str, Decimal]:
        """By meter, how much the charge went above the hold (only meters that went above)."""
        return {
            meter: amount - self.held[meter]
            for meter, amount in self.charged.items()
            if meter in self.held and amount > self.held[meter]
        }

    def with_reservation(self, reservation_id: str | None, held: Mapping[str, Decimal]) -> UsageEvent:
        """A copy tied to a reservation and its hold."""
        return replace(self, reservation_id=reservation_id, held=dict(held))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money and amounts as decimal strings, instants as ISO 8601 UTC."""
        return {
            "request_id": self.request_id,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "subject": self.subject.to_dict(),
            "model": self.model,
            "provider": self.provider,
            "endpoint": self.endpoint,
            "status": self.status,
            "usage": self.usage.to_dict(),
            "usage_complete": self.usage.complete,
            "cost_usd": None if self.cost_usd is None else plain(self.cost_usd),
            "cost_estimated": self.cost_estimated,
            "price_source": self.price_source,
            "price_version": self.price_version,
            "charged": {k: plain(v) for k, v in self.charged.items()},
            "held": {k: plain(v) for k, v in self.held.items()},
            "overage": {k: plain(v) for k, v in self.overage.items()},
            "disputed": self.disputed,
            "reservation_id": self.reservation_id,
            "metadata": dict(self.metadata),
            "tool_definition_tokens": self.tool_definition_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsageEvent:
        """Inverse of :meth:`to_dict`."""
        return cls(
            request_id=str(data["request_id"]),
            at=datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00")),
            subject=Subject.from_dict(data.get("subject") or {}),
            usage=Usage.from_dict(data.get("usage") or {}),
            model=data.get("model"),
            provider=data.get("provider"),
            endpoint=data.get("endpoint"),
            status=data.get("status", "ok"),
            cost_usd=None if data.get("cost_usd") is None else Decimal(str(data["cost_usd"])),
            cost_estimated=bool(data.get("cost_estimated")),
            price_source=data.get("price_source"),
            price_version=data.get("price_version"),
            charged={k: Decimal(str(v)) for k, v in (data.get("charged") or {}).items()},
            held={k: Decimal(str(v)) for k, v in (data.get("held") or {}).items()},
            reservation_id=data.get("reservation_id"),
            metadata=dict(data.get("metadata") or {}),
            tool_definition_tokens=_count(data.get("tool_definition_tokens")),
        )

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)
