"""``tokenward budgets|keys ... --ledger URL``: the admin API run in this process, on a ledger.

With no gateway running (before its first start, or to change a ledger that replicas share), the
budget and key commands take ``--ledger URL`` and send their requests to the admin API's own
routes served in-process over that ledger (``httpx``'s ASGI transport): the same validation, the
same answers, the same audit log. The actor is ``cli:<user>`` (the operating-system user), a
full administrator; no admin key is needed, since whoever can open the ledger can change it.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

__all__ = ["actor", "offline_request"]


def actor() -> str:
    """The audit actor of offline changes: ``cli:<operating-system user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment (a bare container)
        user = "unknown"
    return f"cli:{user}"


async def _no_reload(state: Any, path: Path) -> Any:  # pragma: no cover - never called: no config file
    raise RuntimeError("no configuration file to reload")


def offline_request(ledger_url: str, method: str, path: str, body: Any = None) -> httpx.Response:
    """Send one admin API request to the routes served in this process over ``ledger_url``.

    Raises:
        ConfigError: a malformed ledger URL.
        LedgerError: the store cannot be opened.
    """
    from starlette.applications import Starlette

    import tokenward
    from tokenward.gateway.admin import admin_routes
    from tokenward.gateway.config import AdminKeyConfig, GatewayConfig
    from tokenward.gateway.relay import GatewayState
    from tokenward.ledger import open_async_ledger

    key = secrets.token_urlsafe(24)
    admin = AdminKeyConfig(actor(), hashlib.sha256(key.encode()).hexdigest())
    config = GatewayConfig(upstreams=(), keys=(), admin_keys=(admin,), ledger=ledger_url)

    async def run() -> httpx.Response:
        ledger = open_async_ledger(ledger_url)
        try:
            app = Starlette(routes=admin_routes(_no_reload))
            guard: Any = SimpleNamespace(ledger=ledger)  # the routes use the guard's ledger only
            app.state.gateway = GatewayState(config, guard, {}, tokenward.__version__)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://tokenward-cli") as client:
                response = await client.request(
                    method, path, json=body, headers={"authorization": f"Bearer {key}"}
                )
                await response.aread()
                return response
        finally:
            await ledger.close()

    return asyncio.run(run())
