"""The fake provider's ASGI app: routes, authentication and the record of received requests.

Routes:

* ``POST /v1/chat/completions``: OpenAI Chat Completions (:mod:`tokenward.fake.openai_chat`);
* ``POST /v1/responses``: OpenAI Responses (:mod:`tokenward.fake.openai_responses`);
* ``POST /v1/completions``: OpenAI legacy Completions (:mod:`tokenward.fake.openai_completions`);
* ``POST /v1/embeddings``: OpenAI Embeddings (:mod:`tokenward.fake.openai_embeddings`);
* ``POST /v1/images/generations``, ``/v1/images/edits``, ``/v1/audio/transcriptions``,
  ``/v1/audio/speech``: OpenAI images and audio (:mod:`tokenward.fake.openai_media`);
* ``POST /v1/messages``: Anthropic Messages (:mod:`tokenward.fake.anthropic_messages`);
* ``POST /v1/messages/count_tokens``: Anthropic token counting
  (:mod:`tokenward.fake.anthropic_count_tokens`);
* ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent`` (the same under
  ``/v1/models/``, where google-genai 3 sends them): Gemini (:mod:`tokenward.fake.gemini`);
* ``/v1beta/cachedContents`` and ``/v1beta/cachedContents/{id}``: Gemini context caches
  (:mod:`tokenward.fake.gemini_caches`);
* ``/v1/conversations``, ``/v1/conversations/{id}`` and ``/v1/conversations/{id}/items``: OpenAI
  conversations (:mod:`tokenward.fake.conversations`);
* ``GET /v1/models``: a few fake model ids, OpenAI-shaped (Anthropic-shaped when the request
  carries ``anthropic-version``, as the Anthropic SDK's requests do);
* any other ``/v1/...`` or ``/v1beta/...`` path: 404 in the provider's error shape (Google's
  under ``/v1beta/`` and for ``/v1/models/<model>:<method>``, Anthropic's under
  ``/v1/messages`` or with ``anthropic-version``, else OpenAI's);
* Azure OpenAI's layouts (``/openai/deployments/{deployment}/...``, ``/openai/v1/...``) and a
  managed-identity token endpoint (:mod:`tokenward.fake.azure`);
* Bedrock Runtime's Converse and InvokeModel paths, binary event streams included, with SigV4
  checked (:mod:`tokenward.fake.bedrock`);
* Vertex AI's publisher-model paths (Gemini, and Claude's ``rawPredict``/``streamRawPredict``) and
  an OAuth token endpoint (:mod:`tokenward.fake.vertex`);
* ``GET /healthz``: ``{"status": "ok"}``;
* ``GET /_fake/tally``: what the fake generated per request (:mod:`tokenward.fake.tally`);
  ``DELETE /_fake/tally`` forgets it;
* ``GET /_fake/requests``: the requests received on ``/v1/...``, oldest first, as
  ``{"path", "headers", "body"}`` (headers lower-cased, credential values replaced by
  ``"<redacted>"``; the body as parsed JSON without the ``fake`` key, or the raw text when it was
  not JSON, or None when empty); ``DELETE /_fake/requests`` forgets them.

Authentication, when ``FakeSettings.api_key`` is set: OpenAI and Anthropic endpoints accept
``Authorization: Bearer <key>`` or ``x-api-key: <key>`` (else 401); Gemini ones accept
``x-goog-api-key: <key>`` or ``?key=<key>`` and answer as Google does otherwise (no key: 403
``PERMISSION_DENIED``; a wrong one: 400 ``INVALID_ARGUMENT`` "API key not valid").

Order of checks on a provider call: record, authenticate, parse JSON (400), resolve the options
and validate the body (400), wait ``latency_ms``, then answer: the ``status`` error, the replayed
``response`` or ``events``, or the reply.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenward.errors import ValidationError
from tokenward.fake import (
    anthropic_count_tokens,
    anthropic_messages,
    azure,
    bedrock,
    gemini,
    gemini_caches,
    openai_chat,
    openai_completions,
    openai_embeddings,
    openai_media,
    openai_responses,
    vertex,
)
from tokenward.fake import (
    conversations as fake_conversations,
)
from tokenward.fake.options import OPTION_HEADER, OPTION_KEY, FakeOptions, FakeSettings, resolve_options
from tokenward.fake.stored import StoredContext
from tokenward.fake.streaming import QuietStreamCuts, pause
from tokenward.fake.tally import Meter, Tally

__all__ = ["DELIVERY_EXTENSION", "MODEL_IDS", "create_app", "serve"]

DELIVERY_EXTENSION = "tokenward.fake.delivery"
"""ASGI scope extension an in-process transport sets to report deliveries to the tally itself."""

MODEL_IDS = ("fake-gpt", "fake-gpt-mini", "fake-claude")
"""Model ids listed by ``GET /v1/models`` (any model id is accepted by the endpoints)."""

_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie"}
)
_ANY = ("GET", "POST", "PUT", "PATCH", "DELETE")
_MODELS_CREATED = 1735689600  # 2025-01-01T00:00:00Z, fixed so that listings are deterministic
_OPENAI_BAD_JSON = "We could not parse the JSON body of your request. The body must be a JSON object."
_OPENAI_BAD_KEY = "Incorrect API key provided. You can find your API key at your fake provider's settings."
_GEMINI_NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


def _bearer_or_x_api_key(error: Callable[..., Response], message: str) -> Callable[..., Response | None]:
    """The OpenAI and Anthropic check: ``Authorization: Bearer <key>`` or ``x-api-key: <key>``."""

    def check(request: Request, key: str | None) -> Response | None:
        if key is None:
            return None
        bearer = request.headers.get("authorization", "").encode()
        api_key = request.headers.get("x-api-key", "").encode()
        good = secrets.compare_digest(bearer, f"Bearer {key}".encode()) | secrets.compare_digest(
            api_key, key.encode()
        )
        return None if good else error(401, message)

    return check


def _google_key(request: Request, key: str | None) -> Response | None:
    """The Gemini check: ``x-goog-api-key: <key>`` or ``?key=<key>``; Google's answers otherwise."""
    if key is None:
        return None
    given = request.headers.get("x-goog-api-key", request.query_params.get("key"))
    if given is None:
        return gemini.error_response(403, _GEMINI_NO_KEY)
    if not secrets.compare_digest(given.encode(), key.encode()):
        return gemini.error_response(400, "API key not valid. Please pass a valid API key.")
    return None


