"""The fake provider's ASGI app: routes, authentication and the record of received requests.

Routes:

* ``POST /v1/chat/completions``: OpenAI Chat Completions (:mod:`tokenward.fake.openai_chat`);
* ``POST /v1/messages``: Anthropic Messages (:mod:`tokenward.fake.anthropic_messages`);
* ``GET /v1/models``: a few fake model ids, OpenAI-shaped (Anthropic-shaped when the request
  carries ``anthropic-version``, as the Anthropic SDK's requests do);
* any other ``/v1/...`` path: 404 in the provider's error shape;
* ``GET /healthz``: ``{"status": "ok"}``;
* ``GET /_fake/requests``: the requests received on ``/v1/...``, oldest first, as
  ``{"path", "headers", "body"}`` (headers lower-cased, credential values replaced by
  ``"<redacted>"``; the body as parsed JSON without the ``fake`` key, or the raw text when it was
  not JSON, or None when empty); ``DELETE /_fake/requests`` forgets them.

Order of checks on a provider call: record, authenticate (401), parse JSON (400), resolve the
options and validate the body (400), wait ``latency_ms``, then answer: the ``status`` error, the
replayed ``events``, or the reply.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenward.errors import ValidationError
from tokenward.fake import anthropic_messages, openai_chat
from tokenward.fake.options import OPTION_HEADER, OPTION_KEY, FakeOptions, FakeSettings, resolve_options
from tokenward.fake.streaming import QuietStreamCuts, pause

__all__ = ["MODEL_IDS", "create_app", "serve"]

MODEL_IDS = ("fake-gpt", "fake-gpt-mini", "fake-claude")
"""Model ids listed by ``GET /v1/models`` (any model id is accepted by the endpoints)."""

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"})
_MODELS_CREATED = 1735689600  # 2025-01-01T00:00:00Z, fixed so that listings are deterministic


@dataclass(frozen=True, slots=True)
class _Dialect:
    error: Callable[..., Response]
    parse: Callable[[dict[str, Any]], Any]
    respond: Callable[[Any, FakeOptions, str], Response]
    replay: Callable[[FakeOptions, str], Response]
    id_format: str
    request_id_header: str
    bad_json: str
    bad_key: str


_OPENAI = _Dialect(
    error=openai_chat.error_response,
    parse=openai_chat.parse_request,
    respond=lambda call, options, rid: openai_chat.respond(call, options, rid, int(time.time())),
    replay=openai_chat.replay,
    id_format="chatcmpl-fake-{:06d}",
    request_id_header="x-request-id",
    bad_json="We could not parse the JSON body of your request. The body must be a JSON object.",
    bad_key="Incorrect API key provided. You can find your API key at your fake provider's settings.",
)
_ANTHROPIC = _Dialect(
    error=anthropic_messages.error_response,
    parse=anthropic_messages.parse_request,
    respond=anthropic_messages.respond,
    replay=anthropic_messages.replay,
    id_format="msg_fake_{:06d}",
    request_id_header="request-id",
    bad_json="The request body is not valid JSON: it must be a JSON object.",
    bad_key="invalid x-api-key",
)


def _dialect_of(request: Request) -> _Dialect:
    anthropic = request.url.path.startswith("/v1/messages") or "anthropic-version" in request.headers
    return _ANTHROPIC if anthropic else _OPENAI


def _authorised(request: Request, key: str | None) -> bool:
    if key is None:
        return True
    bearer = request.headers.get("authorization", "").encode()
    api_key = request.headers.get("x-api-key", "").encode()
    return secrets.compare_digest(bearer, f"Bearer {key}".encode()) | secrets.compare_digest(
        api_key, key.encode()
    )


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(raw: bytes) -> tuple[Any, bool]:
    if not raw.strip():
        return None, False
    try:
        return json.loads(raw, parse_constant=_reject_constant), True
    except (ValueError, RecursionError):
        return raw.decode("utf-8", "replace"), False


def _models(request: Request) -> Response:
    if "anthropic-version" in request.headers:
        data: list[dict[str, Any]] = [
            {"type": "model", "id": model, "display_name": model, "created_at": "2025-01-01T00:00:00Z"}
            for model in MODEL_IDS
        ]
        return JSONResponse(
            {"data": data, "has_more": False, "first_id": MODEL_IDS[0], "last_id": MODEL_IDS[-1]}
        )
    data = [
        {"id": model, "object": "model", "created": _MODELS_CREATED, "owned_by": "tokenward-fake"}
        for model in MODEL_IDS
    ]
    return JSONResponse({"object": "list", "data": data})


def create_app(settings: FakeSettings | None = None) -> Starlette:
    """Build the fake provider app.

    Args:
        settings: server defaults; ``FakeSettings()`` when None.

    Returns:
        A Starlette app; ``app.state.received`` is the bounded deque of received requests and
        ``app.state.settings`` the settings.
    """
    settings = settings or FakeSettings()
    received: deque[dict[str, Any]] = deque(maxlen=settings.max_recorded)
    counter = itertools.count(1)

    def record(request: Request, body: Any) -> None:
        headers = {
            name: "<redacted>" if name in _SECRET_HEADERS else value
            for name, value in request.headers.items()
        }
        received.append({"path": request.url.path, "headers": headers, "body": body})

    async def provider_call(request: Request, dialect: _Dialect) -> Response:
        body, parsed = _parse_json(await request.body())
        fake = body.pop(OPTION_KEY, None) if isinstance(body, dict) else None
        record(request, body)
        if not _authorised(request, settings.api_key):
            return dialect.error(401, dialect.bad_key)
        if not parsed or not isinstance(body, dict):
            return dialect.error(400, dialect.bad_json)
        try:
            options = resolve_options(fake, request.headers.get(OPTION_HEADER), settings)
            call = dialect.parse(body)
        except ValidationError as err:
            return dialect.error(400, str(err), err.field)
        await pause(options.latency_ms)
        response_id = dialect.id_format.format(next(counter))
        if options.status is not None:
            message = f"fake provider: status {options.status} requested by the 'status' option"
            return dialect.error(
                options.status, message, None, {dialect.request_id_header: f"req_{response_id}"}
            )
        if options.events is not None:
            return dialect.replay(options, response_id)
        try:
            return dialect.respond(call, options, response_id)
        except ValidationError as err:
            return dialect.error(400, str(err), err.field)

    async def chat_completions(request: Request) -> Response:
        return await provider_call(request, _OPENAI)

    async def messages(request: Request) -> Response:
        return await provider_call(request, _ANTHROPIC)

    async def models(request: Request) -> Response:
        record(request, None)
        if not _authorised(request, settings.api_key):
            return _dialect_of(request).error(401, _dialect_of(request).bad_key)
        return _models(request)

    async def unknown(request: Request) -> Response:
        body, _ = _parse_json(await request.body())
        record(request, body)
        return _dialect_of(request).error(404, f"Invalid URL ({request.method} {request.url.path})")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def requests(request: Request) -> Response:
        if request.method == "DELETE":
            received.clear()
            return JSONResponse({"cleared": True})
        return JSONResponse(list(received))

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/_fake/requests", requests, methods=["GET", "DELETE"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/{rest:path}", unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]
    )
    app.state.received = received
    app.state.settings = settings
    return app


def serve(host: str = "127.0.0.1", port: int = 9100, settings: FakeSettings | None = None) -> None:
    """Run the fake provider with uvicorn until interrupted (``tokenward fake-provider``).

    The deliberate cuts of ``break_after_chunks`` are logged as one info line, not a traceback.
    Point the OpenAI SDK at ``http://<host>:<port>/v1`` and the Anthropic SDK at
    ``http://<host>:<port>``.
    """
    config = uvicorn.Config(create_app(settings), host=host, port=port)  # configures uvicorn's loggers
    logging.getLogger("uvicorn.error").addFilter(QuietStreamCuts())
    uvicorn.Server(config).run()
