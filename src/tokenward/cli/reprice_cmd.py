"""``tokenward reprice``: price recorded usage events again (after a price update) and report
old against new.

Usage events are append-only: nothing recorded is changed. Each event is priced again from its
recorded usage, model (and served model), service tier, speed, inference geography, requested
cache-write lifetime and instant with the current price book
(``--prices``), and the differences are reported with the price source and version each side used.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tokenward.cli.common import Command, friendly, out, print_json
from tokenward.cli.ledgers import LEDGER_ENV, open_existing_ledger
from tokenward.clock import parse_instant
from tokenward.core.events import UsageEvent
from tokenward.core.pricebook import PriceBook, PriceContext
from tokenward.core.pricing import price_usage
from tokenward.numbers import plain

__all__ = ["register", "reprice_event", "reprice_report"]

ZERO = Decimal(0)


def reprice_event(event: UsageEvent, prices: PriceBook) -> dict[str, Any] | None:
    """One event priced again: old and new cost and price source, and whom it was charged to
    (``subject``, for an adjustment); None when it has no usage."""
    usage = event.usage
    units = (usage.images, usage.input_audio_ms, usage.input_characters)
    if usage.input_tokens is None and usage.output_tokens is None and all(u is None for u in units):
        return None
    metadata = event.metadata or {}
    served = metadata.get("model_served") if isinstance(metadata.get("model_served"), str) else None

    def text(key: str) -> str | None:
        value = metadata.get(key)
        return value if isinstance(value, str) else None

    context = PriceContext(
        service_tier=text("service_tier"),
        batch=bool(metadata.get("batch")),
        at=event.at,
        speed=text("speed"),
        inference_geo=text("inference_geo"),
        cache_write_ttl=text("cache_write_ttl"),
        image_size=text("image_size"),
        image_quality=text("image_quality"),
    )
    price = prices.resolve(event.model or "", provider=event.provider, context=context, served=served)
    cost = price_usage(usage, price, cache_write_ttl=context.cache_write_ttl, image=context.image)
    old, new = event.cost_usd, cost.total_usd
    return {
        "request_id": event.request_id,
        "at": event.at.isoformat().replace("+00:00", "Z"),
        "subject": event.subject.to_dict(),
        "model": event.model,
        "old_cost_usd": None if old is None else plain(old),
        "new_cost_usd": None if new is None else plain(new),
        "diff_usd": None if old is None or new is None else plain(new - old),
        "old_price": {"source": event.price_source, "version": event.price_version},
        "new_price": None
        if price is None
        else {"source": price.source, "version": price.version, "model": price.model},
        "changed": old != new,
    }


def reprice_report(
    ledger: str,
    *,
    prices_file: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Every event in the window priced again, with totals (see the module docstring).

    Raises:
        ConfigError / LedgerError: a bad price file or ledger URL.
    """
    from tokenward.files import load_prices

    prices = load_prices(prices_file)
    store = open_existing_ledger(ledger)
    try:
        events = store.events(since=since, until=until)
    finally:
        store.close()
    rows = [row for row in (reprice_event(e, prices) for e in events) if row is not None]
    old_total = sum((Decimal(r["old_cost_usd"]) for r in rows if r["old_cost_usd"] is not None), ZERO)
    new_total = sum((Decimal(r["new_cost_usd"]) for r in rows if r["new_cost_usd"] is not None), ZERO)
    return {
        "ledger": ledger,
        "events": len(rows),
        "changed": sum(1 for r in rows if r["changed"]),
        "newly_priced": sum(1 for r in rows if r["old_cost_usd"] is None and r["new_cost_usd"] is not None),
        "now_unpriced": sum(1 for r in rows if r["old_cost_usd"] is not None and r["new_cost_usd"] is None),
        "old_total_usd": plain(old_total),
        "new_total_usd": plain(new_total),
        "diff_total_usd": plain(new_total - old_total),
        "rows": rows,
    }


def _instant(value: str | None, what: str) -> datetime | None:
    return None if value is None else parse_instant(value, field=f"--{what}")


def reprice_command(
    ledger: Annotated[
        str,
        typer.Option(envvar=LEDGER_ENV, help="Ledger URL holding the usage events (sqlite:///...)."),
    ],
    prices: Annotated[
        Path | None, typer.Option(help="Price-override file (YAML or JSON) to price with.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only events at or after this instant (ISO 8601).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only events before this instant (ISO 8601).")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="List unchanged events too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Price recorded usage events again and report old against new cost (events are not changed)."""
    report = reprice_report(
        ledger, prices_file=prices, since=_instant(since, "since"), until=_instant(until, "until")
    )
    if as_json:
        print_json(report)
        return
    rows = [r for r in report["rows"] if show_all or r["changed"]]
    table = Table(title=f"repriced {report['events']:,} events, {report['changed']:,} changed")
    for column in ("request", "at", "model", "old USD", "new USD", "diff", "old price", "new price"):
        # Nothing is cut (values fold); the request id stays on one line.
        table.add_column(
            column,
            justify="right" if "USD" in column or column == "diff" else "left",
            no_wrap=column == "request",
            overflow="fold",
        )
    for r in rows:
        new_price = r["new_price"] or {}
        table.add_row(
            r["request_id"],
            r["at"],
            r["model"] or "",
            r["old_cost_usd"] or "[red]unknown[/]",
            r["new_cost_usd"] or "[red]unknown[/]",
            r["diff_usd"] or "",
            f"{r['old_price']['source'] or '-'} {r['old_price']['version'] or ''}",
            f"{new_price.get('source', '-')} {new_price.get('version', '')}",
        )
    out.print(table)
    out.print(
        f"total: {report['old_total_usd']} -> {report['new_total_usd']} USD (diff {report['diff_total_usd']}); "
        "recorded events are unchanged",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command("reprice", cls=Command)(friendly(reprice_command))