def _no_stream(path: str) -> Callable[[FakeOptions, str], Response]:
    def replay(options: FakeOptions, response_id: str) -> Response:
        raise ValidationError(f"fake option 'events' does not apply to {path}", field="events")

    return replay


@dataclass(frozen=True, slots=True)
class _Endpoint:
    error: Callable[..., Response]
    parse: Callable[[dict[str, Any]], Any]
    respond: Callable[[Any, FakeOptions, str], Response]
    replay: Callable[[FakeOptions, str], Response]
    id_format: str
    bad_json: str
    check_key: Callable[[Request, str | None], Response | None]
    request_id_header: str | None = "x-request-id"
    tallied: bool = True
    kind: str = ""


_OPENAI_CHECK = _bearer_or_x_api_key(openai_chat.error_response, _OPENAI_BAD_KEY)
_CHAT = _Endpoint(
    error=openai_chat.error_response,
    parse=openai_chat.parse_request,
    respond=lambda call, options, rid: openai_chat.respond(call, options, rid, int(time.time())),
    replay=openai_chat.replay,
    id_format="chatcmpl-fake-{:06d}",
    bad_json=_OPENAI_BAD_JSON,
    check_key=_OPENAI_CHECK,
)
_COMPLETIONS = replace(
    _CHAT,
    parse=openai_completions.parse_request,
    respond=lambda call, options, rid: openai_completions.respond(call, options, rid, int(time.time())),
    id_format="cmpl-fake-{:06d}",
)
_RESPONSES = replace(
    _CHAT,
    parse=openai_responses.parse_request,
    respond=openai_responses.respond,
    replay=openai_responses.replay,
    id_format="resp_fake_{:06d}",
    kind="responses",
)
_MESSAGES = _Endpoint(
    error=anthropic_messages.error_response,
    parse=anthropic_messages.parse_request,
    respond=anthropic_messages.respond,
    replay=anthropic_messages.replay,
    id_format="msg_fake_{:06d}",
    bad_json="The request body is not valid JSON: it must be a JSON object.",
    check_key=_bearer_or_x_api_key(anthropic_messages.error_response, "invalid x-api-key"),
    request_id_header="request-id",
)
_COUNT_TOKENS = replace(
    _MESSAGES,
    parse=anthropic_count_tokens.parse_request,
    respond=anthropic_count_tokens.respond,
    replay=_no_stream("/v1/messages/count_tokens"),
    id_format="count_fake_{:06d}",
    tallied=False,
)
_GEMINI = _Endpoint(
    error=gemini.error_response,
    parse=lambda body: None,  # replaced per request: the model and method come from the path
    respond=gemini.respond,
    replay=gemini.replay,
    id_format="gemini_fake_{:06d}",
    bad_json="Invalid JSON payload received. The body must be a JSON object.",
    check_key=_google_key,
    request_id_header=None,
    kind="gemini",
)


