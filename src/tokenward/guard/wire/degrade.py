"""Degrading a call when a budget runs low: a cheaper model, less reasoning.

Pure rules over request bodies, shared by the SDK and the gateway. Request fields follow the
providers' references: OpenAI chat ``reasoning_effort`` and Responses ``reasoning.effort``
(https://platform.openai.com/docs/api-reference/chat/create#chat-create-reasoning_effort), and
Anthropic's extended-thinking ``thinking.budget_tokens``
(https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tokenward.core.decide import Balance
from tokenward.errors import ConfigError

__all__ = ["Degrade", "degrade_body", "remaining_share"]

_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


@dataclass(frozen=True, slots=True)
class Degrade:
    """A degrade policy.

    Attributes:
        below: degrade when the tightest hard budget has less than this share of its limit left
            (0.2 = 20 %).
        models: cheaper stand-ins by model id (``{"gpt-5": "gpt-5-mini"}``).
        reasoning_effort: the OpenAI reasoning effort to lower to (never raises it).
        thinking_budget_tokens: the most Anthropic extended-thinking tokens to allow, in tokens.
        marked_only: only budgets whose action is ``degrade`` count (the policy the SDK applies
            when none is configured); otherwise every hard budget counts, plus soft budgets whose
            action is ``degrade``.
    """

    below: Decimal | float | str = Decimal("0.2")
    models: Mapping[str, str] = field(default_factory=dict)
    reasoning_effort: str | None = "low"
    thinking_budget_tokens: int | None = 1024
    marked_only: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "below", _share(self.below))
        if not Decimal(0) < self.below <= Decimal(1):
            raise ConfigError(f"degrade.below must be a share between 0 and 1, got {self.below}")
        tokens = self.thinking_budget_tokens
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
            raise ConfigError(
                f"degrade.thinking_budget_tokens must be a whole number of tokens >= 1, got {tokens!r}"
            )
        if self.reasoning_effort is not None and self.reasoning_effort not in _EFFORTS:
            raise ConfigError(f"degrade.reasoning_effort must be one of {', '.join(_EFFORTS)}")


def _share(value: Any) -> Decimal:
    """``below`` as a share: ``0.2``, ``"0.2"`` or the percent ``"20%"``.

    Raises:
        ConfigError: anything else (``"20%"`` used to stop the gateway with a decimal error).
    """
    text = str(value).strip()
    try:
        if isinstance(value, bool):
            raise ArithmeticError
        share = Decimal(text[:-1]) / 100 if text.endswith("%") else Decimal(text)
    except ArithmeticError:
        raise ConfigError(
            f"degrade.below must be a share (0.2) or a percent ('20%'), got {value!r}"
        ) from None
    if not share.is_finite():
        raise ConfigError(f"degrade.below must be a share between 0 and 1, got {value!r}")
    return share


def remaining_share(balances: Iterable[Balance], *, marked_only: bool = False) -> Decimal | None:
    """The smallest share of its limit that any budget which can degrade has left (None without
    one): every hard budget, and soft budgets whose action is ``degrade``; with ``marked_only``,
    only budgets whose action is ``degrade``. Shadow budgets never degrade a call."""
    shares = [
        max(Decimal(0), b.remaining) / b.budget.limit
        for b in balances
        if b.budget.limit > 0
        and b.budget.meter not in ("requests",)
        and b.budget.mode != "shadow"
        and (b.budget.action == "degrade" or (b.budget.mode == "hard" and not marked_only))
    ]
    return min(shares) if shares else None


def _lower(effort: Any, target: str) -> str | None:
    if not isinstance(effort, str) or effort not in _EFFORTS:
        return target
    return target if _EFFORTS.index(effort) > _EFFORTS.index(target) else None


def degrade_body(
    dialect: str, body: Mapping[str, Any], policy: Degrade
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The body with the policy applied, and what changed (``{}`` when nothing did)."""
    out = dict(body)
    changes: dict[str, Any] = {}
    model = out.get("model")
    if isinstance(model, str) and model in policy.models:
        out["model"] = changes["model"] = policy.models[model]
    model = str(out.get("model", ""))
    target = policy.reasoning_effort
    if target is not None and dialect == "openai-chat":
        if "reasoning_effort" in out or model.startswith(_REASONING_PREFIXES):
            lowered = _lower(out.get("reasoning_effort"), target)
            if lowered:
                out["reasoning_effort"] = changes["reasoning_effort"] = lowered
    elif target is not None and dialect == "openai-responses":
        reasoning = dict(out.get("reasoning") or {})
        if reasoning or model.startswith(_REASONING_PREFIXES):
            lowered = _lower(reasoning.get("effort"), target)
            if lowered:
                reasoning["effort"] = changes["reasoning.effort"] = lowered
                out["reasoning"] = reasoning
    elif dialect == "anthropic-messages" and policy.thinking_budget_tokens is not None:
        thinking = out.get("thinking")
        budget = thinking.get("budget_tokens") if isinstance(thinking, Mapping) else None
        if (
            isinstance(thinking, Mapping)
            and isinstance(budget, int)
            and budget > policy.thinking_budget_tokens
        ):
            out["thinking"] = {**thinking, "budget_tokens": policy.thinking_budget_tokens}
            changes["thinking.budget_tokens"] = policy.thinking_budget_tokens
    return out, changes
