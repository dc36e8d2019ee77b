"""``tokenward quarantine list`` and ``tokenward quarantine retry``: the writes a ledger store
refused.

A settlement the store cannot take waits in the ledger's local spool and is replayed until it
lands; one the store keeps *refusing* (its content, not the store's availability) is set aside in
the spool file's quarantine so it never blocks the writes behind it (:mod:`tokenward.ledger.spool`).
These commands read that quarantine on the machine whose spool it is (the gateway's), and put its
entries back in the spool once the cause is fixed.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tokenward.cli.common import Command, Group, err, friendly, out, print_json
from tokenward.cli.ledgers import DEFAULT_LEDGER, LEDGER_ENV
from tokenward.errors import ConfigError
from tokenward.ledger.spool import Spool

__all__ = ["register"]

quarantine_app = typer.Typer(
    cls=Group, help="Writes the ledger store refused, set aside in the local spool.", no_args_is_help=True
)

LedgerOption = Annotated[
    str,
    typer.Option("--ledger", envvar=LEDGER_ENV, help="Ledger URL, e.g. sqlite:///tokenward.db."),
]


def _spool(url: str) -> Spool | None:
    """The spool file of ``url`` opened, or None when there is none yet."""
    from tokenward.ledger import spool_path

    path = spool_path(url)
    if path is None:
        raise ConfigError(f"{url!r} keeps nothing on disk: it has no spool")
    return None if not path.exists() else Spool(path)


def _when(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@quarantine_app.command("list", cls=Command)
@friendly
def list_command(
    ledger: LedgerOption = DEFAULT_LEDGER,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the quarantined writes of a ledger's spool on this machine, with the store's error."""
    spool = _spool(ledger)
    entries = [] if spool is None else spool.quarantined()
    waiting = 0 if spool is None else spool.pending()
    if spool is not None:
        spool.close()
    if as_json:
        print_json({"quarantined": [e.to_dict() for e in entries], "pending": waiting})
        return
    table = Table(title=f"{len(entries)} quarantined writes ({waiting} more still waiting in the spool)")
    for column in ("id", "kind", "request", "set aside (UTC)", "tries", "error"):
        table.add_column(column, overflow="fold")
    for e in entries:
        request = (e.payload.get("event") or {}).get("request_id") or e.payload.get("reservation_id") or ""
        table.add_row(
            str(e.id),
            e.kind,
            escape(str(request)),
            _when(e.quarantined_at),
            str(e.attempts),
            escape(e.error or ""),
        )
    out.print(table)


@quarantine_app.command("retry", cls=Command)
@friendly
def retry_command(
    ids: Annotated[list[int] | None, typer.Argument(help="Entry ids (default: every entry).")] = None,
    ledger: LedgerOption = DEFAULT_LEDGER,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the entries to land.")] = 30.0,
) -> None:
    """Put quarantined writes back in the spool and replay them now.

    Exit status 1 when some did not land (refused again, they go back to the quarantine).
    """
    from tokenward.ledger import open_ledger

    spool = _spool(ledger)
    if spool is None:
        out.print("nothing is quarantined")
        return
    try:
        moved = spool.requeue(ids or None)
    finally:
        spool.close()
    store = open_ledger(ledger)
    try:
        flush = getattr(store, "flush", None)
        left = flush(timeout) if flush is not None else 0
    finally:
        store.close()
    spool = _spool(ledger)
    again = 0 if spool is None else len(spool.quarantined())
    if spool is not None:
        spool.close()
    out.print(f"{moved} put back; {left} still waiting, {again} quarantined")
    if left or again:
        err.print("some writes did not land: see `tokenward quarantine list`")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the command group to the CLI."""
    app.add_typer(quarantine_app, name="quarantine")