def _endpoint_of(request: Request) -> _Endpoint:
    """The endpoint whose error shape an unknown path gets."""
    path = request.url.path
    if path.startswith("/v1beta/") or (path.startswith("/v1/models/") and ":" in path):
        return _GEMINI
    anthropic = path.startswith("/v1/messages") or "anthropic-version" in request.headers
    return _MESSAGES if anthropic else _CHAT


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


class _CacheMissing(Exception):
    """A ``generateContent`` named a cached content the fake does not have."""


def _counted(
    kind: str, call: Any, options: FakeOptions, body: dict[str, Any], stored: StoredContext
) -> tuple[Any, FakeOptions]:
    """The request as the fake bills it: its prompt count times ``prompt_factor`` (rounded up),
    plus the stored context it continues (Responses ``previous_response_id``/``conversation``;
    Gemini ``cachedContent``, reported as cache reads).

    Raises:
        ValidationError: an unknown ``previous_response_id``.
        _CacheMissing: an unknown ``cachedContent``.
    """
    if options.prompt_factor != 1.0:
        if hasattr(call, "prompt_tokens"):
            call = replace(call, prompt_tokens=math.ceil(call.prompt_tokens * options.prompt_factor))
        elif hasattr(call, "prompts"):
            call = replace(call, prompts=tuple(math.ceil(n * options.prompt_factor) for n in call.prompts))
    if kind == "responses":
        call = replace(call, prompt_tokens=call.prompt_tokens + stored.continued(body))
    elif kind == "gemini":
        name = body.get("cachedContent", body.get("cached_content"))
        if name is not None:
            cache = stored.cache(name) if isinstance(name, str) else None
            if cache is None:
                raise _CacheMissing(str(name))
            call = replace(call, prompt_tokens=call.prompt_tokens + cache.tokens)
            options = replace(options, cache_read_tokens=options.cache_read_tokens + cache.tokens)
    return call, options


