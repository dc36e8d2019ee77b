"""``tokenward import``: recorded calls become usage events in a ledger, so reports work on history.

It is a replay without budgets (:func:`tokenward.replay.replay`): each call's usage is normalised
from the provider's raw usage and priced from its tokens, and written once (re-importing the same
file changes nothing: the request id comes from the recorded response id). Each event also carries
the session's outcome (``session_resolved`` in its metadata) and any ``--tag`` given, which the
reports use (cost per resolved task, A/B by tag).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tokenward.cli.common import Command, err, friendly, out, print_json
from tokenward.cli.ledgers import DEFAULT_LEDGER, LEDGER_ENV
from tokenward.core.events import UsageEvent
from tokenward.errors import ConfigError

__all__ = ["import_traces", "register"]


class _Annotating:
    """A ledger that adds session facts and tags to each event it settles (everything else is
    the wrapped ledger's)."""

    def __init__(self, inner: Any, notes: Mapping[str, Mapping[str, Any]], tags: Mapping[str, str]) -> None:
        self._inner = inner
        self._notes = notes
        self._tags = tuple(sorted(tags.items()))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def settle(self, reservation_id: str | None, event: UsageEvent) -> UsageEvent:
        notes = self._notes.get(event.subject.session or "", {})
        subject = event.subject
        if self._tags:
            subject = dataclasses.replace(
                subject, tags=tuple(sorted({**dict(subject.tags), **dict(self._tags)}.items()))
            )
        event = dataclasses.replace(event, subject=subject, metadata={**event.metadata, **notes})
        return self._inner.settle(reservation_id, event)  # type: ignore[no-any-return]


def import_traces(
    paths: list[Path],
    ledger: Any,
    *,
    prices: Path | None = None,
    tags: Mapping[str, str] | None = None,
    progress: Any = None,
) -> Any:
    """Import recorded calls into ``ledger`` (a URL, or a ledger driven by a
    :class:`~tokenward.clock.ManualClock`, which is left open).

    Returns:
        ``(report, calls_read)``: the replay report (per-session totals) and how many calls the
        files held.

    Raises:
        ConfigError: a file cannot be read or a line is invalid.
    """
    from tokenward.clock import ManualClock
    from tokenward.files import load_prices
    from tokenward.ledger import open_ledger
    from tokenward.replay import read_traces, replay

    book = load_prices(prices)
    calls = [call for path in paths for call in read_traces(path)]
    notes: dict[str, dict[str, Any]] = {}
    for call in calls:
        if call.session_resolved is not None:
            notes.setdefault(call.session_id, {})["session_resolved"] = call.session_resolved
    owned = isinstance(ledger, str)
    store = open_ledger(ledger, clock=ManualClock()) if isinstance(ledger, str) else ledger
    try:
        return replay(
            calls,
            (),
            ledger=_Annotating(store, notes, tags or {}),
            prices=book,
            progress=progress,
        ), len(calls)
    finally:
        if owned:
            store.close()


def _tags(values: list[str] | None) -> dict[str, str]:
    out = {}
    for value in values or []:
        name, sep, tag = value.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--tag {value!r}: use NAME=VALUE, e.g. --tag arm=baseline")
        out[name.strip()] = tag.strip()
    return out


def import_command(
    traces: Annotated[
        list[Path], typer.Argument(help="Recorded calls, one JSON object per line (several files allowed).")
    ],
    ledger: Annotated[
        str, typer.Option(envvar=LEDGER_ENV, help="Ledger URL to write the usage events to.")
    ] = DEFAULT_LEDGER,
    prices: Annotated[Path | None, typer.Option(help="Price-override file (YAML or JSON).")] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="NAME=VALUE tag added to every imported call (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the totals as JSON.")] = False,
) -> None:
    """Import recorded calls as usage events (idempotent), so `tokenward report` works on them."""
    tags = _tags(tag)
    if sys.stderr.isatty() and not as_json:
        columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("import", total=None)
            report, total = import_traces(
                traces, ledger, prices=prices, tags=tags, progress=lambda n: bar.update(task, completed=n)
            )
    else:
        report, total = import_traces(traces, ledger, prices=prices, tags=tags)
    totals = report.totals()
    if as_json:
        print_json({"ledger": ledger, "calls_read": total, **totals})
        return
    table = Table(title=f"imported into {ledger}", show_header=False)
    table.add_row("files", ", ".join(p.name for p in traces))
    table.add_row("sessions / calls", f"{totals['sessions']:,} / {totals['calls']:,}")
    table.add_row("usage events written (or already there)", f"{totals['admitted_calls']:,}")
    table.add_row("input tokens (cached)", f"{totals['input_tokens']:,} ({totals['cache_read_tokens']:,})")
    table.add_row(
        "output tokens (reasoning)", f"{totals['output_tokens']:,} ({totals['reasoning_tokens']:,})"
    )
    table.add_row("cost from tokens", f"${Decimal(totals['cost_usd']):,.6f}")
    if totals["unpriced_calls"]:
        table.add_row(
            "[red]unpriced calls[/]", f"{totals['unpriced_calls']:,} (their cost is unknown, not zero)"
        )
    if totals["invalid_calls"]:
        table.add_row("[red]invalid usage[/]", f"{totals['invalid_calls']:,} calls were skipped")
    if tags:
        table.add_row("tags", ", ".join(f"{k}={v}" for k, v in tags.items()))
    out.print(table)
    out.print(f"next: tokenward report chargeback --ledger {ledger} --by task", style="dim", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command("import", cls=Command)(friendly(import_command))
