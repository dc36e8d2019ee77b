"""Server settings and per-request options of the fake provider.

Per-request options come from the request body key ``"fake"`` (a JSON object, removed from the
body before anything is echoed or recorded) and from the header ``x-fake-options`` (a JSON
object); they are merged key by key and the body wins. Unknown names and wrong types are a 400,
so a typo in a test fails loudly instead of silently testing the well-behaved path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tokenward.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from tokenward.fake.tally import Meter

__all__ = [
    "OPTION_HEADER",
    "OPTION_KEY",
    "USAGE_MODES",
    "FakeOptions",
    "FakeSettings",
    "ToolCall",
    "resolve_options",
]

OPTION_KEY = "fake"
"""Request body key that carries per-request options."""

OPTION_HEADER = "x-fake-options"
"""Request header that carries per-request options (JSON)."""

UsageMode = Literal["normal", "omit", "zero", "under", "null_prompt"]
USAGE_MODES: tuple[UsageMode, ...] = ("normal", "omit", "zero", "under", "null_prompt")


@dataclass(frozen=True, slots=True)
class FakeSettings:
    """Server-wide defaults of the fake provider.

    Attributes:
        reply_tokens: tokens in each reply (before the request's output bound applies).
        chunk_tokens: words (= tokens) per streamed text chunk; at least 1.
        latency_ms: milliseconds to wait before answering (before the first byte).
        chunk_delay_ms: milliseconds to wait between two events of a stream.
        api_key: when set, provider endpoints require ``Authorization: Bearer <key>`` or
            ``x-api-key: <key>`` and answer 401 otherwise.
        max_recorded: how many received requests ``GET /_fake/requests`` keeps (oldest dropped).
        embedding_dimensions: length of the vectors of ``/v1/embeddings`` when the request does not
            ask for ``dimensions``.
        azure_identity_secret: the ``X-IDENTITY-HEADER`` value the fake's Azure managed-identity
            token endpoint accepts (None: it issues no tokens); see :mod:`tokenward.fake.azure`.
        google_service_account_key: the PEM public key of the service account whose signed JWTs
            the fake's Google OAuth token endpoint accepts (None: it issues no tokens); see
            :mod:`tokenward.fake.vertex`.
        aws_access_key_id / aws_secret_access_key: the AWS credentials whose SigV4 signatures the
            fake's Bedrock routes accept (no secret: SigV4 is not checked); see
            :mod:`tokenward.fake.bedrock`.

    Raises:
        ConfigError: a negative count or delay, ``chunk_tokens`` or ``max_recorded`` below 1.
    """

    reply_tokens: int = 20
    chunk_tokens: int = 5
    latency_ms: float = 0
    chunk_delay_ms: float = 0
    api_key: str | None = None
    max_recorded: int = 1000
    embedding_dimensions: int = 1536
    azure_identity_secret: str | None = None
    google_service_account_key: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None

    def __post_init__(self) -> None:
        minimums = {
            "reply_tokens": 0,
            "chunk_tokens": 1,
            "latency_ms": 0,
            "chunk_delay_ms": 0,
            "max_recorded": 1,
            "embedding_dimensions": 1,
        }
        for name, low in minimums.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise ConfigError(f"FakeSettings.{name} must be a number >= {low}, got {value!r}")
        for name in ("reply_tokens", "chunk_tokens", "max_recorded", "embedding_dimensions"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"FakeSettings.{name} must be a whole number, got {getattr(self, name)!r}")
        if self.api_key is not None and not self.api_key:
            raise ConfigError("FakeSettings.api_key must be None (no auth) or a non-empty string")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The ``tool_call`` option: the call the fake makes when the request offers tools.

    Attributes:
        name: the function name (sent as is; it need not be one of the offered tools).
        arguments: the arguments' JSON text, as OpenAI sends it: the option's string verbatim, or
            its object as compact JSON (``separators=(",", ":")``, non-ASCII kept).
        input: the arguments as an object, as Anthropic sends it.
    """

    name: str
    arguments: str
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FakeOptions:
    """The effective behaviour for one request (server settings overridden by request options).

    See the package docstring of :mod:`tokenward.fake` for what each option does.
    """

    reply_tokens: int
    chunk_tokens: int
    latency_ms: float
    chunk_delay_ms: float
    ignore_max_tokens: bool = False
    usage: UsageMode = "normal"
    running_usage: bool = False
    break_after_chunks: int | None = None
    events: tuple[dict[str, Any], ...] | None = None
    response: dict[str, Any] | None = None
    done: bool = True
    status: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    tool_call: ToolCall | None = None
    break_after_bytes: int | None = None
    prompt_factor: float = 1.0
    meter: Meter | None = None
    """The request's tally (:mod:`tokenward.fake.tally`), set by the server, not an option."""


def _whole(name: str, value: Any, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValidationError(
            f"fake option {name!r} must be a whole number >= {low}, got {value!r}", field=name
        )
    return value


def _millis(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValidationError(
            f"fake option {name!r} must be a number of milliseconds >= 0, got {value!r}", field=name
        )
    return float(value)


def _factor(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 10_000:
        raise ValidationError(
            f"fake option {name!r} must be a number above 0 (at most 10000), got {value!r}", field=name
        )
    return float(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"fake option {name!r} must be true or false, got {value!r}", field=name)
    return value


def _usage(name: str, value: Any) -> UsageMode:
    for mode in USAGE_MODES:
        if value == mode:
            return mode
    raise ValidationError(
        f"fake option 'usage' must be one of {', '.join(USAGE_MODES)}; got {value!r}", field=name
    )


def _events(name: str, value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or not all(isinstance(event, dict) for event in value):
        raise ValidationError("fake option 'events' must be a list of JSON objects", field=name)
    return tuple(value)


def _response(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError("fake option 'response' must be a JSON object (the whole answer)", field=name)
    return value


def _status(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValidationError(
            f"fake option 'status' must be an HTTP error status (400-599), got {value!r}", field=name
        )
    return value


def _tool_call(name: str, value: Any) -> ToolCall:
    shape = 'fake option \'tool_call\' must be {"name": "<function>", "arguments": <object or its JSON text>}'
    if not isinstance(value, dict) or set(value) - {"name", "arguments"}:
        raise ValidationError(f"{shape}, got {value!r}", field=name)
    function, arguments = value.get("name"), value.get("arguments", {})
    if not isinstance(function, str) or not function:
        raise ValidationError(f"{shape}: 'name' must be a non-empty string", field=name)
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ValidationError(f"{shape}: 'arguments' text must be a JSON object", field=name)
        return ToolCall(function, arguments, parsed)
    if not isinstance(arguments, dict):
        raise ValidationError(f"{shape}: 'arguments' must be an object or its JSON text", field=name)
    text = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
    return ToolCall(function, text, arguments)


_PARSERS: dict[str, Any] = {
    "reply_tokens": _whole,
    "chunk_tokens": lambda name, value: _whole(name, value, 1),
    "latency_ms": _millis,
    "chunk_delay_ms": _millis,
    "ignore_max_tokens": _flag,
    "usage": _usage,
    "running_usage": _flag,
    "break_after_chunks": _whole,
    "break_after_bytes": _whole,
    "events": _events,
    "response": _response,
    "done": _flag,
    "status": _status,
    "cache_read_tokens": _whole,
    "cache_write_tokens": _whole,
    "reasoning_tokens": _whole,
    "tool_call": _tool_call,
    "prompt_factor": _factor,
}
OPTION_NAMES = tuple(_PARSERS)


def _header_options(raw: str | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ValidationError(f"header {OPTION_HEADER} is not valid JSON", field=OPTION_HEADER) from None
    if not isinstance(value, dict):
        raise ValidationError(f"header {OPTION_HEADER} must be a JSON object", field=OPTION_HEADER)
    return value


def resolve_options(body_options: Any, header: str | None, settings: FakeSettings) -> FakeOptions:
    """Merge the request's options (header, then body, body winning) over the server settings.

    Args:
        body_options: the value of the body key ``"fake"`` (None when absent).
        header: the raw ``x-fake-options`` header value, if any.
        settings: the server defaults.

    Raises:
        ValidationError: malformed JSON, an unknown option name or a value of the wrong type;
            ``field`` names the option.
    """
    if body_options is not None and not isinstance(body_options, Mapping):
        raise ValidationError(f"body key {OPTION_KEY!r} must be a JSON object", field=OPTION_KEY)
    merged = {**_header_options(header), **(body_options or {})}
    values: dict[str, Any] = {
        "reply_tokens": settings.reply_tokens,
        "chunk_tokens": settings.chunk_tokens,
        "latency_ms": settings.latency_ms,
        "chunk_delay_ms": settings.chunk_delay_ms,
    }
    for name, raw in merged.items():
        parser = _PARSERS.get(name)
        if parser is None:
            raise ValidationError(
                f"unknown fake option {name!r}; known: {', '.join(OPTION_NAMES)}",
                field=f"{OPTION_KEY}.{name}",
            )
        values[name] = parser(name, raw)
    if values.get("events") is not None and values.get("response") is not None:
        raise ValidationError(
            "fake options 'events' and 'response' exclude each other: replay a stream or a JSON answer",
            field=f"{OPTION_KEY}.response",
        )
    return FakeOptions(**values)
