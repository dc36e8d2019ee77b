"""What the relay needs to know about one proxied endpoint (its dialect's request and wire rules)."""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tokenward.core.dialects import ResponseFacts, StreamReader, response_facts, stream_reader
from tokenward.core.estimate import Estimate
from tokenward.core.modifiers import RequestFacts
from tokenward.core.tokenizers import encoding as get_encoding
from tokenward.core.usage import Usage
from tokenward.errors import ValidationError
from tokenward.guard.flow import Outcome
from tokenward.guard.wire.endpoints.billable import ContextRef, openai_server_tools, requested_tier
from tokenward.guard.wire.sse import SSEParser, format_event

__all__ = ["Endpoint", "NoOutput", "StreamState", "require"]


def head(text: str, budget: int, encoding: str) -> tuple[str, int]:
    """The longest start of ``text`` that is at most ``budget`` tokens and whole UTF-8 (a
    character split between tokens is left out rather than sent as U+FFFD), and the tokens it
    takes from the budget: all of ``text``'s when it fits, else the whole budget."""
    enc = get_encoding(encoding)
    tokens = enc.encode_ordinary(text)
    if len(tokens) <= budget:
        return text, len(tokens)
    keep = max(budget, 0)
    return enc.decode_bytes(tokens[:keep]).decode("utf-8", errors="ignore"), keep


def values_under(body: Any, key: str) -> list[Any]:
    """Every value stored under ``key`` in any object of ``body``, however deep (iteratively: a
    deeply nested body cannot exhaust the stack)."""
    found: list[Any] = []
    stack: list[Any] = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            if key in node:
                found.append(node[key])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def openai_may_write_cache(body: Any) -> bool:
    """Whether an OpenAI request may write the prompt cache: yes (caching is automatic, and from
    GPT-5.6 on a write is billed at 1.25x the input rate), unless it sets
    ``prompt_cache_options.mode: "explicit"`` and marks no ``prompt_cache_breakpoint``: then only
    marked prefixes are cached and there is none
    (https://developers.openai.com/api/docs/guides/prompt-caching, read 2026-12-07)."""
    options = body.get("prompt_cache_options") if isinstance(body, Mapping) else None
    if isinstance(options, Mapping) and options.get("mode") == "explicit":
        return bool(values_under(body, "prompt_cache_breakpoint"))
    return True


def openai_request_facts(body: Mapping[str, Any]) -> RequestFacts:
    """What an OpenAI request asks for that changes its rates: cache writes
    (:func:`openai_may_write_cache`), the service tier it names, and web search."""
    return RequestFacts(
        may_write_cache=openai_may_write_cache(body),
        service_tier=requested_tier(body.get("service_tier")),
        server_tools=openai_server_tools(body),
    )


def require(condition: bool, message: str, field: str) -> None:
    """Raise a :class:`ValidationError` naming ``field`` unless ``condition``."""
    if not condition:
        raise ValidationError(message, field=field)


def require_object_with_model(body: Any) -> None:
    """The body is a JSON object naming a model."""
    require(isinstance(body, dict), "the request body must be a JSON object", "body")
    require(
        isinstance(body.get("model"), str) and bool(body["model"]),
        "model must be a non-empty string",
        "model",
    )


def require_messages(body: Any) -> None:
    """``messages`` is a non-empty list of objects with a role."""
    messages = body.get("messages")
    require(isinstance(messages, list) and bool(messages), "messages must be a non-empty list", "messages")
    for i, message in enumerate(messages):
        require(
            isinstance(message, dict) and isinstance(message.get("role"), str),
            f"messages[{i}] must be an object with a role",
            "messages",
        )


def require_positive_int(body: Any, name: str, *, required: bool = False) -> None:
    """``body[name]`` is a positive whole number (or absent, unless ``required``)."""
    value = body.get(name)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if required:
        require(ok, f"{name} is required and must be a positive integer", name)
    else:
        require(value is None or ok, f"{name} must be a positive integer", name)


def require_stream_flag(body: Any) -> None:
    """``stream`` is absent or a boolean."""
    require(isinstance(body.get("stream", False), bool), "stream must be true or false", "stream")


