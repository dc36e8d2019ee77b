"""The pure steps of the guard flow, shared by the sync and async guards.

``plan_call`` turns an estimate and an output bound into a :class:`~tokenward.core.decide.CallPlan`
priced at worst-case rates; ``build_event`` turns what came back (the provider's usage, or our own
count when none arrived) into the one usage event to settle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenward.core.accounting import account
from tokenward.core.budgets import Subject
from tokenward.core.calibration import (
    Calibration,
    EstimateStats,
    calibration_key,
    correction,
    upstream_key,
)
from tokenward.core.decide import CallPlan, Decision
from tokenward.core.estimate import model_family
from tokenward.core.events import Status, UsageEvent
from tokenward.core.floor import apply_floor, output_floor
from tokenward.core.floor import floor_ratio as lower_ratio
from tokenward.core.media import UnpricedMedia, media_hold
from tokenward.core.modifiers import RequestFacts, billable_searches
from tokenward.core.pricebook import PriceBook, PriceContext, hold_rates
from tokenward.core.usage import Usage
from tokenward.ledger.base import DEFAULT_TTL, Reservation

__all__ = [
    "Admission",
    "CalibrationCache",
    "GuardSettings",
    "Outcome",
    "build_event",
    "calibrated_plan",
    "observation",
    "plan_call",
    "server_tool_hold",
]


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """How the guard plans calls.

    Attributes:
        default_max_output_tokens: the output bound used when a request sets none, in tokens.
        min_output_tokens: the smallest output bound worth calling with; a budget that cannot
            pay for this much denies the call.
        ttl: how long a reservation lives before it is reaped.
    """

    default_max_output_tokens: int = 4096
    min_output_tokens: int = 16
    ttl: timedelta = DEFAULT_TTL
    unknown_model: str = "flag"
    """What to do with a model no price source knows: ``flag`` (cost unknown, recorded as
    unpriced), ``default`` (the price book's conservative ``default`` row, marked estimated) or
    ``deny`` (refuse the call before it is made); see :meth:`PriceBook.priced`."""
    admission_wait_seconds: float = 3.0
    """How long a call refused only because of amounts held by calls still in flight (it would
    fit against what is spent) waits for them to settle before it is refused; 0 refuses at once.
    Also how long the calls behind the first call of a model and upstream never observed before
    wait for it to settle, so their prompt estimates are calibrated by it."""
    unknown_context: str | int = "deny"
    """What a call continuing stored context the ledger does not know is held for (an OpenAI
    ``previous_response_id`` or ``conversation`` it never answered, a Gemini ``cachedContent``
    whose size it never recorded): ``"deny"`` (refused, naming the field) or a number of prompt
    tokens to hold for it."""
    service_tier: str | None = None
    """The service tier calls that name none (or ``"auto"``) are served at, when known (an
    OpenAI project configured for ``default``); None holds them at the model's dearest tier."""
    server_tool_max_uses: int = 5
    """Uses held for a server-side tool (web search, web fetch) whose request sets no cap of its
    own (Anthropic ``max_uses``, OpenAI ``max_tool_calls``)."""
    server_tool_input_tokens: int = 8000
    """Prompt tokens held for the results of each server-side tool use (OpenAI bills a mini
    model's web search as a block of 8,000 input tokens; other results are added as they come)."""


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Admission:
    """An admitted call: its plan, the decision and the reservation that backs it.

    Attributes:
        request_id: the call's id (also the usage event's idempotency key).
        subject: whom it is charged to.
        plan: the estimate and rates it was decided on.
        decision: the clamped output bound and the hold.
        reservation: the ledger's reservation.
        at: when it was admitted (UTC).
        endpoint / provider: the dialect and the upstream's provider kind, for the event.
    """

    request_id: str
    subject: Subject
    plan: CallPlan
    decision: Decision
    reservation: Reservation
    at: datetime
    endpoint: str | None = None
    provider: str | None = None
    estimated_input_tokens: int | None = None
    """The prompt estimate before calibration (what calibration observations are recorded
    against); None when it equals ``plan.input_tokens``."""
    calibration_key: str | None = None
    """Where the call's prompt observation is recorded (:meth:`CalibrationCache.key`)."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """What the request says that its event keeps (the Responses ``conversation`` it adds to)."""

    @property
    def max_output_tokens(self) -> int:
        """The output bound to send upstream, in tokens."""
        return self.decision.output_tokens


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came back from the provider.

    Attributes:
        usage: the provider's normalised usage, or None when it never arrived.
        output_counted: our own count of the output that was streamed, in tokens.
        status: how the call ended.
        model_served: the model the response names, if it differs.
        service_tier: the tier the response says served the call.
        metadata: anything worth keeping on the event (response id, finish reason...).
        speed: the speed the response says served the call (Anthropic ``usage.speed``).
        inference_geo: where the response says inference ran (Anthropic ``usage.inference_geo``).
        output_seen: our count of every output token that passed through (text, tool-call
            arguments, reasoning text, transcripts; tokens received past a cut included), in the
            call's estimate encoding, or None when nothing was read: the charge floor
            (:mod:`tokenward.core.floor`).
    """

    usage: Usage | None
    output_counted: int | None = None
    status: Status = "ok"
    model_served: str | None = None
    service_tier: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    speed: str | None = None
    inference_geo: str | None = None
    output_seen: int | None = None


def plan_call(
    model: str,
    input_tokens: int,
    max_output_tokens: int | None,
    prices: PriceBook,
    settings: GuardSettings,
    *,
    provider: str | None = None,
    may_write_cache: bool = False,
    request: RequestFacts | None = None,
    context_tokens: int = 0,
    default_tier: str | None = None,
) -> CallPlan:
    """Plan one call: the output bound (requested, or the default) and worst-case rates.

    Held besides the prompt estimate: ``context_tokens`` of stored context the provider adds to
    the prompt, and for each server-side tool the request enables, its fees and
    ``settings.server_tool_input_tokens`` of results per use, at the request's own cap of uses
    or ``settings.server_tool_max_uses`` (:func:`server_tool_hold`). Rates are those of the
    service tier the request names, else ``default_tier`` (its upstream's), else
    ``settings.service_tier``, else the model's dearest tier.

    Args:
        model: the model requested.
        input_tokens: the prompt estimate, in tokens.
        max_output_tokens: the bound the request sets, or None.
        prices: where rates come from; an unpriced model leaves the rates None.
        settings: defaults.
        provider: the upstream's provider kind, a hint for price lookup.
        may_write_cache: the request may write a prompt cache (priced at the write rate); also
            read from ``request``.
        request: what the request asks for that changes its rates (fast mode, US-only inference,
            cache writes and their lifetime, service tier, server-side tools); the hold is priced
            at those rates (:func:`~tokenward.core.pricebook.hold_rates`).
        context_tokens: stored context the request continues (tokens, known from the ledger).
        default_tier: the service tier the upstream serves calls that name none at, if known.

    Raises:
        UnknownModel: the unknown-model policy is ``deny`` and no source knows the model.
        UnpricedMedia: the policy is ``deny`` and the model's row cannot price what an images or
            audio request asks for (an image size its table lacks).
    """
    request = request or RequestFacts()
    if may_write_cache and not request.may_write_cache:
        request = replace(request, may_write_cache=True)
    uses, tool_tokens = server_tool_hold(request, settings)
    total_input = input_tokens + context_tokens + tool_tokens
    price, input_rate, output_rate = hold_rates(
        prices,
        model,
        total_input,
        request,
        provider=provider,
        policy=settings.unknown_model,
        default_tier=default_tier or settings.service_tier,
    )
    if request.media is not None:  # images and audio: no output to stop, the hold is the whole price
        hold = media_hold(model, price, request.media, input_tokens, settings.default_max_output_tokens)
        if hold.unpriced and settings.unknown_model == "deny":
            raise UnpricedMedia(model, hold.unpriced)
        return CallPlan(
            model=model,
            input_tokens=hold.input_tokens,
            max_output_tokens=hold.output_tokens,
            min_output_tokens=hold.output_tokens,
            input_rate=hold.input_rate,
            output_rate=hold.output_rate,
            request=request,
            fixed_cost_usd=hold.fixed_cost_usd,
        )
    bound = max_output_tokens if max_output_tokens is not None else settings.default_max_output_tokens
    if bound == 0 and price is not None and output_rate is None:
        output_rate = Decimal(0)  # nothing is generated (embeddings): an output rate is not needed
    searches = billable_searches(model, uses.get("web_search", 0))
    fee = price.fees.get("web_search") if price is not None else None
    return CallPlan(
        model=model,
        input_tokens=total_input,
        max_output_tokens=bound,
        min_output_tokens=min(settings.min_output_tokens, bound),
        input_rate=input_rate,
        output_rate=output_rate,
        request=request,
        context_tokens=context_tokens,
        tool_input_tokens=tool_tokens,
        fixed_cost_usd=fee * searches if fee and searches else Decimal(0),
        bound_requested=max_output_tokens is not None,
    )


def server_tool_hold(request: RequestFacts, settings: GuardSettings) -> tuple[dict[str, int], int]:
    """The uses held for each kind of server-side tool the request enables (its own cap, else
    ``settings.server_tool_max_uses``) and the prompt tokens held for their results
    (``settings.server_tool_input_tokens`` per use)."""
    uses: dict[str, int] = {}
    for kind, cap in request.server_tools:
        uses[kind] = uses.get(kind, 0) + (cap if cap is not None else settings.server_tool_max_uses)
    return uses, sum(uses.values()) * settings.server_tool_input_tokens


TOOL_DEFINITION_TOKENS = "tool_definition_tokens"
"""The admission metadata key the request's tool-definition tokens travel under, to the event's
own field (:attr:`~tokenward.core.events.UsageEvent.tool_definition_tokens`)."""


def _tool_tokens(metadata: dict[str, Any]) -> int | None:
    value = metadata.pop(TOOL_DEFINITION_TOKENS, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def build_event(
    admission: Admission,
    outcome: Outcome,
    prices: PriceBook,
    *,
    unknown_model: str = "flag",
    floor_ratio: Decimal | None = None,
) -> UsageEvent:
    """The usage event for a finished call.

    Unknown counts are filled in from our own figures (the prompt estimate; the count of the
    streamed text) and labelled as such; the cost is computed from tokens and prices, never taken
    from a provider-reported cost. A reported output below what passed through
    (``outcome.output_seen`` times ``floor_ratio``, by default the model family's lower ratio)
    is charged at that floor and the event marked disputed (:func:`~tokenward.core.floor.apply_floor`).
    """
    if outcome.status == "upstream_error" and outcome.usage is None:
        # the provider answered with an error (or never answered): nothing is billed
        metadata = {**admission.metadata, **outcome.metadata}
        return UsageEvent(
            request_id=admission.request_id,
            at=admission.at,
            subject=admission.subject,
            usage=Usage(input_source="none", output_source="none"),
            model=admission.plan.model,
            provider=admission.provider,
            endpoint=admission.endpoint,
            status=outcome.status,
            cost_usd=Decimal(0),
            charged={},
            tool_definition_tokens=_tool_tokens(metadata),
            metadata=metadata,
        )
    output_counted, metadata = outcome.output_counted, {**admission.metadata, **outcome.metadata}
    ratio = floor_ratio if floor_ratio is not None else lower_ratio(admission.plan.model)
    reported, disputed = apply_floor(outcome.usage, outcome.output_seen, ratio, admission.plan.input_tokens)
    if disputed:
        metadata["disputed"] = disputed
    if (reported is None or reported.output_tokens is None) and output_counted is not None:
        # no figure from the provider: our count, and never below the floor of all received
        output_counted = max(output_counted, output_floor(outcome.output_seen or 0, ratio))
    media = admission.plan.request.media is not None
    if media and output_counted is None and (reported is None or reported.output_tokens is None):
        # an images or audio answer without its output count (speech as audio bytes): the hold was
        # its whole worst case, and is what it is charged
        output_counted = admission.max_output_tokens
        if output_counted:
            metadata["cost_basis"] = "held_output"
    if outcome.usage is None and output_counted is None:
        # an answer we could not read at all: charge the whole output it was allowed (the
        # worst case the admission held), never nothing
        output_counted = admission.max_output_tokens
        metadata["cost_basis"] = "held_output"
    accounting = account(
        reported,
        model=admission.plan.model,
        prices=prices,
        input_estimate=admission.plan.input_tokens,
        output_counted=output_counted,
        provider=admission.provider,
        context=PriceContext(
            service_tier=outcome.service_tier,
            at=admission.at,
            speed=outcome.speed,
            inference_geo=outcome.inference_geo,
            cache_write_ttl=admission.plan.request.cache_write_ttl,
            image_size=metadata.get("image_size"),
            image_quality=metadata.get("image_quality"),
        ),
        model_served=outcome.model_served,
        unknown_model="flag" if unknown_model == "deny" else unknown_model,
    )
    cost, price, model = accounting.cost, accounting.price, admission.plan.model
    if outcome.model_served and outcome.model_served != model:
        metadata["model_served"] = outcome.model_served
    if cost.unpriced:
        metadata["unpriced"] = list(cost.unpriced)
    # what reprice prices it under again
    if outcome.service_tier:
        metadata["service_tier"] = outcome.service_tier
    if outcome.speed:
        metadata["speed"] = outcome.speed
    if outcome.inference_geo:
        metadata["inference_geo"] = outcome.inference_geo
    if admission.plan.request.cache_write_ttl:
        metadata["cache_write_ttl"] = admission.plan.request.cache_write_ttl
    if cost.assumed:
        metadata["cost_assumed"] = list(cost.assumed)
    if admission.decision.clamped_by:
        metadata["clamped_by"] = admission.decision.clamped_by
        metadata["max_output_tokens"] = admission.decision.output_tokens
        metadata["requested_output_tokens"] = admission.plan.max_output_tokens
    return UsageEvent(
        request_id=admission.request_id,
        at=admission.at,
        subject=admission.subject,
        usage=accounting.usage,
        model=model,
        provider=admission.provider,
        endpoint=admission.endpoint,
        status=outcome.status,
        cost_usd=cost.total_usd,
        cost_estimated=cost.estimated,
        price_source=price.source if price else None,
        price_version=price.version if price else None,
        charged=accounting.charged,
        tool_definition_tokens=_tool_tokens(metadata),
        metadata=metadata,
    )


class CalibrationCache:
    """Per-model estimate calibration read from the ledger, kept for ``ttl_seconds``, and the
    first call of each model and upstream (the *probe*) whose settlement the calls behind it
    wait for.

    Models without an exact offline tokenizer are calibrated per model, whatever serves them
    (:func:`~tokenward.core.calibration.calibration_key`); OpenAI models, counted exactly, per
    model and upstream (:func:`~tokenward.core.calibration.upstream_key`), corrected only when
    an upstream counts their prompts far above the estimate. Ledgers without calibration storage
    leave plans unchanged.
    """

    def __init__(self, ttl_seconds: float = 30.0) -> None:
        self.ttl_seconds = ttl_seconds
        self._entries: dict[str, tuple[float, Calibration]] = {}
        self._probes: dict[str, str] = {}  # key -> request id of the call probing it
        self._probed: set[str] = set()  # keys whose probe settled in this process
        self._lock = threading.Lock()

    @staticmethod
    def key(model: str, upstream: str | None = None) -> tuple[str, bool]:
        """``(key the observations of model on upstream are kept under, whether the model is
        counted exactly)``."""
        if model_family(model) == "openai":
            return upstream_key(model, upstream), True
        return calibration_key(model), False

    @staticmethod
    def wanted(model: str) -> bool:
        """Whether ``model``'s estimates are calibrated (all are: exactly counted ones per
        upstream, and only against a far higher count)."""
        return True

    def cached(self, key: str) -> Calibration | None:
        """The calibration still fresh in the cache, or None."""
        entry = self._entries.get(calibration_key(key))
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    def store(self, key: str, stats: EstimateStats | None, exact: bool = False) -> Calibration:
        """Cache the calibration learnt from ``stats``."""
        learnt = correction(stats, exact=exact)
        self._entries[calibration_key(key)] = (time.monotonic() + self.ttl_seconds, learnt)
        return learnt

    def forget(self, key: str) -> None:
        """Drop ``key``'s cached calibration, so the next plan reads the ledger's stats again
        (after a call whose prompt exceeded what was held for it: the raised correction applies
        at once, not after the cache's time to live)."""
        self._entries.pop(calibration_key(key), None)

    def probe(self, key: str, request_id: str) -> bool:
        """Whether the call ``request_id`` may go ahead for a key never observed: True when it
        is (now) the probe, or the key was probed already; False while another call probes it."""
        with self._lock:
            if key in self._probed:
                return True
            owner = self._probes.setdefault(key, request_id)
            return owner == request_id

    def probe_settled(self, key: str | None, request_id: str) -> None:
        """The call ``request_id`` settled: if it probed ``key``, the key is probed for good."""
        with self._lock:
            if key is not None and self._probes.get(key) == request_id:
                del self._probes[key]
                self._probed.add(key)

    def probe_dropped(self, key: str | None, request_id: str) -> None:
        """The call ``request_id`` never reached a provider: another call may probe ``key``."""
        with self._lock:
            if key is not None and self._probes.get(key) == request_id:
                del self._probes[key]


def calibrated_plan(plan: CallPlan, calibration: Calibration | None) -> CallPlan:
    """``plan`` with its prompt estimate corrected by ``calibration`` (unchanged without one);
    stored context and tool allowances are held as they are."""
    if calibration is None or not calibration.applied:
        return plan
    fixed = plan.context_tokens + plan.tool_input_tokens
    return replace(plan, input_tokens=calibration.apply(plan.input_tokens - fixed) + fixed)


def held_too_little(admission: Admission, outcome: Outcome) -> bool:
    """Whether the provider counted the prompt above what the call held for it."""
    usage = outcome.usage
    return usage is not None and (usage.input_tokens or 0) > admission.plan.input_tokens


def observation(admission: Admission, outcome: Outcome) -> tuple[str, int, int] | None:
    """``(calibration key, estimated, actual)`` to feed calibration after a settled call, when
    the provider reported the prompt; None otherwise.

    The stored context a call continued is known exactly and taken out of both sides; a call
    that held an allowance for server-side tool results is not observed (what the tools added
    is not the estimate's error).
    """
    usage = outcome.usage
    if usage is None or usage.input_tokens is None or usage.input_source != "provider":
        return None
    plan = admission.plan
    if plan.tool_input_tokens:
        return None
    estimated = (admission.estimated_input_tokens or plan.input_tokens) - plan.context_tokens
    actual = usage.input_tokens - plan.context_tokens
    if estimated <= 0 or actual < 0:
        return None
    return admission.calibration_key or plan.model, estimated, actual
