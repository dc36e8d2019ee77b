"""``tokenward replay``: what budgets would have done to recorded agent traffic."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tokenward.cli.main import err, friendly, out, print_json

__all__ = ["register"]


def replay_command(
    traces: Annotated[Path, typer.Argument(help="Recorded calls, one JSON object per line.")],
    budget: Annotated[
        list[str] | None,
        typer.Option(
            "--budget",
            "-b",
            help="SCOPE[=ID]:METER=LIMIT[/WINDOW], e.g. session:cost_usd=0.50 or task:total_tokens=200000/day. Repeatable.",
        ),
    ] = None,
    ledger: Annotated[str, typer.Option(help="Ledger URL to replay into.")] = "memory://",
    prices: Annotated[Path | None, typer.Option(help="Price-override file (YAML or JSON).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """Replay recorded calls through the guard: costs from tokens and prices, and the sessions
    each budget would have cut, with what that would have saved."""
    from tokenward.core.budgets import parse_budget_spec
    from tokenward.files import load_prices
    from tokenward.replay import read_traces, replay

    budgets = [parse_budget_spec(spec) for spec in budget or []]
    book = load_prices(prices)
    calls = read_traces(traces)
    if sys.stderr.isatty() and not as_json:
        columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("replay", total=len(calls))
            report = replay(
                calls, budgets, ledger=ledger, prices=book, progress=lambda n: bar.update(task, completed=n)
            )
    else:
        report = replay(calls, budgets, ledger=ledger, prices=book)
    if as_json:
        print_json(report.to_dict())
        return
    totals = report.totals()
    table = Table(title=f"replay of {traces.name}", show_header=False)
    table.add_row("sessions / calls", f"{totals['sessions']:,} / {totals['calls']:,}")
    table.add_row("input tokens (cached)", f"{totals['input_tokens']:,} ({totals['cache_read_tokens']:,})")
    table.add_row(
        "output tokens (reasoning)", f"{totals['output_tokens']:,} ({totals['reasoning_tokens']:,})"
    )
    table.add_row("cost from tokens", f"${Decimal(totals['cost_usd']):,.6f}")
    if totals["recorded_cost_usd"] is not None:
        table.add_row("recorded cost", f"${Decimal(totals['recorded_cost_usd']):,.6f}")
    if totals["unpriced_calls"]:
        table.add_row(
            "[red]unpriced calls[/]", f"{totals['unpriced_calls']:,} (their cost is unknown, not zero)"
        )
    for budget_spec in budgets:
        table.add_row("budget", str(budget_spec.name))
    if budgets:
        table.add_row(
            "sessions cut",
            f"{totals['sessions_cut']:,} ({totals['sessions_cut_resolved']:,} of them had resolved their task, "
            f"{totals['sessions_cut_unresolved']:,} had not)",
        )
        table.add_row("cost the cuts save", f"${Decimal(totals['saved_cost_usd']):,.6f}")
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command("replay")(friendly(replay_command))