class StreamState:
    """What the relay knows about a stream in flight.

    Attributes:
        reader: the dialect's stream reader (provider usage, finish reason, model).
        client_wants_usage: whether the client asked for usage in the stream.
        counted: output tokens relayed so far (our count).
        choices: how many choices the request asked for.
        open_block: index of an Anthropic content block that started and has not stopped.
        finished: the upstream ended the stream properly (``[DONE]`` or ``message_stop``).
    """

    def __init__(self, reader: StreamReader, client_wants_usage: bool, choices: int = 1) -> None:
        self.reader = reader
        self.client_wants_usage = client_wants_usage
        self.counted = 0
        self.choices = choices
        self.open_block: int | None = None
        self.finished = False


class Endpoint(abc.ABC):
    """One proxied endpoint.

    Attributes:
        dialect: the usage dialect of its responses (:mod:`tokenward.core.dialects`).
        family: the API family whose upstreams serve it: ``openai``, ``anthropic`` or ``gemini``.
        path: where the gateway serves it.
        charged: whether calls to it are budgeted (token counting, for one, is free).
        streams: whether its upstream can stream answers, so that a call the client did not
            stream can be read as a stream and stopped at its hold (images and audio cannot).
        stream_media_type: the ``content-type`` of its streamed answers.
        error_shape: the shape of the gateway's error answers when not its dialect's
            (``bedrock``: the AWS JSON error protocol).
    """

    dialect: str
    family: str
    path: str
    charged: bool = True
    streams: bool = True
    stream_media_type: str = "text/event-stream"
    error_shape: str | None = None

    def stream_parser(self) -> Any:
        """A fresh incremental reader of this endpoint's streamed answers: ``feed(bytes)`` and
        ``close()`` return ``(event name or None, data)`` pairs (server-sent events by default)."""
        return SSEParser()

    def passthrough(self, name: str | None, data: str) -> bytes:
        """An upstream event passed on as it came (the stream's end marker, data that is not JSON)."""
        return format_event(data, name)

    def upstream_path(self, body: Mapping[str, Any]) -> str:
        """The path to call on an upstream, relative to the family's base URL (OpenAI bases end
        in ``/v1``; Anthropic and Gemini bases do not)."""
        return self.path.removeprefix("/v1") if self.family == "openai" else self.path

    def parse(self, raw: bytes, content_type: str | None) -> Any:
        """The request body as this endpoint reads it: JSON (multipart form endpoints override).

        Raises:
            ValueError: the body is not JSON (``json.JSONDecodeError``, ``UnicodeDecodeError``).
            RecursionError: it is nested too deeply.
            ValidationError: a form the endpoint cannot read.
        """
        return json.loads(raw)

    def request_content(self, body: Mapping[str, Any]) -> bytes:
        """The bytes to send upstream for ``body`` (JSON; form endpoints send their form)."""
        return json.dumps(body).encode()

    def content_type(self, body: Mapping[str, Any]) -> str:
        """The ``content-type`` of :meth:`request_content`."""
        return "application/json"

    def read_answer(
        self, body: Mapping[str, Any], content: bytes, content_type: str | None
    ) -> Outcome | None:
        """What an answer reports, for endpoints whose answers are not the dialect's JSON (audio
        bytes, plain-text transcripts) or need the request to be read (images): None lets the
        dialect's JSON rules read it."""
        return None

    def output_bound(self, body: Mapping[str, Any], default: int) -> int:
        """The output bound per choice: the one requested, else ``default`` (tokens)."""
        requested = self.requested_max(body)
        return requested if requested is not None else default

    @abc.abstractmethod
    def validate(self, body: Any) -> None:
        """Refuse a malformed request body.

        Raises:
            ValidationError: naming the offending field.
        """

    @abc.abstractmethod
    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The prompt estimate."""

    @abc.abstractmethod
    def requested_max(self, body: Mapping[str, Any]) -> int | None:
        """The output bound the client asked for, per choice, or None."""

    def choices(self, body: Mapping[str, Any]) -> int:
        """How many completions the request asks for (each may use the whole bound)."""
        return 1

    @abc.abstractmethod
    def with_bound(self, body: dict[str, Any], bound: int, provider: str) -> dict[str, Any]:
        """The body to send upstream with the output bound set to ``bound`` tokens per choice."""

    def may_write_cache(self, body: Mapping[str, Any]) -> bool:
        """Whether the request may write a prompt cache (priced at the write rate)."""
        return False

    def request_facts(self, body: Mapping[str, Any]) -> RequestFacts:
        """What the request asks for that changes the rates it can be billed at (held at them).

        The base reads only whether it may write a cache; dialects with speeds, geographies or
        cache lifetimes read those too.
        """
        return RequestFacts(may_write_cache=self.may_write_cache(body))

    def stored_context(self, body: Mapping[str, Any]) -> tuple[ContextRef, ...]:
        """The stored context the request continues, which the provider adds to its prompt (an
        OpenAI ``previous_response_id``, a Gemini ``cachedContent``...); none by default."""
        return ()

    def request_metadata(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """What to keep on the call's event from its request, so later calls can find it (the
        Responses ``conversation`` it adds to); nothing by default."""
        return {}

    def response_metadata(self, response: Mapping[str, Any]) -> dict[str, Any]:
        """What to keep on the call's event from a JSON answer besides its id (the name of a
        Gemini cached content it created); nothing by default."""
        return {}

    @abc.abstractmethod
    def prepare_stream(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(body to send upstream, whether the client itself asked for usage in the stream)."""

    def usage(self, response: Mapping[str, Any]) -> Usage | None:
        """The provider's usage in a JSON response, or None."""
        return response_facts(self.dialect, response).usage

    @abc.abstractmethod
    def response_text(self, response: Mapping[str, Any]) -> str:
        """The generated text of a JSON response (for counting when usage is missing)."""

    def facts(self, response: Mapping[str, Any]) -> ResponseFacts:
        """What a JSON response states: its usage (:meth:`usage`), the model, tier, speed and
        inference geography that served it."""
        return replace(response_facts(self.dialect, response), usage=self.usage(response))

    def reader(self) -> StreamReader:
        """A fresh stream reader for the dialect."""
        return stream_reader(self.dialect)

    @abc.abstractmethod
    def relay(
        self, name: str | None, data: str, event: Mapping[str, Any], state: StreamState
    ) -> bytes | None:
        """The bytes to pass on for one upstream event (None to drop it)."""

    @abc.abstractmethod
    def truncate(self, event: Mapping[str, Any], keep_tokens: int, encoding: str) -> Mapping[str, Any]:
        """The event with its generated text shortened to its first ``keep_tokens`` tokens."""

    @abc.abstractmethod
    def encode(self, name: str | None, event: Mapping[str, Any]) -> bytes:
        """An event on the wire."""

    @abc.abstractmethod
    def closing(self, state: StreamState, *, model: str, input_tokens: int, reason: str) -> list[bytes]:
        """The events that end a stream tokenward cuts off, the way the provider ends one that
        reached its output bound."""

    @abc.abstractmethod
    def error_event(self, message: str) -> bytes:
        """A stream error event in the dialect's shape (the SDKs raise on it)."""

    @abc.abstractmethod
    def is_end(self, name: str | None, data: str, event: Mapping[str, Any] | None) -> bool:
        """Whether this upstream event is the stream's proper end."""


class NoOutput:
    """Mixin of the endpoints that generate nothing (embeddings, creating a context cache): held
    for their input alone, one request each, and never streamed (:attr:`Endpoint.streams` is
    False: there is no output to stop, so a call is never read as a stream to bound it)."""

    streams: bool = False

    def requested_max(self, body: Mapping[str, Any]) -> int | None:
        """Nothing is generated."""
        return 0

    def output_bound(self, body: Mapping[str, Any], default: int) -> int:
        """No output."""
        return 0

    def choices(self, body: Mapping[str, Any]) -> int:
        """One request."""
        return 1

    def with_bound(self, body: dict[str, Any], bound: int, provider: str) -> dict[str, Any]:
        """The body unchanged (there is no output to bound), without the gateway's own
        ``stream`` key."""
        return {k: v for k, v in body.items() if k != "stream"}

    def response_text(self, response: Mapping[str, Any]) -> str:
        """No generated text."""
        return ""
