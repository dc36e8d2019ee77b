"""``tokenward events`` and ``tokenward balances``: what a ledger holds."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tokenward.cli.common import Command, friendly, out, print_json
from tokenward.cli.ledgers import DEFAULT_LEDGER, LEDGER_ENV, open_existing_ledger
from tokenward.core.budgets import Subject
from tokenward.errors import ConfigError
from tokenward.numbers import plain

__all__ = ["register"]

LedgerOption = Annotated[
    str,
    typer.Option("--ledger", envvar=LEDGER_ENV, help="Ledger URL, e.g. sqlite:///examples/tokenward.db."),
]


def _subject(
    user: str | None,
    session: str | None,
    project: str | None,
    key: str | None,
    agent: str | None,
    task: str | None,
    team: str | None = None,
    org: str | None = None,
) -> Subject:
    """The subject the options name; with ``--project``, its user, agent, session and task are
    taken in the project's namespace, as the gateway stores them (``--project shop --session s-1``
    is ``shop/s-1``; writing ``--session shop/s-1`` alone finds it too)."""
    return Subject(
        user=user, session=session, project=project, key=key, agent=agent, task=task, team=team, org=org
    ).namespaced()


NO_SUBJECT = (
    "balances are per subject: name whom calls are charged to with --user, --session, --task, "
    "--agent, --key, --project, --team or --org (e.g. --user alice --session s-1); "
    "`tokenward budgets list --ledger URL` lists the budgets themselves"
)


def events_command(
    ledger: LedgerOption = DEFAULT_LEDGER,
    user: Annotated[str | None, typer.Option(help="Only this user's calls.")] = None,
    session: Annotated[str | None, typer.Option(help="Only this session's calls.")] = None,
    project: Annotated[
        str | None,
        typer.Option(
            help="Only this project's calls; takes --user/--session/--agent/--task in its namespace."
        ),
    ] = None,
    key: Annotated[str | None, typer.Option(help="Only this virtual key's calls.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's calls.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task's calls.")] = None,
    team: Annotated[str | None, typer.Option(help="Only this team's calls.")] = None,
    org: Annotated[str | None, typer.Option(help="Only this org's calls.")] = None,
    last: Annotated[int, typer.Option(help="Show the last N events.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the events as a JSON array.")] = False,
    denials: Annotated[
        bool,
        typer.Option(
            "--denials",
            help="List the calls budgets refused instead (402/429 at the gateway, BudgetExceeded in the "
            "SDK); a flood is one line per subject, budget and minute with its count.",
        ),
    ] = False,
    budget: Annotated[str | None, typer.Option(help="With --denials: only this budget's refusals.")] = None,
) -> None:
    """List recorded usage events (one per call), newest last; ``--denials``: refused calls."""
    subject = _subject(user, session, project, key, agent, task, team, org)
    if denials:
        if last < 1:
            raise ConfigError(f"--last must be at least 1, got {last}")
        _denials(ledger, subject, budget, last, as_json)
        return
    if budget is not None:
        raise ConfigError("--budget filters refused calls: add --denials")
    store = open_existing_ledger(ledger)
    try:
        events = store.events(subject=subject)[-last:]
    finally:
        store.close()
    if as_json:
        print_json([e.to_dict() for e in events])
        return
    table = Table(title=f"last {len(events)} usage events in {ledger}")
    for column in ("at (UTC)", "subject", "model", "status", "input", "output", "cost USD"):
        # Nothing is cut: long subjects and models fold onto more lines.
        table.add_column(
            column, justify="right" if column in ("input", "output", "cost USD") else "left", overflow="fold"
        )
    for e in events:
        who = " ".join(f"{k}={v}" for k, v in e.subject.to_dict().items() if k not in ("tags", "model"))
        cost = "unknown" if e.cost_usd is None else plain(e.cost_usd) + (" ~" if e.cost_estimated else "")
        table.add_row(
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(who),
            escape(e.model or ""),
            e.status,
            f"{e.usage.input_tokens if e.usage.input_tokens is not None else '?'}",
            f"{e.usage.output_tokens if e.usage.output_tokens is not None else '?'}",
            cost,
        )
    out.print(table)
    out.print("~ marks a cost that rests partly on tokenward's own count", style="dim")


def _denials(ledger: str, subject: Subject, budget: str | None, last: int, as_json: bool) -> None:
    store = open_existing_ledger(ledger)
    try:
        found = list(
            reversed(store.denials(subject=subject if subject.to_dict() else None, budget=budget, limit=last))
        )
    finally:
        store.close()
    if as_json:
        print_json([d.to_dict() for d in found])
        return
    table = Table(
        title=f"last {len(found)} denials in {ledger} ({sum(d.count for d in found)} refused calls)"
    )
    for column in (
        "at (UTC)",
        "subject",
        "budget",
        "meter",
        "model",
        "needed",
        "used / limit",
        "count",
        "request",
    ):
        table.add_column(
            column, justify="right" if column in ("needed", "count") else "left", overflow="fold"
        )
    for d in found:
        who = " ".join(f"{k}={v}" for k, v in d.subject.to_dict().items() if k != "tags")
        figures = "" if d.limit is None else f"{plain(d.used or 0)} / {plain(d.limit)}"
        table.add_row(
            d.at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(who),
            escape(d.budget) + ("" if d.reason == "budget_exceeded" else f" ({d.reason})"),
            d.meter or "",
            escape(d.model or ""),
            "" if d.requested is None else plain(d.requested),
            figures,
            f"{d.count}{'+' if d.aggregated else ''}",
            escape(d.request_id or ""),
        )
    out.print(table)
    out.print(
        "count N+ folds a flood: the refusals of one subject, budget and minute past the rate", style="dim"
    )


def balances_command(
    ledger: LedgerOption = DEFAULT_LEDGER,
    user: Annotated[str | None, typer.Option(help="The user.")] = None,
    session: Annotated[str | None, typer.Option(help="The session.")] = None,
    project: Annotated[
        str | None,
        typer.Option(
            help="The project; takes --user/--session/--agent/--task in its namespace (project/value)."
        ),
    ] = None,
    key: Annotated[str | None, typer.Option(help="The virtual key.")] = None,
    agent: Annotated[str | None, typer.Option(help="The agent.")] = None,
    task: Annotated[str | None, typer.Option(help="The task.")] = None,
    team: Annotated[str | None, typer.Option(help="The team.")] = None,
    org: Annotated[str | None, typer.Option(help="The org.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show every budget that applies to a subject: limit, spent, held, remaining, reset."""
    subject = _subject(user, session, project, key, agent, task, team, org)
    if not subject.to_dict():
        raise ConfigError(NO_SUBJECT)
    store = open_existing_ledger(ledger)
    try:
        balances = store.balances(subject)
    finally:
        store.close()
    rows = [
        {
            "budget": b.budget.name,
            "scope": b.budget.scope,
            "subject_id": b.subject_id,
            "meter": b.budget.meter,
            "limit": plain(b.budget.limit),
            "spent": plain(b.spent),
            "held": plain(b.held),
            "remaining": plain(b.remaining),
            "reset_at": b.reset_at.isoformat().replace("+00:00", "Z") if b.reset_at else None,
        }
        for b in balances
    ]
    if as_json:
        print_json(rows)
        return
    table = Table(title="budgets that apply")
    for column in ("budget", "scope", "meter", "limit", "spent", "held", "remaining", "resets"):
        # Nothing is cut (values fold); the budget's name stays on one line.
        table.add_column(column, no_wrap=column == "budget", overflow="fold")
    for row in rows:
        table.add_row(
            escape(str(row["budget"])),
            f"{row['scope']}={escape(str(row['subject_id']))}",
            row["meter"],
            row["limit"],
            row["spent"],
            row["held"],
            row["remaining"],
            row["reset_at"] or "never",
        )
    out.print(table)
    if not rows:
        who = " ".join(f"{k}={v}" for k, v in subject.to_dict().items())
        out.print(f"no budget applies to {who} in {ledger}", style="dim", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add the commands to the CLI."""
    app.command("events", cls=Command)(friendly(events_command))
    app.command("balances", cls=Command)(friendly(balances_command))