def create_app(settings: FakeSettings | None = None) -> Starlette:
    """Build the fake provider app.

    Args:
        settings: server defaults; ``FakeSettings()`` when None.

    Returns:
        A Starlette app; ``app.state.received`` is the bounded deque of received requests,
        ``app.state.tally`` the :class:`~tokenward.fake.tally.Tally` of what it generated, and
        ``app.state.settings`` the settings.
    """
    settings = settings or FakeSettings()
    received: deque[dict[str, Any]] = deque(maxlen=settings.max_recorded)
    tally = Tally(settings.max_recorded)
    counter = itertools.count(1)
    stored = StoredContext()

    def record(request: Request, body: Any) -> None:
        headers = {
            name: "<redacted>" if name in _SECRET_HEADERS else value
            for name, value in request.headers.items()
        }
        received.append({"path": request.url.path, "headers": headers, "body": body})

    embeddings_endpoint = replace(
        _CHAT,
        parse=openai_embeddings.parse_request,
        respond=lambda call, options, rid: openai_embeddings.respond(
            call, options, rid, settings.embedding_dimensions
        ),
        replay=_no_stream("/v1/embeddings"),
        id_format="emb-fake-{:06d}",
        tallied=False,
    )

    async def provider_call(request: Request, endpoint: _Endpoint) -> Response:
        body, parsed = _parse_json(await request.body())
        fake = body.pop(OPTION_KEY, None) if isinstance(body, dict) else None
        record(request, body)
        refusal = endpoint.check_key(request, settings.api_key)
        if refusal is not None:
            return refusal
        if not parsed or not isinstance(body, dict):
            return endpoint.error(400, endpoint.bad_json)
        try:
            options = resolve_options(fake, request.headers.get(OPTION_HEADER), settings)
            call = endpoint.parse(body)
            call, options = _counted(endpoint.kind, call, options, body, stored)
        except ValidationError as err:
            return endpoint.error(400, str(err), err.field)
        except _CacheMissing as missing:
            return gemini.error_response(403, f"CachedContent not found (or permission denied): {missing}")
        await pause(options.latency_ms)
        response_id = endpoint.id_format.format(next(counter))
        if options.status is not None:
            message = f"fake provider: status {options.status} requested by the 'status' option"
            header = endpoint.request_id_header
            return endpoint.error(
                options.status, message, None, {header: f"req_{response_id}"} if header else None
            )
        try:
            if options.response is not None:
                header = endpoint.request_id_header
                return JSONResponse(
                    options.response, headers={header: f"req_{response_id}"} if header else None
                )
            if options.events is not None:
                return endpoint.replay(options, response_id)
            if endpoint.tallied:
                options = replace(options, meter=_meter(request, call, response_id))
            answer = endpoint.respond(call, options, response_id)
            if endpoint.kind == "responses":  # remember it, for previous_response_id
                turn = openai_responses.plan_turn(call, options, response_id)
                stored.remember(response_id, body, call.prompt_tokens + turn.reply.output_tokens)
            return answer
        except ValidationError as err:
            return endpoint.error(400, str(err), err.field)

    def _meter(request: Request, call: Any, response_id: str) -> Meter:
        """Open the tally record of a reply the fake generates."""
        prompts = getattr(call, "prompts", None)
        prompt = sum(prompts) if prompts is not None else getattr(call, "prompt_tokens", None)
        meter = tally.start(response_id, request.url.path, getattr(call, "model", None), prompt)
        delivery = request.scope.get("extensions", {}).get(DELIVERY_EXTENSION)
        if isinstance(delivery, dict):  # the in-process transport tells deliveries itself
            meter.external = True
            delivery["meter"] = meter
        return meter

    def route(endpoint: _Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            return await provider_call(request, endpoint)

        return handle

    async def gemini_call(request: Request) -> Response:
        model, _, method = request.path_params["target"].partition(":")
        if not model or method not in gemini.METHODS:
            return await unknown(request)
        alt = request.query_params.get("alt")
        endpoint = replace(_GEMINI, parse=lambda body: gemini.parse_request(body, model, method, alt))
        return await provider_call(request, endpoint)

    def media(kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            refusal = _CHAT.check_key(request, settings.api_key)
            recorded, response = await openai_media.answer(request, settings, kind)
            record(request, recorded)
            return refusal if refusal is not None else response

        return handle

    def resource(
        check: Callable[[Request, str | None], Response | None],
        serve: Callable[[Request, Any, bool], Response],
    ) -> Callable[[Request], Awaitable[Response]]:
        """A stored-resource route (Gemini caches, OpenAI conversations): recorded, key-checked,
        then ``serve(request, body, parsed)``."""

        async def handle(request: Request) -> Response:
            body, parsed = _parse_json(await request.body())
            record(request, body)
            refusal = check(request, settings.api_key)
            return refusal if refusal is not None else serve(request, body, parsed)

        return handle

    def cache_call(request: Request, body: Any, parsed: bool) -> Response:
        cache_id = request.path_params.get("cache_id")
        if cache_id is None:
            if request.method == "GET":
                return gemini_caches.listing(stored)
            return gemini_caches.create(stored, body if parsed else None)
        if request.method == "GET":
            return gemini_caches.get(stored, cache_id)
        if request.method == "PATCH":
            return gemini_caches.update(stored, cache_id, body)
        return gemini_caches.delete(stored, cache_id)

    def conversation_call(request: Request, body: Any, parsed: bool) -> Response:
        if request.method == "POST" and body is not None and not parsed:
            return openai_chat.error_response(400, _OPENAI_BAD_JSON)
        conversation = request.path_params.get("conversation_id")
        if conversation is None:
            return fake_conversations.create(stored, body)
        if request.url.path.rstrip("/").endswith("/items"):
            return fake_conversations.add_items(stored, conversation, body)
        if request.method == "DELETE":
            return fake_conversations.delete(stored, conversation)
        return fake_conversations.retrieve(stored, conversation)

    async def models(request: Request) -> Response:
        record(request, None)
        refusal = _endpoint_of(request).check_key(request, settings.api_key)
        return refusal if refusal is not None else _models(request)

    async def unknown(request: Request) -> Response:
        body, _ = _parse_json(await request.body())
        record(request, body)
        message = f"Invalid URL ({request.method} {request.url.path})"
        return _endpoint_of(request).error(404, message)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    identity = azure.AzureIdentity(settings.azure_identity_secret)

    def azure_route(endpoint: _Endpoint) -> Callable[[Request], Awaitable[Response]]:
        """An OpenAI endpoint on Azure's URL layout, behind Azure's gate (:mod:`tokenward.fake.azure`)."""

        async def handle(request: Request) -> Response:
            deployment = request.path_params.get("deployment")
            parse = endpoint.parse
            routed = replace(
                endpoint,
                check_key=identity.check,
                parse=lambda body: parse(azure.with_deployment(body, deployment)),
            )
            return await provider_call(request, routed)

        return handle

    async def azure_identity(request: Request) -> Response:
        record(request, None)
        return identity.token(request)

    gate = bedrock.BedrockGate(settings.aws_access_key_id, settings.aws_secret_access_key, settings.api_key)

    def bedrock_call(converse: bool, stream: bool) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            model = request.path_params["model_id"]
            shape = bedrock.converse_body if converse else bedrock.invoke_body
            parse = _MESSAGES.parse
            endpoint = replace(
                _MESSAGES,
                check_key=gate.check,
                parse=lambda body: parse(shape(body, model, stream)),
                error=lambda status, message, *rest: bedrock.aws_error(status, message),
            )
            return bedrock.rewritten(await provider_call(request, endpoint), converse)

        return handle

    bedrock_routes = [
        Route("/model/{model_id}/converse", bedrock_call(True, False), methods=["POST"]),
        Route("/model/{model_id}/converse-stream", bedrock_call(True, True), methods=["POST"]),
        Route("/model/{model_id}/invoke", bedrock_call(False, False), methods=["POST"]),
        Route("/model/{model_id}/invoke-with-response-stream", bedrock_call(False, True), methods=["POST"]),
    ]

    tokens = vertex.GoogleTokens(settings.google_service_account_key)

    async def vertex_gemini(request: Request) -> Response:
        model, _, method = request.path_params["target"].partition(":")
        if not model or method not in gemini.METHODS:
            return await unknown(request)
        alt = request.query_params.get("alt")
        endpoint = replace(
            _GEMINI, check_key=tokens.check, parse=lambda body: gemini.parse_request(body, model, method, alt)
        )
        return await provider_call(request, endpoint)

    async def vertex_claude(request: Request) -> Response:
        target = request.path_params["target"]
        parse = _MESSAGES.parse
        endpoint = replace(
            _MESSAGES, check_key=tokens.check, parse=lambda body: parse(vertex.claude_body(body, target))
        )
        return await provider_call(request, endpoint)

    where = "/projects/{project}/locations/{location}/publishers"
    vertex_routes = [
        Route("/_fake/google/token", tokens.token, methods=["POST"]),
        *(
            Route(f"/{v}{where}/google/models/{{target}}", vertex_gemini, methods=["POST"])
            for v in ("v1", "v1beta1")
        ),
        Route(f"/v1{where}/anthropic/models/{{target}}", vertex_claude, methods=["POST"]),
    ]

    azure_routes = [
        Route("/_fake/azure/identity", azure_identity, methods=["GET"]),
        Route("/openai/deployments/{deployment}/chat/completions", azure_route(_CHAT), methods=["POST"]),
        Route("/openai/deployments/{deployment}/completions", azure_route(_COMPLETIONS), methods=["POST"]),
        Route(
            "/openai/deployments/{deployment}/embeddings", azure_route(embeddings_endpoint), methods=["POST"]
        ),
        Route("/openai/responses", azure_route(_RESPONSES), methods=["POST"]),
        Route("/openai/v1/chat/completions", azure_route(_CHAT), methods=["POST"]),
        Route("/openai/v1/completions", azure_route(_COMPLETIONS), methods=["POST"]),
        Route("/openai/v1/embeddings", azure_route(embeddings_endpoint), methods=["POST"]),
        Route("/openai/v1/responses", azure_route(_RESPONSES), methods=["POST"]),
    ]

    async def requests(request: Request) -> Response:
        if request.method == "DELETE":
            received.clear()
            return JSONResponse({"cleared": True})
        return JSONResponse(list(received))

    async def tallies(request: Request) -> Response:
        if request.method == "DELETE":
            tally.clear()
            return JSONResponse({"cleared": True})
        return JSONResponse(tally.all())

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/_fake/requests", requests, methods=["GET", "DELETE"]),
            Route("/_fake/tally", tallies, methods=["GET", "DELETE"]),
            Route("/v1/chat/completions", route(_CHAT), methods=["POST"]),
            Route("/v1/completions", route(_COMPLETIONS), methods=["POST"]),
            Route("/v1/responses", route(_RESPONSES), methods=["POST"]),
            Route("/v1/embeddings", route(embeddings_endpoint), methods=["POST"]),
            Route("/v1/images/generations", media("generations"), methods=["POST"]),
            Route("/v1/images/edits", media("edits"), methods=["POST"]),
            Route("/v1/audio/transcriptions", media("transcriptions"), methods=["POST"]),
            Route("/v1/audio/speech", media("speech"), methods=["POST"]),
            Route("/v1/messages", route(_MESSAGES), methods=["POST"]),
            Route("/v1/messages/count_tokens", route(_COUNT_TOKENS), methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/conversations", resource(_OPENAI_CHECK, conversation_call), methods=["POST"]),
            Route(
                "/v1/conversations/{conversation_id}",
                resource(_OPENAI_CHECK, conversation_call),
                methods=["GET", "DELETE"],
            ),
            Route(
                "/v1/conversations/{conversation_id}/items",
                resource(_OPENAI_CHECK, conversation_call),
                methods=["POST"],
            ),
            Route("/v1beta/cachedContents", resource(_google_key, cache_call), methods=["GET", "POST"]),
            Route(
                "/v1beta/cachedContents/{cache_id}",
                resource(_google_key, cache_call),
                methods=["GET", "PATCH", "DELETE"],
            ),
            Route("/v1beta/models/{target}", gemini_call, methods=["POST"]),
            Route("/v1/models/{target}", gemini_call, methods=["POST"]),
            *azure_routes,
            *vertex_routes,
            *bedrock_routes,
            Route("/v1/{rest:path}", unknown, methods=[*_ANY]),
            Route("/v1beta/{rest:path}", unknown, methods=[*_ANY]),
        ]
    )
    app.state.received = received
    app.state.tally = tally
    app.state.settings = settings
    return app


def serve(host: str = "127.0.0.1", port: int = 9100, settings: FakeSettings | None = None) -> None:
    """Run the fake provider with uvicorn until interrupted (``tokenward fake-provider``).

    The deliberate cuts of ``break_after_chunks`` are logged as one info line, not a traceback.
    Point the OpenAI SDK at ``http://<host>:<port>/v1``, and the Anthropic SDK and google-genai at
    ``http://<host>:<port>``; the endpoints are listed in :mod:`tokenward.fake`.
    """
    config = uvicorn.Config(
        create_app(settings), host=host, port=port, timeout_keep_alive=75
    )  # configures uvicorn's loggers
    logging.getLogger("uvicorn.error").addFilter(QuietStreamCuts())
    uvicorn.Server(config).run()
