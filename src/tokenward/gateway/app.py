"""The gateway's ASGI application (Starlette).

``create_app(config)`` builds it; ``tokenward serve`` runs it under uvicorn. Upstreams are called
through ``httpx``; tests and the in-process fake provider inject their own transport.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import tokenward
from tokenward.core.pricebook import PriceBook
from tokenward.core.tokenizers import encoding
from tokenward.files import load_prices
from tokenward.gateway.config import GatewayConfig
from tokenward.gateway.relay import GatewayState, proxy
from tokenward.guard import AsyncGuard
from tokenward.guard.wire.endpoints import AnthropicMessages, Endpoint, OpenAIChat
from tokenward.ledger import AsyncLedger, open_async_ledger

__all__ = ["create_app"]

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


def create_app(
    config: GatewayConfig,
    *,
    ledger: AsyncLedger | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    on_ready: Callable[[GatewayState], None] | None = None,
    observers: Sequence[object] = (),
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

    Raises:
        ConfigError: the price-override file is invalid (raised at start-up).
    """
    endpoints: list[Endpoint] = [OpenAIChat(), AnthropicMessages()]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        prices = load_prices(config.prices)
        await anyio.to_thread.run_sync(_warm_up, prices)
        store = ledger or open_async_ledger(config.ledger)
        for budget in config.budgets:
            await store.put_budget(budget)
        guard = AsyncGuard(store, prices=prices, settings=config.settings, observers=observers)
        clients = {}
        for upstream in config.upstreams:
            transport = (transports or {}).get(upstream.name)
            if transport is None and upstream.provider == "fake" and upstream.base_url is None:
                transport = _fake_transport()
            clients[upstream.name] = httpx.AsyncClient(timeout=_TIMEOUT, limits=_LIMITS, transport=transport)
        state = GatewayState(config, guard, clients, tokenward.__version__)
        app.state.gateway = state
        if on_ready is not None:
            on_ready(state)
        try:
            yield
        finally:
            for client in clients.values():
                await client.aclose()
            if ledger is None:
                await store.close()

    def route(endpoint: Endpoint) -> Route:
        async def handle(request: Request) -> Response:
            return await proxy(request, endpoint, request.app.state.gateway)

        return Route(endpoint.path, handle, methods=["POST"])

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": tokenward.__version__})

    return Starlette(routes=[*(route(e) for e in endpoints), Route("/healthz", healthz)], lifespan=lifespan)
