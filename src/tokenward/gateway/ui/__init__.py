"""The dashboard: spend, budgets, sessions, events, denials and keys in a browser (``/ui``).

Served by the gateway (on when the config has ``admin_keys``; ``dashboard: false`` turns it off)
and standalone by ``tokenward dashboard --ledger URL`` (:func:`standalone_app`) for SDK users who
run no gateway. Pages are rendered on the server (Jinja2) and their live parts refreshed every
second by htmx from the ledger, so a call settled by any process shows up within about a second.
htmx and Chart.js ship in ``static/`` with their licences: nothing is fetched from a CDN.
See docs/dashboard.md.
"""

from __future__ import annotations

import getpass
import hashlib
import secrets
from types import SimpleNamespace
from typing import Any

from starlette.applications import Starlette

from tokenward.gateway.ui.pages import ui_routes

__all__ = ["standalone_app", "ui_routes"]


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
    digest = hashlib.sha256((admin_key or secrets.token_urlsafe(32)).encode()).hexdigest()
    admin = AdminKeyConfig(name, digest)
    config = GatewayConfig(upstreams=(), keys=(), admin_keys=(admin,), ledger=getattr(ledger, "url", None))
    app = Starlette(routes=ui_routes())
    guard: Any = SimpleNamespace(ledger=ledger)  # the pages use the guard's ledger only
    app.state.gateway = GatewayState(config, guard, {}, tokenward.__version__)
    token = secrets.token_urlsafe(24)
    app.state.ui_once = {token}
    app.state.ui_admins = (admin,)
    return app, token
