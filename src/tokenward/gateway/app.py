"""The gateway's ASGI application (Starlette).

``create_app(config)`` builds it; ``tokenward serve`` runs it under uvicorn. Upstreams are called
through ``httpx``; tests and the in-process fake provider inject their own transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

import tokenward
from tokenward.core.pricebook import PriceBook
from tokenward.core.tokenizers import encoding
from tokenward.errors import ConfigError
from tokenward.files import load_prices
from tokenward.gateway.admin import admin_routes
from tokenward.gateway.auth import presented_key
from tokenward.gateway.clouds import upstream_auth
from tokenward.gateway.config import GatewayConfig, UpstreamConfig
from tokenward.gateway.config_budgets import sync_config_budgets, warn_unmatched_budgets
from tokenward.gateway.errors import GatewayError, error_response
from tokenward.gateway.observing import Observing
from tokenward.gateway.relay import GatewayState, own_headers, passthrough, proxy
from tokenward.gateway.upstream_http import upstream_client
from tokenward.guard import AsyncGuard
from tokenward.guard.guard import check_settings
from tokenward.guard.wire.endpoints import (
    AnthropicMessages,
    BedrockConverse,
    BedrockInvoke,
    Endpoint,
    Gemini,
    GeminiCachedContents,
    OpenAIChat,
    OpenAICompletions,
    OpenAIEmbeddings,
    OpenAIImageEdits,
    OpenAIImages,
    OpenAIResponses,
    OpenAISpeech,
    OpenAITranscriptions,
)
from tokenward.ledger import AsyncLedger, open_async_ledger
from tokenward.ledger.base import new_id

__all__ = ["create_app", "ready_line", "warn_missing_keys"]

log = logging.getLogger("tokenward.gateway")

_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=60.0)
_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=4.0)
"""Idle upstream connections are dropped after 4 s: before the 5 s after which uvicorn-based
upstreams (vLLM, llama-cpp-python, our fake) close them, so a call is never sent on a connection
the upstream is closing at that moment."""


def _warm_up(prices: PriceBook) -> None:
    """Load the tokenizers and the price table now, not on the first request."""
    for name in ("o200k_base", "cl100k_base"):
        encoding(name)
    prices.resolve("gpt-4o-mini")


class _ClientFactory:
    """Builds the HTTP client of each upstream: the test transport given for it, else, for an
    in-process fake (``provider: fake`` without ``base_url``), the fake on a loopback socket
    (started on first use, stopped with the gateway), else a plain pooled client."""

    def __init__(
        self, transports: Mapping[str, httpx.AsyncBaseTransport] | None, credentials: Mapping[str, Any] | None
    ) -> None:
        self.transports = dict(transports or {})
        self.credentials = dict(credentials or {})
        self.fake: Any = None

    def client(self, upstream: UpstreamConfig) -> httpx.AsyncClient:
        transport = self.transports.get(upstream.name)
        if transport is None and upstream.provider == "fake" and upstream.base_url is None:
            if self.fake is None:
                from tokenward.fake.background import BackgroundFake

                self.fake = BackgroundFake().start()
            transport = self.fake.transport(_LIMITS)
        auth = upstream_auth(upstream, self.credentials.get(upstream.name))  # cloud platforms sign
        return upstream_client(
            timeout=_TIMEOUT,
            limits=_LIMITS,
            auth=auth,
            transport=transport,
            exact_paths=upstream.provider == "bedrock",
        )

    def reuse(
        self, upstreams: Sequence[UpstreamConfig], before: GatewayConfig, old: Mapping[str, httpx.AsyncClient]
    ) -> dict[str, httpx.AsyncClient]:
        """A client per upstream, keeping the old one of each upstream that did not change."""
        clients = {}
        for upstream in upstreams:
            previous = next((u for u in before.upstreams if u.name == upstream.name), None)
            keep = previous == upstream and upstream.name in old
            clients[upstream.name] = old[upstream.name] if keep else self.client(upstream)
        return clients

    def close(self) -> None:
        if self.fake is not None:
            self.fake.stop()


class _Endpoint:
    """An ASGI app served at one exact path (a ``Mount`` would redirect ``/metrics`` to ``/metrics/``).

    With ``admin_only`` it answers only callers presenting a full administrator's key
    (``Authorization: Bearer`` or ``x-admin-key``) while the running config has ``admin_keys``:
    ``/metrics`` lists every subject's spend, which no tenant may read of another.
    """

    def __init__(self, app: ASGIApp, admin_only: bool = False) -> None:
        self.app = app
        self.admin_only = admin_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.admin_only and scope["type"] == "http":
            request = Request(scope, receive)
            config: GatewayConfig = request.app.state.gateway.config
            if config.admin_keys:
                presented = request.headers.get("x-admin-key") or presented_key(request.headers)
                admin = config.admin_key_for(presented) if presented else None
                if admin is None or admin.project is not None:
                    error = GatewayError(
                        401 if admin is None else 403,
                        "/metrics needs a full administrator's key (Authorization: Bearer <admin key>); "
                        "observe.prometheus.public: true opens it",
                        type="authentication_error" if admin is None else "permission_error",
                        code="unauthorized" if admin is None else "forbidden",
                    )
                    headers = own_headers(new_id("req"), tokenward.__version__)
                    await error_response("openai-chat", error, headers)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def reload_config(state: GatewayState, path: Path) -> GatewayConfig:
    """Read the config file again and use it from the next request on: keys, budgets (written to
    the ledger; those the file wrote before and no longer names are deleted), upstreams (new clients), defaults, policies
    and prices (the price-override file is read again, so a corrected price applies at once). The ledger stays
    the one the gateway started with (a changed ``ledger:`` is a warning: restart to use it).

    Raises:
        ConfigError: the file, or the price file it names, is invalid, or its defaults are ones
            the price book cannot serve (the running config is kept, as at start-up).
    """
    from tokenward.ledger.failover import masked

    config = GatewayConfig.load(path)
    prices = await anyio.to_thread.run_sync(load_prices, config.prices)
    check_settings(config.settings, prices)  # as at start-up: unknown_model: default needs a default row
    await sync_config_budgets(state.guard.ledger, config.budgets)
    await warn_unmatched_budgets(state.guard.ledger, config, prices)
    for upstream in config.upstreams:
        for name, base, factor in upstream.price_rules():
            prices.derive(name, base, factor)
    if config.ledger != state.config.ledger:
        log.warning(
            "the config file names the ledger %s, but this gateway runs on %s (the ledger it "
            "started with: the config file's then, or --ledger) and a reload keeps it: restart "
            "the gateway to use the new one",
            masked(str(config.ledger)),
            masked(str(state.config.ledger)),
        )
        config = dataclasses.replace(config, ledger=state.config.ledger)  # the one in use
    warn_missing_keys(config)
    old = state.clients
    clients = state.factory.reuse(config.upstreams, state.config, old)
    state.clients, state.config = clients, config
    state.guard.settings = config.settings
    state.guard.prices = prices
    for name, client in old.items():
        if clients.get(name) is not client:
            await state.retire(client)  # closed once the calls still using it are done
    log.info("configuration reloaded from %s", path)
    return config


async def ready_line(state: GatewayState, url: str, ledger: str) -> str:
    """The one line ``tokenward serve`` prints once the gateway listens: where, on which ledger
    (its password masked), how many budgets and virtual keys it enforces (the config file's and
    those made through the admin API), its admin keys and its upstreams (an in-process fake is
    named as such: its loopback port is an internal detail)."""
    from tokenward.ledger.failover import masked

    store = state.guard.ledger
    budgets = len(await store.budgets())
    now = store.clock.now()
    keys = len(state.config.keys) + sum(1 for k in await store.keys() if k.active(now))
    admins = len(state.config.admin_keys)

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    upstreams = ", ".join(
        f"{u.name} (in-process fake)"
        if u.provider == "fake" and u.base_url is None
        else f"{u.name} ({u.provider})"
        for u in state.config.upstreams
    )
    return (
        f"tokenward gateway ready on {url} - ledger {masked(ledger)} - {count(budgets, 'budget')}, "
        f"{count(keys, 'key')}, {count(admins, 'admin key')} - upstreams: {upstreams}"
    )


def warn_missing_keys(config: GatewayConfig) -> list[str]:
    """Log a warning for each upstream whose calls would go without a provider key (at start and
    on every reload); returns the warnings."""
    problems = [p for u in config.upstreams if (p := u.key_problem()) is not None]
    for problem in problems:
        log.warning("%s", problem)
    return problems


def _reload_on_sighup(state: GatewayState, path: Path) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def reload() -> None:
        async def run() -> None:
            try:
                await reload_config(state, path)
            except ConfigError as exc:
                log.error("configuration not reloaded: %s", exc)

        task = loop.create_task(run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no SIGHUP here
        log.debug("SIGHUP reload not available in this process")


def create_app(
    config: GatewayConfig,
    *,
    ledger: AsyncLedger | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    on_ready: Callable[[GatewayState], None] | None = None,
    observers: Sequence[object] = (),
    metrics: ASGIApp | None = None,
    config_path: str | Path | None = None,
    credentials: Mapping[str, Any] | None = None,
) -> Starlette:
    """Build the gateway app.

    Args:
        config: the validated configuration.
        ledger: an async ledger to use instead of the one the config names.
        transports: an ``httpx`` transport per upstream name (tests); an in-process fake
            upstream (provider ``fake`` without ``base_url``) gets one automatically.
        on_ready: called with the gateway's state once started (tests reach the guard there).
        observers: watch every admission, denial and settled event
            (:class:`~tokenward.guard.observers.Observer`).
        config_path: the file ``config`` came from; ``SIGHUP`` reloads it without a restart.
        credentials: a platform credential per upstream name, instead of the platform's standard
            chain (:func:`tokenward.gateway.clouds.upstream_auth`).
        metrics: an ASGI app served at ``/metrics``, e.g.
            :meth:`tokenward.observe.Prometheus.asgi_app` (passed as an observer too).

    Raises:
        ConfigError: the price-override file is invalid (raised at start-up).
    """
    endpoints: list[Endpoint] = [
        OpenAIChat(),
        OpenAIResponses(),
        OpenAICompletions(),
        OpenAIEmbeddings(),
        OpenAIImages(),
        OpenAIImageEdits(),
        OpenAITranscriptions(),
        OpenAISpeech(),
        AnthropicMessages(),
        Gemini(),
        GeminiCachedContents(),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        warn_missing_keys(config)
        prices = load_prices(config.prices)
        await anyio.to_thread.run_sync(_warm_up, prices)
        store = ledger or open_async_ledger(config.ledger)
        await sync_config_budgets(store, config.budgets)
        await warn_unmatched_budgets(store, config, prices)
        watchers = observing.start(store)
        guard = AsyncGuard(store, prices=prices, settings=config.settings, observers=[*observers, *watchers])
        factory = _ClientFactory(transports, credentials)
        for upstream in config.upstreams:  # Azure deployments priced at a multiple of their model
            for name, base, factor in upstream.price_rules():
                prices.derive(name, base, factor)
        clients = {upstream.name: factory.client(upstream) for upstream in config.upstreams}
        state = GatewayState(config, guard, clients, tokenward.__version__)
        state.factory = factory
        if observing.prometheus is not None:  # tokenward_settle_lag_seconds
            state.settlements.observe_lag = observing.prometheus.observe_settle_lag
        app.state.gateway = state
        app.state.config_path = Path(config_path) if config_path is not None else None
        if config_path is not None:
            _reload_on_sighup(state, Path(config_path))
        if on_ready is not None:
            on_ready(state)
        backfill = contextlib.AsyncExitStack()
        if config.dashboard_on:
            from tokenward.gateway.ui import background_backfill

            await backfill.enter_async_context(background_backfill(store))
        try:
            yield
        finally:
            await backfill.aclose()
            # Shutting down (SIGTERM): uvicorn has stopped accepting and let open streams finish
            # within its grace period; every admitted call still gets settled before we exit.
            left = await state.drain(timeout=30)
            if left:
                log.error("%d calls were still unsettled at shutdown; their holds will expire", left)
            await state.carried.close()
            await state.close_clients()
            factory.close()
            observing.close()
            guard.renewer.close()
            if ledger is None:
                await store.close()

    def route(endpoint: Endpoint, path: str | None = None) -> Route:
        async def handle(request: Request) -> Response:
            return await proxy(request, endpoint, request.app.state.gateway)

        return Route(path or endpoint.path, handle, methods=["POST"])

    def forward(family: str, path: str, method: str, *, record: bool = False) -> Route:
        async def handle(request: Request) -> Response:
            return await passthrough(request, family, path, request.app.state.gateway, record=record)

        return Route(path if family != "openai" else "/v1" + path, handle, methods=[method])

    gemini = next(e for e in endpoints if isinstance(e, Gemini) and e.path.endswith("{target}"))
    by_path = {e.path: e for e in endpoints}
    azure = [  # Azure OpenAI's URL layouts, for openai.AzureOpenAI pointed at the gateway
        *(
            route(by_path["/v1" + op], "/openai/deployments/{deployment}" + op)
            for op in ("/chat/completions", "/completions", "/embeddings")
        ),
        route(by_path["/v1/responses"], "/openai/responses"),
        *(
            route(by_path["/v1" + op], "/openai/v1" + op)
            for op in ("/chat/completions", "/completions", "/embeddings", "/responses")
        ),
    ]
    claude = by_path["/v1/messages"]
    where = "/projects/{project}/locations/{location}/publishers"
    vertex = [  # Vertex AI's publisher-model paths, for google-genai (vertexai=True) and AnthropicVertex
        *(route(gemini, f"/{v}{where}/google/models/{{target}}") for v in ("v1", "v1beta1")),
        *(route(gemini, f"/{v}/publishers/google/models/{{target}}") for v in ("v1", "v1beta1")),
        route(claude, f"/v1{where}/anthropic/models/{{target}}"),
    ]
    converse, invoke = BedrockConverse(), BedrockInvoke()
    bedrock = [  # Bedrock Runtime's paths, for boto3's bedrock-runtime client and AnthropicBedrock
        route(converse, "/model/{model_id}/converse"),
        route(converse, "/model/{model_id}/converse-stream"),
        route(invoke, "/model/{model_id}/invoke"),
        route(invoke, "/model/{model_id}/invoke-with-response-stream"),
    ]
    proxied = [
        *(route(e) for e in endpoints),
        *azure,
        *vertex,
        *bedrock,
        route(gemini, "/v1/models/{target}"),  # google-genai posts under /v1 too
        forward("anthropic", "/v1/messages/count_tokens", "POST"),
        forward("openai", "/models", "GET"),
        # Gemini context caches: created through the proxy above (charged, size recorded); the
        # rest passes through after the key check
        forward("gemini", "/v1beta/cachedContents", "GET"),
        *(forward("gemini", "/v1beta/cachedContents/{cache_id}", m) for m in ("GET", "PATCH", "DELETE")),
        # OpenAI conversations: made and grown through the gateway, their size is recorded
        forward("openai", "/conversations", "POST", record=True),
        forward("openai", "/conversations/{conversation_id}/items", "POST", record=True),
        *(forward("openai", "/conversations/{conversation_id}", m) for m in ("GET", "POST", "DELETE")),
    ]

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": tokenward.__version__})

    observing = Observing(config.observe)
    if metrics is None and observing.prometheus is not None:
        metrics = observing.prometheus.asgi_app()
    guarded = not config.observe.prometheus_public
    extra = [] if metrics is None else [Route("/metrics", _Endpoint(metrics, guarded), methods=["GET"])]
    routes: list[BaseRoute] = [*proxied, *admin_routes(reload_config), Route("/healthz", healthz), *extra]
    if config.dashboard_on:
        from tokenward.gateway.ui import ui_routes

        routes += ui_routes()
    handlers = {404: _http_error, 405: _http_error}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths (404) and methods (405) answered as JSON errors with a request id, in the
    Gemini shape under ``/v1beta`` and the OpenAI one elsewhere."""
    status = getattr(exc, "status_code", 404)
    if status == 405:
        error = GatewayError(
            405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed"
        )
    else:
        error = GatewayError(404, f"no such route: {request.method} {request.url.path}", code="not_found")
    dialect = "gemini" if request.url.path.startswith("/v1beta/") else "openai-chat"
    headers = {**own_headers(new_id("req"), tokenward.__version__), **(getattr(exc, "headers", None) or {})}
    return error_response(dialect, error, headers)
