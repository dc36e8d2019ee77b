"""``tokenward dashboard --ledger URL``: the dashboard without a gateway, for SDK users.

It serves the same pages as the gateway's ``/ui`` (:mod:`tokenward.gateway.ui`) over a ledger,
binds 127.0.0.1 by default and prints a one-time sign-in URL (it works once); binding any other
address needs ``--admin-key`` (then signing in asks for that key). Changes are written to the
ledger directly through the admin API's own checks (the code ``tokenward budgets --ledger``
runs) and audited as ``dashboard:<operating-system user>``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tokenward.cli.common import Command, err, friendly
from tokenward.errors import ConfigError

__all__ = ["register"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@friendly
def dashboard(
    ledger: Annotated[str, typer.Option("--ledger", help="Ledger URL, e.g. sqlite:///tokenward.db.")],
    host: Annotated[
        str, typer.Option(help="Interface to listen on (other than loopback: needs --admin-key).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    admin_key: Annotated[
        str | None,
        typer.Option(
            "--admin-key", help="A key to sign in with (required off loopback; at least 16 characters)."
        ),
    ] = None,
) -> None:
    """Serve the dashboard (spend, budgets, sessions, events, keys) over a ledger, no gateway needed."""
    import uvicorn

    from tokenward.cli.offline_admin import actor
    from tokenward.gateway.ui import standalone_app
    from tokenward.ledger import open_async_ledger, open_ledger

    if host not in _LOOPBACK and not admin_key:
        raise ConfigError(f"--host {host} is reachable from other machines: give --admin-key to sign in with")
    if admin_key is not None and len(admin_key) < 16:
        raise ConfigError("--admin-key must be at least 16 characters")
    open_ledger(ledger).close()  # a bad URL or an unreachable store: one line, now
    who = actor().removeprefix("cli:")
    app, token = standalone_app(open_async_ledger(ledger), admin_key=admin_key, who=who)
    shown = f"[{host}]" if ":" in host else host
    err.print(
        f"tokenward dashboard on http://{shown}:{port}/ui - sign in once at "
        f"http://{shown}:{port}/ui/signin?token={token}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", log_config=None)


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command("dashboard", cls=Command)(dashboard)
