"""One guarded HTTP exchange with an LLM API, without I/O (the gateway and the SDK pump the bytes).

* :func:`prepare` reads and checks a request body and estimates its prompt;
* :func:`upstream_body` writes the body to send once the call is admitted (the clamped output
  bound, usage requested in streams);
* :func:`json_outcome` reads a JSON response into an :class:`~tokenward.guard.flow.Outcome`;
* :class:`StreamRelay` takes a streamed response's bytes as they come and returns the bytes to pass
  on: it counts the output, and when the count reaches the bound it trims the event that crossed
  it and ends the stream the way the provider ends a length-limited one. A stream that breaks
  ends with the dialect's error event. The caller settles *before* sending :meth:`StreamRelay.tail`,
  so the ledger is up to date when the client sees the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from tokenward.core.decide import Balance, CallPlan
from tokenward.core.estimate import Estimate, count_tokens
from tokenward.core.events import Status
from tokenward.core.pricebook import PriceBook
from tokenward.core.usage import Usage
from tokenward.errors import ValidationError
from tokenward.guard.flow import Admission, GuardSettings, Outcome, plan_call
from tokenward.guard.wire.degrade import Degrade, degrade_body, remaining_share
from tokenward.guard.wire.endpoints import Endpoint, StreamState
from tokenward.guard.wire.sse import SSEParser

__all__ = [
    "MAX_NESTING",
    "UNDECODABLE",
    "PreparedCall",
    "StreamRelay",
    "degraded",
    "json_outcome",
    "load_body",
    "model_problem",
    "prepare",
    "prepare_body",
    "upstream_body",
    "upstream_content_type",
]


UNDECODABLE = (ValueError, RecursionError)
"""What ``json.loads`` raises on an upstream's text it cannot decode: ``JSONDecodeError`` (a
``ValueError``) for text that is not JSON, and, for JSON it will not turn into objects, a plain
``ValueError`` (a number of more than 4,300 digits: Python's limit on converting text to an int)
or ``RecursionError`` (nesting deeper than the interpreter's stack)."""


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A checked request, ready to be planned.

    Attributes:
        endpoint: the endpoint it is for.
        body: the parsed JSON body.
        model: the model requested.
        estimate: the prompt estimate.
        choices: completions asked for (OpenAI ``n``).
        stream: whether the client asked for a stream.
    """

    endpoint: Endpoint
    body: dict[str, Any]
    model: str
    estimate: Estimate
    choices: int
    stream: bool

    def plan(
        self,
        prices: PriceBook,
        settings: GuardSettings,
        provider: str | None,
        *,
        context_tokens: int = 0,
        default_tier: str | None = None,
    ) -> CallPlan:
        """The call plan: the output bound (per choice, times the choices) and worst-case rates,
        with ``context_tokens`` of stored context the request continues and the service tier
        its upstream serves calls that name none at (``default_tier``)."""
        per_choice = self.endpoint.output_bound(self.body, settings.default_max_output_tokens)
        plan = plan_call(
            self.model,
            self.estimate.input_tokens,
            per_choice * self.choices,
            prices,
            settings,
            provider=provider,
            request=self.endpoint.request_facts(self.body),
            context_tokens=context_tokens,
            default_tier=default_tier,
        )
        if self.endpoint.output_bound(self.body, -1) == -1:  # the bound is the configured default
            plan = replace(plan, bound_requested=False)
        if self.choices > 1:  # every choice needs its minimum: a clamp must leave each at least that much
            per_choice_min = min(settings.min_output_tokens, per_choice) if per_choice else 0
            plan = replace(plan, min_output_tokens=max(per_choice_min, 1 if per_choice else 0) * self.choices)
        return plan


MAX_NESTING = 100
"""The deepest a request body may nest arrays and objects: far beyond any real request (tool
schemas included), far below what would exhaust the stack of a recursive reader."""


def load_body(raw: bytes, parse: Callable[[bytes], Any] = json.loads) -> Any:
    """Parse a request body (JSON unless ``parse`` reads it otherwise, as a form endpoint's does).

    Raises:
        ValidationError: the body is not JSON (field ``body``), nests too deeply, or is a form the
            endpoint cannot read.
    """
    try:
        return parse(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValidationError("the request body is not valid JSON", field="body") from None
    except RecursionError:
        raise ValidationError(f"the request body nests more than {MAX_NESTING} deep", field="body") from None


def prepare(
    endpoint: Endpoint,
    raw: bytes,
    content_type: str | None = None,
    model_of: Callable[[str], str] | None = None,
) -> PreparedCall:
    """Parse, check and estimate a request body (JSON, or the form of a form endpoint, as its
    ``content_type`` says); ``model_of`` as for :func:`prepare_body`.

    Raises:
        ValidationError: the body is not JSON, or is not a valid request (the field is named).
    """
    body = load_body(raw, lambda raw: endpoint.parse(raw, content_type))
    return prepare_body(endpoint, body, model_of)


def _too_deep(body: Any, limit: int) -> bool:
    """Whether ``body`` nests arrays and objects more than ``limit`` deep (read iteratively)."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def model_problem(model: str) -> str | None:
    """Why ``model`` cannot name a model, or None: lone surrogates, or control characters
    (U+0000-U+001F, U+007F), which no model name has and which would reach URLs, logs and the
    ledger (PostgreSQL refuses U+0000 in text)."""
    try:
        model.encode("utf-8")
    except UnicodeEncodeError:
        return "model must be valid Unicode text (no lone surrogates)"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in model):
        return "model must not contain control characters (U+0000-U+001F, U+007F)"
    return None


def prepare_body(endpoint: Endpoint, body: Any, model_of: Callable[[str], str] | None = None) -> PreparedCall:
    """Check and estimate an already parsed request body.

    ``model_of`` maps the ``model`` the body names to the model whose tokenizer estimates it
    (an Azure deployment name to the model it runs); the call keeps the name the body gave.

    Raises:
        ValidationError: the body is not a valid request (the field is named), nests more than
            :data:`MAX_NESTING` deep, or names a model with control characters.
    """
    if _too_deep(body, MAX_NESTING):
        raise ValidationError(f"the request body nests more than {MAX_NESTING} deep", field="body")
    endpoint.validate(body)
    model = str(body["model"])
    if problem := model_problem(model):
        raise ValidationError(problem, field="model")
    return PreparedCall(
        endpoint=endpoint,
        body=body,
        model=model,
        estimate=endpoint.estimate(body, model_of(model) if model_of is not None else model),
        choices=endpoint.choices(body),
        stream=body.get("stream") is True,
    )


def degraded(
    call: PreparedCall, balances: Iterable[Balance], policy: Degrade | None
) -> tuple[PreparedCall, dict[str, Any]]:
    """The call degraded by ``policy`` when the tightest hard budget has less than
    ``policy.below`` of its limit left, and what changed (``{}`` when nothing did)."""
    if policy is None:
        return call, {}
    share = remaining_share(balances, marked_only=policy.marked_only)
    if share is None or share >= Decimal(str(policy.below)):
        return call, {}
    body, changes = degrade_body(call.endpoint.dialect, call.body, policy)
    if not changes:
        return call, {}
    return prepare_body(call.endpoint, body), changes


def upstream_body(call: PreparedCall, admission: Admission, provider: str) -> tuple[bytes, bool]:
    """The body to send upstream, and whether the client itself asked for usage in the stream."""
    bound = max(1, admission.max_output_tokens // call.choices)  # 0 means "no bound" to many servers
    body = call.endpoint.with_bound(call.body, bound, provider)
    wants_usage = False
    if call.stream:
        body, wants_usage = call.endpoint.prepare_stream(body)
    return call.endpoint.request_content(body), wants_usage


def upstream_content_type(call: PreparedCall) -> str:
    """The ``content-type`` of :func:`upstream_body` (JSON, or a form endpoint's multipart form)."""
    return call.endpoint.content_type(call.body)


def json_outcome(
    endpoint: Endpoint,
    content: bytes,
    encoding: str,
    *,
    body: Mapping[str, Any] | None = None,
    content_type: str | None = None,
) -> Outcome:
    """What a JSON response reports: its usage, or our count of its text when usage is missing.

    With the request ``body``, an endpoint whose answers are not its dialect's JSON (audio bytes,
    plain-text transcripts) reads the answer itself (:meth:`Endpoint.read_answer`).
    """
    if body is not None:
        answer = endpoint.read_answer(body, content, content_type)
        if answer is not None:
            return answer
    try:
        data = json.loads(content)
    except UNDECODABLE:
        data = None
    if not isinstance(data, dict):
        if content.lstrip()[:6] in (b"data: ", b"data:{", b"event:"):
            return _sse_outcome(endpoint, content, encoding)
        return Outcome(None, None, "ok", metadata={"unreadable_response": True})
    try:
        facts = endpoint.facts(data)
        usage = facts.usage
        seen = count_tokens(endpoint.response_text(data), encoding)
    except (ValidationError, TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        # the provider's answer (already delivered) reports a usage, or has a shape, that cannot
        # be read: charged as an unreadable answer (its hold), never left unsettled
        return Outcome(None, None, "ok", metadata={"unreadable_response": True, "error": str(exc)[:200]})
    counted = seen if usage is None or usage.output_tokens is None else None
    metadata = {"response_id": facts.response_id} if facts.response_id else {}
    metadata.update(endpoint.response_metadata(data))
    return Outcome(
        usage,
        counted,
        "ok",
        facts.model,
        facts.service_tier,
        metadata,
        speed=facts.speed,
        inference_geo=facts.inference_geo,
        output_seen=seen,
    )


def _sse_outcome(endpoint: Endpoint, content: bytes, encoding: str) -> Outcome:
    """A whole SSE stream given as the answer to a call that did not ask to stream (some
    OpenAI-compatible servers do): its usage, or our count of its text when it has none."""
    reader, counted = endpoint.reader(), 0
    parser = SSEParser()
    for _name, data in [*parser.feed(content), *parser.close()]:
        try:
            event = json.loads(data)
        except UNDECODABLE:
            continue
        if isinstance(event, dict):
            text = reader.feed(event)
            counted += count_tokens(text, encoding) if text else 0
    metadata: dict[str, Any] = {"stream_answer": True}
    if reader.response_id:
        metadata["response_id"] = reader.response_id
    usage, unreadable = _reported_usage(reader)
    if unreadable is not None:
        metadata["unreadable_usage"] = unreadable
    return Outcome(
        usage,
        None if usage is not None and usage.output_tokens is not None else counted,
        "ok",
        metadata=metadata,
        speed=getattr(reader, "speed", None),
        inference_geo=getattr(reader, "inference_geo", None),
        output_seen=counted,
    )


def _reported_usage(reader: Any) -> tuple[Usage | None, str | None]:
    """A stream's reported usage, or (None, why) when the provider reported one that cannot be
    read (a count that is not a whole number): the call is then settled from tokenward's own
    count, as when no usage arrived, instead of the settle failing and the call never settling."""
    try:
        return reader.usage, None
    except ValidationError as exc:
        return None, str(exc)[:200]


class StreamRelay:
    """Relays one streamed response (sans-I/O).

    Args:
        call: the prepared call.
        admission: its admission (the output bound to cut at, the prompt estimate).
        wants_usage: whether the client asked for usage in the stream.

    Use: pass every upstream chunk to :meth:`feed` and send what it returns; stop reading once
    :attr:`done` is set; call :meth:`upstream_ended` / :meth:`upstream_failed` /
    :meth:`client_gone` as the case may be; settle with :meth:`outcome`; then send :attr:`tail`.
    """

    def __init__(self, call: PreparedCall, admission: Admission, wants_usage: bool) -> None:
        self.endpoint = call.endpoint
        self.encoding = call.estimate.encoding
        self.model = call.model
        self.bound = admission.max_output_tokens
        self.input_estimate = admission.plan.input_tokens
        self.state = StreamState(call.endpoint.reader(), wants_usage, call.choices)
        self.parser = call.endpoint.stream_parser()
        self.status: Status = "stream_broken"
        self.beyond = 0
        self.done = False
        self.tail: list[bytes] = []
        self.decoded: dict[str, dict[str, Any]] | None = None
        """When a dict (a reader of the relayed bytes sets it: :mod:`.bounded`), each event's
        data as the relay decoded it, so a reader of the relayed bytes finding the same data
        need not decode it again; the reader empties it."""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The bytes to pass on for ``chunk`` (nothing once :attr:`done`; output in events that
        arrived after the stop is counted as received, :attr:`beyond`)."""
        out: list[bytes] = []
        for name, data in self.parser.feed(chunk):
            if self.done:
                self._received(name, data)
            else:
                out += self._event(name, data)
        return out

    def upstream_ended(self) -> list[bytes]:
        """The upstream closed the stream: pass on what is left; a stream that never reached its
        end marker is broken, and ends with the dialect's error event."""
        out: list[bytes] = []
        for name, data in self.parser.close():
            if self.done:
                self._received(name, data)
            else:
                out += self._event(name, data)
        if not self.done:
            self._broken("the upstream stream ended before it finished")
        return out

    def upstream_failed(self, reason: str) -> None:
        """Reading the upstream failed (connection lost, time-out)."""
        if not self.done:
            self._broken(f"the upstream stream broke: {reason}")

    def client_gone(self) -> None:
        """The client went away: nothing more is sent; the call is settled as aborted."""
        self.done = True
        if self.status not in ("ok", "cut_off"):
            self.status = "client_aborted"
        self.tail = []

    def observe(self, chunk: bytes) -> bool:
        """After the client went away: read on for the provider's final usage, relaying nothing
        (output still generated counts: the provider bills it). True once the stream's end arrived."""
        for name, data in self.parser.feed(chunk):
            if self.endpoint.is_end(name, data, None):
                self.state.finished = True
                return True
            try:
                event = json.loads(data)
            except UNDECODABLE:
                continue
            if not isinstance(event, dict):
                continue
            text = self.state.reader.feed(event)
            self.state.counted += count_tokens(text, self.encoding) if text else 0
            if self.endpoint.is_end(name, data, event):
                self.state.finished = True
                return True
        return False

    def received_after(self, chunk: bytes) -> None:
        """Bytes the upstream sent that were read after the relay stopped (a chunk in flight
        when it was cut): nothing is relayed, but their output was received, so it is counted
        (:attr:`beyond`) and charged."""
        for name, data in self.parser.feed(chunk):
            self._received(name, data)

    def _received(self, name: str | None, data: str) -> None:
        if self.endpoint.is_end(name, data, None) or self.status == "ok":
            return
        try:
            event = json.loads(data)
        except UNDECODABLE:
            return
        if isinstance(event, dict):
            text = self.state.reader.feed(event)
            self.beyond += count_tokens(text, self.encoding) if text else 0

    def _broken(self, message: str) -> None:
        self.done, self.status = True, "stream_broken"
        self.tail = [self.endpoint.error_event(message)]

    def _input_tokens(self) -> int:
        usage, _ = _reported_usage(self.state.reader)
        return (
            usage.input_tokens
            if usage is not None and usage.input_tokens is not None
            else self.input_estimate
        )

    def _event(self, name: str | None, data: str) -> list[bytes]:
        endpoint, state = self.endpoint, self.state
        if endpoint.is_end(name, data, None):
            self.done, self.status, state.finished = True, "ok", True
            self.tail = [endpoint.passthrough(name, data)]
            return []
        try:
            event = json.loads(data)
        except UNDECODABLE:
            event = None
        if not isinstance(event, dict):
            return [endpoint.passthrough(name, data)]
        if self.decoded is not None:
            self.decoded[data] = event
        text = state.reader.feed(event)
        tokens = count_tokens(text, self.encoding) if text else 0
        if state.counted + tokens > self.bound:
            keep = self.bound - state.counted
            out = [endpoint.encode(name, endpoint.truncate(event, keep, self.encoding))] if keep > 0 else []
            self.beyond, state.counted = tokens - max(keep, 0), self.bound
            self.done, self.status = True, "cut_off"
            self.tail = endpoint.closing(
                state, model=self.model, input_tokens=self._input_tokens(), reason="budget"
            )
            return out
        state.counted += tokens
        relayed = endpoint.relay(name, data, event, state)
        if endpoint.is_end(name, data, event):
            self.done, self.status, state.finished = True, "ok", True
            self.tail = [relayed] if relayed is not None else []
            return []
        return [relayed] if relayed is not None else []

    def outcome(self) -> Outcome:
        """What to settle: the provider's usage when the stream finished, else our count of the
        output relayed; all the output received (relayed, and past a cut) is the charge floor."""
        reader = self.state.reader
        usage, unreadable = _reported_usage(reader)
        final_usage_arrived = self.status == "client_aborted" and self.state.finished
        if usage is not None and self.status != "ok" and not final_usage_arrived:
            # running or opening counts of an unfinished stream are not the final output
            usage = replace(usage, output_tokens=None, reasoning_tokens=None, output_source="none")
        metadata: dict[str, Any] = {"stream": True}
        if reader.response_id:
            metadata["response_id"] = reader.response_id
        if reader.finish_reason:
            metadata["finish_reason"] = reader.finish_reason
        if self.status == "client_aborted":
            metadata["cost_basis"] = (
                "provider_usage" if final_usage_arrived and usage is not None else "aborted_estimated"
            )
        if unreadable is not None:
            metadata["unreadable_usage"] = unreadable
        if self.status == "cut_off":
            metadata["cut_off"] = "budget"
        if self.beyond:
            metadata["received_beyond_cut_tokens"] = self.beyond
        tier = getattr(reader, "service_tier", None)
        seen = self.state.counted + self.beyond  # received is owed, relayed or not: the floor
        return Outcome(
            usage,
            self.state.counted,
            self.status,
            reader.model,
            tier,
            metadata,
            speed=getattr(reader, "speed", None),
            inference_geo=getattr(reader, "inference_geo", None),
            output_seen=seen,
        )
