"""Admission decisions: how much output a call may have, and what to hold for it.

Pure functions over a snapshot of balances. The ledger checks the hold again atomically when it
reserves, so a decision made on a stale snapshot can only be refused, never overspend.

What each hard budget does to an LLM call (:func:`decide`), by its meter:

* ``total_tokens`` / ``output_tokens`` / ``cost_usd``: the output bound is lowered to what the
  budget can still pay for (``action: clamp``, ``degrade`` or ``stop``), or the call is refused when
  it does not fit with the bound it has (``action: deny``); below ``min_output_tokens`` it is
  refused whatever the action;
* ``input_tokens`` / ``requests``: refused when the prompt (or one more call) does not fit;
* meters a call cannot hold ahead (``cache_write_tokens`` and custom meters such as
  ``gpu_seconds``): refused once the budget is exhausted (spent plus held at or above its limit),
  so a spent compute budget also stops the LLM calls of its subject until its window resets.
  Charging a custom meter itself (``Ledger.charge_meter``) is checked like any hold.

Soft budgets never refuse; shadow budgets are decided the same way and their would-be denials
reported in :attr:`Decision.shadow` (the ledger records them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from tokenward.core.budgets import Budget
from tokenward.core.modifiers import RequestFacts
from tokenward.core.pricing import MILLION
from tokenward.errors import BudgetExceeded, PromptTooLarge, UnpricedCall
from tokenward.numbers import plain

__all__ = [
    "Balance",
    "CallPlan",
    "Decision",
    "admission_check",
    "decide",
    "decision_of",
    "hold_amounts",
    "shadow_check",
    "tightest",
]


@dataclass(frozen=True, slots=True)
class Balance:
    """One budget instance in its current window.

    A template's instance (``budget.subject_id`` is None) is named ``template[value]``
    (:attr:`instance`); a fixed budget is its own one instance.

    Attributes:
        budget: the budget.
        subject_id: the scope value charged (``"alice"``, ``"s-1"``).
        window_key: the window's storage key (its UTC start, or ``""``; for a rolling window the
            key of the current bucket).
        spent: settled charges in this window, in the meter's unit.
        held: amounts reserved by calls in flight.
        reset_at: when the window ends (UTC), or None; for a rolling window, when its oldest
            spend stops counting (None when nothing is spent).
        drops: for a rolling window, what stops counting when: ``(instant, spent, held)`` in
            time order, one per bucket with spend or holds; empty for other windows.
    """

    budget: Budget
    subject_id: str
    window_key: str
    spent: Decimal
    held: Decimal
    reset_at: datetime | None
    drops: tuple[tuple[datetime, Decimal, Decimal], ...] = ()

    @property
    def remaining(self) -> Decimal:
        """``limit - spent - held``; negative after an overage."""
        return self.budget.limit - self.spent - self.held

    @property
    def instance(self) -> str:
        """``each-user[alice]`` for an instance of a template, else the budget's name."""
        return self.budget.instance_name(self.subject_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: amounts as decimal strings, instants as ISO 8601 UTC."""
        budget = self.budget
        return {
            "budget": budget.name,
            "instance": self.instance,
            "template": budget.is_template,
            "scope": budget.scope,
            "subject_id": self.subject_id,
            "meter": budget.meter,
            "mode": budget.mode,
            "action": budget.action,
            "window": str(budget.window),
            "window_key": self.window_key,
            "limit": plain(budget.limit),
            "spent": plain(self.spent),
            "held": plain(self.held),
            "remaining": plain(self.remaining),
            "reset_at": self.reset_at.isoformat().replace("+00:00", "Z") if self.reset_at else None,
        }

    def fits_at(self, requested: Decimal) -> datetime | None:
        """For a rolling window, the first instant at which ``requested`` fits as buckets stop
        counting (spend and holds alike: a hold is counted as if it settled in its bucket, and
        nothing new is charged meanwhile); None when it never will (it is above the limit by
        itself) or the window is not rolling."""
        need = self.spent + self.held + requested - self.budget.limit
        if not self.budget.window.rolling or requested > self.budget.limit or need <= 0:
            return None
        freed = Decimal(0)
        for at, spent, held in self.drops:
            freed += spent + held
            if freed >= need:
                return at
        return None

    def exceeded(self, requested: Decimal) -> BudgetExceeded:
        """The denial for a call that needed ``requested`` of this budget."""
        return BudgetExceeded(
            budget=self.budget.name,
            scope=self.budget.scope,
            subject_id=self.subject_id,
            meter=self.budget.meter,
            limit=self.budget.limit,
            used=self.spent,
            held=self.held,
            requested=requested,
            reset_at=self.reset_at,
            mode=self.budget.mode,
            window=str(self.budget.window),
            retry_at=self.fits_at(requested),
        )


@dataclass(frozen=True, slots=True)
class CallPlan:
    """What a call may cost before it runs.

    Attributes:
        model: the model id (for messages).
        input_tokens: the prompt estimate, in tokens.
        max_output_tokens: the output bound asked for (or the configured default), in tokens.
        min_output_tokens: below this bound the call is not worth making: deny instead.
        input_rate / output_rate: worst-case USD per 1M tokens; None when the model is unpriced.
        held_back: amounts by meter this call may not use (a final-answer reserve kept for the
            agent's last call); the call is decided as if each budget of that meter had that
            much less room.
        request: what the request asks for that changes its rates (speed, inference geography,
            cache writes and their lifetime): the rates above were chosen for it, and the
            settled call is priced with its cache-write lifetime.
        fixed_cost_usd: USD held on ``cost_usd`` besides the token rates: the per-unit prices a
            media request comes to (images, minutes of audio, characters;
            :mod:`tokenward.core.media`: such a call has no output bound to lower, so it is held
            whole or refused) and the per-use fees of the server-side tools a request enables, at
            their maximum uses (web search; :func:`~tokenward.guard.flow.plan_call`).
        context_tokens: the part of ``input_tokens`` the provider adds from what it stored (an
            earlier response's turns, a cached content), known exactly from the ledger: never
            scaled by calibration.
        tool_input_tokens: the part of ``input_tokens`` allowed for the results of server-side
            tools (web search, web fetch) at their maximum uses: never scaled by calibration.
        bound_requested: whether the request set ``max_output_tokens`` itself; a call that did
            not, clamped by a budget other calls hold amounts on (or after it waited for them:
            ``contended``), is given half of what the budget can still pay for (:func:`decide`),
            so one call does not take the whole remaining budget while others are arriving.
        contended: the call waited for other calls' holds to settle before this plan was made.
        whole: the call must be served with its whole output bound or not at all (a batch record:
            a truncated answer is wasted spend): every hard budget decides it as ``action: deny``.
    """

    model: str
    input_tokens: int
    max_output_tokens: int
    min_output_tokens: int = 1
    input_rate: Decimal | None = None
    output_rate: Decimal | None = None
    held_back: Mapping[str, Decimal] = field(default_factory=dict)
    request: RequestFacts = field(default_factory=RequestFacts)
    fixed_cost_usd: Decimal = Decimal(0)
    context_tokens: int = 0
    tool_input_tokens: int = 0
    bound_requested: bool = True
    contended: bool = False
    whole: bool = False

    @property
    def priced(self) -> bool:
        """Whether both rates are known."""
        return self.input_rate is not None and self.output_rate is not None


@dataclass(frozen=True, slots=True)
class Decision:
    """An admission.

    Attributes:
        output_tokens: the output bound to send upstream (clamped), in tokens.
        amounts: the hold, by meter (tokens, USD, calls).
        clamped_by: the budget that lowered the bound, if any.
        would_deny: shadow budgets that would have denied the call.
        tightest: the hard budget with the smallest share of its limit left after this hold
            (for rate-limit style headers), as it stood before the hold; None without hard budgets.
        balances: the balances the decision was made on (before the hold), so a caller can apply a
            degrade policy without reading the ledger again.
        shadow: the denials those shadow budgets would have raised (budget, limit, used, held,
            requested), in the order of ``would_deny``; the ledger records them.
    """

    output_tokens: int
    amounts: Mapping[str, Decimal]
    clamped_by: str | None = None
    would_deny: tuple[str, ...] = field(default=())
    tightest: Balance | None = None
    shadow: tuple[BudgetExceeded, ...] = field(default=())
    balances: tuple[Balance, ...] = field(default=())


def hold_amounts(plan: CallPlan, output_tokens: int) -> dict[str, Decimal]:
    """The worst-case charge of ``plan`` with an output bound of ``output_tokens``, by meter."""
    out = {
        "input_tokens": Decimal(plan.input_tokens),
        "output_tokens": Decimal(output_tokens),
        "total_tokens": Decimal(plan.input_tokens + output_tokens),
        "requests": Decimal(1),
    }
    if plan.input_rate is not None and plan.output_rate is not None:
        tokens = (plan.input_rate * plan.input_tokens + plan.output_rate * output_tokens) / MILLION
        out["cost_usd"] = tokens + plan.fixed_cost_usd
    return out


def _output_cap(balance: Balance, plan: CallPlan) -> int | None:
    """The most output tokens this budget can still pay for; -1 when it cannot pay for the
    call at all; None when the budget does not depend on the output."""
    meter = balance.budget.meter
    remaining = balance.remaining - plan.held_back.get(meter, Decimal(0))
    if meter == "total_tokens":
        return _floor(remaining - plan.input_tokens)
    if meter == "output_tokens":
        return _floor(remaining)
    if meter == "input_tokens":
        return None if remaining >= plan.input_tokens else -1
    if meter == "requests":
        return None if remaining >= 1 else -1
    if meter == "cost_usd":
        if plan.input_rate is None or plan.output_rate is None:
            return None
        if plan.output_rate == 0 and plan.input_rate * plan.input_tokens == 0 and not plan.fixed_cost_usd:
            return None  # a free call charges nothing: even an overspent budget can take it (C43)
        left = (remaining - plan.fixed_cost_usd) * MILLION - plan.input_rate * plan.input_tokens
        if left < 0:
            return -1
        if plan.output_rate == 0:
            return None
        return _floor(left / plan.output_rate)
    # cache_write_tokens and custom meters are not held ahead of a call: an exhausted budget on
    # one refuses the call, any room left admits it.
    return None if remaining > 0 else -1


def _share(cap: int, plan: CallPlan, balance: Balance) -> int:
    """The output bound a clamp by ``balance`` leaves a call: all of ``cap`` when the request set
    its own bound, or when no other call holds anything on the budget and the call did not wait
    for any; else half of it (at least ``min_output_tokens``), so a call without a bound of its
    own does not take the whole remaining budget while others are arriving."""
    if plan.bound_requested or (balance.held <= 0 and not plan.contended):
        return cap
    return min(cap, max(plan.min_output_tokens, cap // 2))


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR)) if value >= 0 else -1


def decide(plan: CallPlan, balances: Sequence[Balance]) -> Decision:
    """Admit, clamp or deny a call against every applicable budget.

    The output bound is lowered to what the tightest hard budget whose action is ``clamp``,
    ``degrade`` or ``stop`` can still pay for (half of it, at least ``min_output_tokens``, for a
    call whose request set no bound while other calls hold amounts on that budget or after it
    waited for them: :attr:`CallPlan.bound_requested`); when even
    ``min_output_tokens`` no longer fits, the
    call is denied naming that budget. Then every hard budget whose action is ``deny`` must pay for
    the call with the bound so reached, or it denies. Soft budgets never deny; shadow budgets are
    only reported (``would_deny``, ``shadow``).

    Raises:
        BudgetExceeded: a hard budget cannot pay for the call with the minimum output (or, for
            ``action: deny``, with its output bound).
        UnpricedCall: a hard cost budget applies, the model is unpriced, and the budget's policy
            is ``deny``.
        PromptTooLarge: the prompt's estimate is over a hard budget's ``max_input_tokens``.
    """
    for balance in balances:
        cap = balance.budget.max_input_tokens
        if cap is not None and balance.budget.mode == "hard" and plan.input_tokens > cap:
            raise PromptTooLarge(
                budget=balance.budget.name, max_input_tokens=cap, input_tokens=plan.input_tokens
            )
    bound = plan.max_output_tokens
    clamped_by: str | None = None
    shadow: list[BudgetExceeded] = []
    strict: list[tuple[Balance, int]] = []
    for balance in balances:
        budget = balance.budget
        if budget.mode == "soft":
            continue
        if budget.meter == "cost_usd" and not plan.priced:
            if budget.unpriced == "deny" and budget.mode == "hard":
                raise UnpricedCall(plan.model, budget.name)
            continue
        cap = _output_cap(balance, plan)
        if cap is None:
            continue
        if budget.action == "deny" or plan.whole:
            # Judged below with the bound the other budgets leave, and named with the hold it
            # refuses (the call's whole hold, not its minimum: a retry must wait for all of it).
            strict.append((balance, cap))
            continue
        if cap >= bound:
            continue
        if cap < plan.min_output_tokens:
            need = hold_amounts(plan, plan.min_output_tokens).get(budget.meter, Decimal(0))
            if budget.mode == "shadow":
                shadow.append(balance.exceeded(need))
                continue
            raise balance.exceeded(need)
        if budget.mode == "hard":
            bound, clamped_by = _share(cap, plan, balance), budget.name
    for balance, cap in strict:
        if cap < bound:
            need = hold_amounts(plan, bound).get(balance.budget.meter, Decimal(0))
            if balance.budget.mode == "shadow":
                shadow.append(balance.exceeded(need))
                continue
            raise balance.exceeded(need)
    amounts = hold_amounts(plan, bound)
    return Decision(
        bound,
        amounts,
        clamped_by,
        tuple(e.budget for e in shadow),
        tightest(balances, amounts),
        tuple(shadow),
        tuple(balances),
    )


def tightest(balances: Iterable[Balance], amounts: Mapping[str, Decimal]) -> Balance | None:
    """The hard budget with the smallest share of its limit left once ``amounts`` are held (as it
    stood before the hold), or None without hard budgets of a positive limit."""
    best: tuple[Decimal, Balance] | None = None
    for balance in balances:
        limit = balance.budget.limit
        if balance.budget.mode != "hard" or limit <= 0:
            continue
        share = (balance.remaining - amounts.get(balance.budget.meter, Decimal(0))) / limit
        if best is None or share < best[0]:
            best = (share, balance)
    return None if best is None else best[1]


def admission_check(balances: Iterable[Balance], amounts: Mapping[str, Decimal]) -> BudgetExceeded | None:
    """The denial for the first hard budget that cannot take the hold ``amounts``, or None.

    This is the check a ledger makes atomically when it reserves: for every hard budget whose
    meter the hold charges a non-zero amount, ``spent + held + amount <= limit`` must hold.
    """
    for balance in balances:
        if balance.budget.mode != "hard":
            continue
        amount = amounts.get(balance.budget.meter)
        if not amount:
            continue  # a hold of nothing cannot overspend, even a budget already over its limit
        if balance.spent + balance.held + amount > balance.budget.limit:
            return balance.exceeded(amount)
    return None


def shadow_check(balances: Iterable[Balance], amounts: Mapping[str, Decimal]) -> list[BudgetExceeded]:
    """The denials shadow budgets would raise for the hold ``amounts`` (the check of
    :func:`admission_check`, applied to shadow budgets instead of hard ones)."""
    out = []
    for balance in balances:
        if balance.budget.mode != "shadow":
            continue
        amount = amounts.get(balance.budget.meter)
        if amount and balance.spent + balance.held + amount > balance.budget.limit:
            out.append(balance.exceeded(amount))
    return out


def decision_of(reservation: Any) -> Decision:
    """The decision a reservation was made with (for an idempotent retry of the same call)."""
    amounts = dict(reservation.amounts)
    return Decision(int(amounts.get("output_tokens", 0)), amounts)
