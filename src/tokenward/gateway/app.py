"""The gateway's ASGI application (Starlette).

``create_app(config)`` builds it; ``tokenward serve`` runs it under uvicorn. Upstreams are called
through ``httpx``; tests and the in-process fake provider inject their own transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import tokenward
from tokenward.core.pricebook import PriceBook
from tokenward.core.tokenizers import encoding
from tokenward.errors import ConfigError
from tokenward.files import load_prices
from tokenward.gateway.admin import admin_routes
from tokenward.gateway.config import GatewayConfig
from tokenward.gateway.observing import Observing
from tokenward.gateway.relay import GatewayState, passthrough, proxy
from tokenward.guard import AsyncGuard
from tokenward.guard.wire.endpoints import (
    AnthropicMessages,
    Endpoint,
    Gemini,
    OpenAIChat,
    OpenAICompletions,
    OpenAIEmbeddings,
    OpenAIResponses,
)
from tokenward.ledger import AsyncLedger, open_async_ledger

__all__ = ["create_app"]

log = logging.getLogger("tokenward.gateway")

_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=60.0)
_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200)


def _warm_up(prices: PriceBook) -> None:
    """Load the tokenizers and the price table now, not on the first request."""
    for name in ("o200k_base", "cl100k_base"):
        encoding(name)
    prices.resolve("gpt-4o-mini")


def _fake_transport() -> httpx.AsyncBaseTransport:
    from tokenward.fake import create_app as create_fake

    return httpx.ASGITransport(app=create_fake())


class _Endpoint:
    """An ASGI app served at one exact path (a ``Mount`` would redirect ``/metrics`` to ``/metrics/``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def reload_config(
    state: GatewayState, path: Path, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None
) -> GatewayConfig:
    """Read the config file again and use it from the next request on: keys, budgets (written to
    the ledger), upstreams (new clients), defaults and policies. The ledger and the price file
    stay as they were started.

    Raises:
        ConfigError: the file is invalid (the running config is kept).
    """
    config = GatewayConfig.load(path)
    for budget in config.budgets:
        await state.guard.ledger.put_budget(budget)
    old = state.clients
    clients = {}
    for upstream in config.upstreams:
        previous = next((u for u in state.config.upstreams if u.name == upstream.name), None)
        if previous == upstream and upstream.name in old:
            clients[upstream.name] = old[upstream.name]
            continue
        transport = (transports or {}).get(upstream.name)
        if transport is None and upstream.provider == "fake" and upstream.base_url is None:
            transport = _fake_transport()
        clients[upstream.name] = httpx.AsyncClient(timeout=_TIMEOUT, limits=_LIMITS, transport=transport)
    state.clients, state.config = clients, config
    state.guard.settings = config.settings
    for name, client in old.items():
        if clients.get(name) is not client:
            await client.aclose()
    log.info("configuration reloaded from %s", path)
    return config


def _reload_on_sighup(
    state: GatewayState, path: Path, transports: Mapping[str, httpx.AsyncBaseTransport] | None
) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def reload() -> None:
        async def run() -> None:
            try:
                await reload_config(state, path, transports)
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
        AnthropicMessages(),
        Gemini(),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        prices = load_prices(config.prices)
        await anyio.to_thread.run_sync(_warm_up, prices)
        store = ledger or open_async_ledger(config.ledger)
        for budget in config.budgets:
            await store.put_budget(budget)
        watchers = observing.start(store)
        guard = AsyncGuard(store, prices=prices, settings=config.settings, observers=[*observers, *watchers])
        clients = {}
        for upstream in config.upstreams:
            transport = (transports or {}).get(upstream.name)
            if transport is None and upstream.provider == "fake" and upstream.base_url is None:
                transport = _fake_transport()
            clients[upstream.name] = httpx.AsyncClient(timeout=_TIMEOUT, limits=_LIMITS, transport=transport)
        state = GatewayState(config, guard, clients, tokenward.__version__)
        app.state.gateway = state
        app.state.config_path = Path(config_path) if config_path is not None else None
        if config_path is not None:
            _reload_on_sighup(state, Path(config_path), transports)
        if on_ready is not None:
            on_ready(state)
        try:
            yield
        finally:
            # Shutting down (SIGTERM): uvicorn has stopped accepting and let open streams finish
            # within its grace period; every admitted call still gets settled before we exit.
            left = await state.drain(timeout=30)
            if left:
                log.error("%d calls were still unsettled at shutdown; their holds will expire", left)
            for client in state.clients.values():
                await client.aclose()
            observing.close()
            if ledger is None:
                await store.close()

    def route(endpoint: Endpoint, path: str | None = None) -> Route:
        async def handle(request: Request) -> Response:
            return await proxy(request, endpoint, request.app.state.gateway)

        return Route(path or endpoint.path, handle, methods=["POST"])

    def forward(family: str, path: str, method: str) -> Route:
        async def handle(request: Request) -> Response:
            return await passthrough(request, family, path, request.app.state.gateway)

        return Route(path if family != "openai" else "/v1" + path, handle, methods=[method])

    gemini = next(e for e in endpoints if e.family == "gemini")
    proxied = [
        *(route(e) for e in endpoints),
        route(gemini, "/v1/models/{target}"),  # google-genai posts under /v1 too
        forward("anthropic", "/v1/messages/count_tokens", "POST"),
        forward("openai", "/models", "GET"),
    ]

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": tokenward.__version__})

    observing = Observing(config.observe)
    if metrics is None and observing.prometheus is not None:
        metrics = observing.prometheus.asgi_app()
    extra = [] if metrics is None else [Route("/metrics", _Endpoint(metrics), methods=["GET"])]
    routes = [*proxied, *admin_routes(), Route("/healthz", healthz), *extra]
    return Starlette(routes=routes, lifespan=lifespan)
