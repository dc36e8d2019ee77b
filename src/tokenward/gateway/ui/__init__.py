"""The dashboard: spend, budgets, sessions, events, denials and keys in a browser (``/ui``).

Served by the gateway (on when the config has ``admin_keys``; ``dashboard: false`` turns it off)
and standalone by ``tokenward dashboard --ledger URL`` (:func:`standalone_app`) for SDK users who
run no gateway. Pages are rendered on the server (Jinja2) and their live parts refreshed every
second by htmx from the ledger, so a call settled by any process shows up within about a second.
htmx and Chart.js ship in ``static/`` with their licences: nothing is fetched from a CDN.
See docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from starlette.applications import Starlette

from tokenward.gateway.ui.pages import ui_routes

__all__ = ["backfill_rollups", "standalone_app", "ui_routes"]

log = logging.getLogger("tokenward.gateway")


async def backfill_rollups(ledger: Any, *, batch: int = 2000, pause: float = 0.05) -> None:
    """Roll up, in batches with pauses between them, the events a ledger held before it had
    daily rollups (:mod:`tokenward.ledger.rollups`); run as a background task, so start-up never
    waits for it. Until it ends the overview reads the events themselves. A failure is logged and
    ends the task (the next start carries on where it stopped)."""
    method = getattr(ledger, "backfill_rollup", None)
    if method is None:
        return
    try:
        while await method(batch):
            await asyncio.sleep(pause)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a ledger failure: the overview keeps scanning events meanwhile
        log.warning("rolling up the ledger's older events stopped: %s", exc)


@contextlib.asynccontextmanager
async def background_backfill(ledger: Any) -> AsyncIterator[None]:
    """Run :func:`backfill_rollups` while the app runs."""
    task = asyncio.create_task(backfill_rollups(ledger))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment
        return "unknown"


def standalone_app(
    ledger: Any, *, admin_key: str | None = None, who: str | None = None
) -> tuple[Starlette, str]:
    """The dashboard alone over ``ledger`` (an async ledger), for ``tokenward dashboard``.

    Its user is a full administrator named after the operating-system user; changes are audited
    as ``dashboard:<who>`` and go through the admin API's own checks. Signing in is by the
    one-time token returned (``/ui/signin?token=...``, usable once) or, with ``admin_key``, by
    that key on the sign-in form.

    Returns:
        The app, and the one-time sign-in token.
    """
    import tokenward
    from tokenward.gateway.config import AdminKeyConfig, GatewayConfig
    from tokenward.gateway.relay import GatewayState

    name = who or _who()
    # without a key: no digest any key has (only the one-time URL signs in), the same in every
    # process, so a cookie one of them made is honoured by the others (sessions name the digest)
    digest = hashlib.sha256(admin_key.encode()).hexdigest() if admin_key else "(one-time sign-in only)"
    admin = AdminKeyConfig(name, digest)
    config = GatewayConfig(upstreams=(), keys=(), admin_keys=(admin,), ledger=getattr(ledger, "url", None))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with background_backfill(ledger):
            yield

    app = Starlette(routes=ui_routes(), lifespan=lifespan)
    guard: Any = SimpleNamespace(ledger=ledger)  # the pages use the guard's ledger only
    app.state.gateway = GatewayState(config, guard, {}, tokenward.__version__)
    token = secrets.token_urlsafe(24)
    app.state.ui_once = {token}
    app.state.ui_admins = (admin,)
    return app, token
