"""``tokenward replay``: what budgets would have done to recorded agent traffic."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tokenward.cli.common import Command, err, friendly, out, print_json

if TYPE_CHECKING:
    from tokenward.replay.run import ReplayReport

__all__ = ["cut_sessions_table", "register"]


def replay_command(
    traces: Annotated[Path, typer.Argument(help="Recorded calls, one JSON object per line.")],
    budget: Annotated[
        list[str] | None,
        typer.Option(
            "--budget",
            "-b",
            help=escape(
                "SCOPE[=ID]:METER=LIMIT[/WINDOW], e.g. session:cost_usd=0.50 or "
                "task:total_tokens=200000/day. Repeatable."
            ),
        ),
    ] = None,
    ledger: Annotated[str, typer.Option(help="Ledger URL to replay into.")] = "memory://",
    prices: Annotated[Path | None, typer.Option(help="Price-override file (YAML or JSON).")] = None,
    top: Annotated[
        int | None,
        typer.Option(
            help="Also list the N costliest sessions a budget cut: calls, cost, where it was cut, "
            "and what the cut saved.",
            min=1,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the full report as JSON (every session, with its cut).")
    ] = False,
) -> None:
    """Replay recorded calls through budgets: what each budget would have cut, and saved.

    Costs come from the recorded tokens and the prices (the recorded cost is only compared against).

    --top N lists the costliest sessions the budgets cut; --json gives every session.
    """
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
    if top is not None:
        cut = cut_sessions_table(report, top)
        if cut is None:
            out.print("no session was cut" if budgets else "no session was cut: give a --budget", style="dim")
        else:
            out.print(cut)


def cut_sessions_table(report: ReplayReport, top: int) -> Table | None:
    """The ``top`` costliest sessions a budget cut (cost from tokens, then what the cut saved,
    then the session id, for a stable order), or None when no session was cut."""
    cut = [s for s in report.sessions.values() if s.cut is not None]
    if not cut:
        return None
    cut.sort(key=lambda s: (-s.cost_usd, -(s.cut.saved_cost_usd if s.cut else 0), s.session_id))
    table = Table(title=f"the {min(top, len(cut)):,} costliest of {len(cut):,} sessions cut")
    table.add_column("session", no_wrap=True, overflow="fold")
    table.add_column("resolved")
    for column in ("calls", "cost", "cut at step", "by budget", "saved"):
        table.add_column(column, justify="left" if column == "by budget" else "right")
    for session in cut[:top]:
        assert session.cut is not None
        resolved = {True: "yes", False: "no", None: "unknown"}[session.resolved]
        table.add_row(
            escape(session.session_id),
            resolved,
            f"{session.calls:,}",
            f"${session.cost_usd:,.6f}",
            f"{session.cut.step:,}",
            escape(session.cut.budget),
            f"${session.cut.saved_cost_usd:,.6f}",
        )
    return table


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command("replay", cls=Command)(friendly(replay_command))
