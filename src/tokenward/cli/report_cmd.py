"""``tokenward report ...``: spend reports over a ledger's usage events.

Every subcommand reads the ledger read-only (a SQLite file row by row, so any size works), takes
the period as ``--since``/``--until`` (ISO date or instant, UTC unless it says otherwise) or
``--last 7d``, and writes a table, CSV, JSON or Parquet (``--format``, ``--output``). Long scans
show a progress bar on a terminal.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tokenward.cli.common import Command, Group, err, friendly, out
from tokenward.cli.ledgers import DEFAULT_LEDGER, LEDGER_ENV, check_exists, open_existing_ledger
from tokenward.clock import parse_instant  # re-exported: the dates every report option reads
from tokenward.core.budgets import SCOPES, Subject, ungrouped
from tokenward.errors import ConfigError
from tokenward.numbers import plain

__all__ = ["parse_instant", "register"]

report_app = typer.Typer(
    name="report",
    cls=Group,
    help="Spend reports over a ledger: chargeback, sessions, SLOs, efficiency, A/B, utilisation, anomalies, charts.",
    no_args_is_help=True,
)

LedgerOption = Annotated[
    str, typer.Option("--ledger", envvar=LEDGER_ENV, help="Ledger URL, e.g. sqlite:///tokenward.db.")
]
SinceOption = Annotated[
    str | None, typer.Option(help="From this date or instant (inclusive), e.g. 2025-11-18.")
]
UntilOption = Annotated[str | None, typer.Option(help="Up to this date or instant (exclusive).")]
LastOption = Annotated[str | None, typer.Option(help="The last period before now: 30m, 24h, 7d, 4w.")]
WhereOption = Annotated[
    list[str] | None,
    typer.Option(
        "--where", help="Only calls with SCOPE=VALUE or tag:NAME=VALUE (repeatable), e.g. user=alice."
    ),
]
FormatOption = Annotated[str, typer.Option("--format", "-f", help="table, csv, json or parquet.")]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
]


SloCheckOption = Annotated[
    bool, typer.Option("--check", help="Exit with status 1 when an objective is missed (for CI and cron).")
]
BudgetCheckOption = Annotated[
    bool,
    typer.Option(
        "--check", help="Exit with status 1 when a hard budget has spent its limit (for CI and cron)."
    ),
]
FindingsCheckOption = Annotated[
    bool, typer.Option("--check", help="Exit with status 1 when anything is found (for CI and cron).")
]


def _fail_check(failures: list[str]) -> None:
    """With ``--check``: name what failed on stderr and exit with status 1 (the report is written)."""
    if failures:
        for line in failures:
            err.print(f"check failed: {line}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)


_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")


def _period(
    since: str | None, until: str | None, last: str | None
) -> tuple[datetime | None, datetime | None]:
    if last is not None:
        if since is not None:
            raise ConfigError("use either --last or --since, not both")
        match = _DURATION.match(last)
        if not match:
            raise ConfigError(f"--last {last!r}: use a number and m, h, d or w, e.g. 7d")
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match[2]]
        now = datetime.now(UTC)
        try:
            return now - timedelta(**{unit: int(match[1])}), None
        except OverflowError:
            raise ConfigError(f"--last {last!r} reaches back before the year 1") from None
    return (
        None if since is None else parse_instant(since, field="--since"),
        None if until is None else parse_instant(until, field="--until"),
    )


def _where(values: list[str] | None) -> Subject | None:
    if not values:
        return None
    scopes: dict[str, str] = {}
    tags: dict[str, str] = {}
    for value in values:
        name, sep, wanted = value.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"--where {value!r}: use SCOPE=VALUE or tag:NAME=VALUE")
        if name.startswith("tag:"):
            tags[name[4:]] = wanted
        elif name in SCOPES:
            scopes[name] = wanted
        else:
            raise ConfigError(f"--where {value!r}: {name!r} is not one of {', '.join(SCOPES)} or tag:NAME")
    # a project named: its user, agent, session and task as the gateway stores them (project/value)
    return Subject(**scopes, tags=tuple(sorted(tags.items()))).namespaced()


def _rows(
    ledger: str,
    since: datetime | None,
    until: datetime | None,
    where: Subject | None,
    need: set[str] | frozenset[str],
) -> Iterator[Any]:
    """Rows, with a progress bar on stderr when it is a terminal."""
    from tokenward.observe.rows import open_rows

    check_exists(ledger)
    source = open_rows(ledger)
    try:
        if not sys.stderr.isatty():
            yield from source.scan(since=since, until=until, where=where, need=need)
            return
        total = source.count(since=since, until=until, where=where)
        columns = (TextColumn("reading usage events"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("scan", total=total)
            yield from source.scan(
                since=since,
                until=until,
                where=where,
                need=need,
                progress=lambda n: bar.update(task, completed=n),
            )
    finally:
        source.close()


def _denials(ledger: str, since: datetime | None, until: datetime | None, where: Subject | None) -> list[Any]:
    """The calls budgets refused in the period (the ledger's denials), for the reports that count
    them."""
    from tokenward.observe.rows import open_rows

    check_exists(ledger)
    source = open_rows(ledger)
    try:
        return source.denials(since=since, until=until, where=where)
    finally:
        source.close()


def _write(table: Any, fmt: str, output: Path | None) -> None:
    from tokenward.observe.reports.output import write_table

    write_table(table, fmt, output)
    if output is not None:
        err.print(f"wrote {output}", highlight=False)


@report_app.command("chargeback", cls=Command)
@friendly
def chargeback_command(
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            "-b",
            help="Group by: a scope (user, project, team, ...), model, provider, status, "
            "tag:NAME, or a period (day, week, month, hour, day@Europe/Paris). Repeatable.",
        ),
    ] = None,
    ledger: LedgerOption = DEFAULT_LEDGER,
    since: SinceOption = None,
    until: UntilOption = None,
    last: LastOption = None,
    where: WhereOption = None,
    top: Annotated[int | None, typer.Option(help="Only the N most expensive lines.")] = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
) -> None:
    """Chargeback/showback: calls, tokens and exact cost per user, team, tag, model or period."""
    from tokenward.observe.reports.chargeback import chargeback, dimension, fields_for

    dims = by or ["user"]
    for name in dims:
        dimension(name)  # fail before reading anything
    start, end = _period(since, until, last)
    need = fields_for(dims) | {"cache_read_tokens", "reasoning_tokens"}
    filt = _where(where)
    report = chargeback(
        _rows(ledger, start, end, filt, need),
        dims,
        since=start,
        until=end,
        top=top,
        denials=_denials(ledger, start, end, filt),
    )
    _write(report.table(title=f"chargeback by {', '.join(dims)}"), fmt, output)


@report_app.command("sessions", cls=Command)
@friendly
def sessions_command(
    ledger: LedgerOption = DEFAULT_LEDGER,
    session: Annotated[str | None, typer.Option(help="Show this session step by step.")] = None,
    tasks: Annotated[bool, typer.Option("--tasks", help="Per task instead of per session.")] = False,
    since: SinceOption = None,
    until: UntilOption = None,
    last: LastOption = None,
    where: WhereOption = None,
    top: Annotated[int | None, typer.Option(help="Only the N most expensive.")] = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
) -> None:
    """Session costing: per session (with cost per resolved task), per step, or per task."""
    from tokenward.observe.reports.sessions import (
        SESSION_FIELDS,
        add_denials,
        session_costs,
        session_steps,
        sessions_table,
        steps_table,
        task_costs,
        tasks_table,
    )

    start, end = _period(since, until, last)
    filt = _where(where)
    if session is not None:
        filt = Subject.from_dict(
            {**({} if filt is None else filt.to_dict()), "session": session}
        ).namespaced()
        session = filt.session or session
        steps = session_steps(_rows(ledger, start, end, filt, SESSION_FIELDS), session)
        if not steps:
            raise ConfigError(f"no calls of session {session!r} in {ledger}")
        _write(steps_table(session, steps), fmt, output)
        return
    sessions = add_denials(
        session_costs(_rows(ledger, start, end, filt, SESSION_FIELDS)), _denials(ledger, start, end, filt)
    )
    _write(
        tasks_table(task_costs(sessions.values()), top=top) if tasks else sessions_table(sessions, top=top),
        fmt,
        output,
    )


@report_app.command("slo", cls=Command)
@friendly
def slo_command(
    slo: Annotated[
        list[str] | None,
        typer.Option("--slo", help='An objective, e.g. "95% of sessions under 2,000 tokens and 10 s".'),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="A YAML/JSON file with a `slos:` list.")] = None,
    ledger: LedgerOption = DEFAULT_LEDGER,
    since: SinceOption = None,
    until: UntilOption = None,
    last: LastOption = None,
    where: WhereOption = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    check: SloCheckOption = False,
) -> None:
    """Service-level objectives on tokens, cost and duration, with their compliance."""
    from tokenward.files import load_mapping
    from tokenward.observe.reports.sessions import SESSION_FIELDS, session_costs
    from tokenward.observe.reports.slo import SLO, evaluate, parse_slo, slo_table

    slos = [parse_slo(text) for text in slo or []]
    if config is not None:
        data, _ = load_mapping(config)
        items = data.get("slos")
        if not isinstance(items, list):
            raise ConfigError(f"{config}: expected a `slos:` list")
        slos += [SLO.from_config(item, i) for i, item in enumerate(items)]
    if not slos:
        raise ConfigError(
            'give an objective with --slo "95% of sessions under 2,000 tokens and 10 s" or --config'
        )
    start, end = _period(since, until, last)
    rows = (
        list(_rows(ledger, start, end, _where(where), SESSION_FIELDS))
        if any(s.per == "call" for s in slos)
        else None
    )
    source = rows if rows is not None else _rows(ledger, start, end, _where(where), SESSION_FIELDS)
    sessions = session_costs(source)
    results = evaluate(slos, sessions.values(), rows)
    _write(slo_table(results), fmt, output)
    if check:
        _fail_check(
            [
                f"SLO {r.slo.name!r} missed: {r.within:,} of {r.units:,} {r.slo.per}s within "
                f"({plain((r.compliance or 0) * 100, places=2)}% < {plain(r.slo.target * 100)}%)"
                for r in results
                if r.met is False
            ]
        )


@report_app.command("efficiency", cls=Command)
@friendly
def efficiency_command(
    by: Annotated[
        list[str] | None, typer.Option("--by", "-b", help="Group by a dimension (model, user, tag:NAME...).")
    ] = None,
    ledger: LedgerOption = DEFAULT_LEDGER,
    since: SinceOption = None,
    until: UntilOption = None,
    last: LastOption = None,
    where: WhereOption = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
) -> None:
    """Token efficiency: cached share, context per output token, reasoning, tool overhead, tokens per resolved task."""
    from tokenward.observe.reports.chargeback import dimension, fields_for
    from tokenward.observe.reports.efficiency import EFFICIENCY_FIELDS, efficiency, efficiency_table

    dims = by or []
    for name in dims:
        dimension(name)
    start, end = _period(since, until, last)
    groups, total = efficiency(
        _rows(ledger, start, end, _where(where), EFFICIENCY_FIELDS | fields_for(dims)), dims
    )
    _write(efficiency_table(groups, total, dims), fmt, output)


@report_app.command("ab", cls=Command)
@friendly
def ab_command(
    by: Annotated[str, typer.Option("--by", "-b", help="The arm: tag:NAME, model, agent, ...")],
    budget: Annotated[
        str | None,
        typer.Option(help="An equal per-session budget for every arm, METER=LIMIT, e.g. cost_usd=0.50."),
    ] = None,
    ledger: LedgerOption = DEFAULT_LEDGER,
    since: SinceOption = None,
    until: UntilOption = None,
    last: LastOption = None,
    where: WhereOption = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
) -> None:
    """Compare variants (A/B by tag or any dimension), optionally under the same per-session budget."""
    from tokenward.observe.reports.ab import ab_table, ab_test
    from tokenward.observe.reports.chargeback import dimension, fields_for

    dimension(by)
    meter, limit = None, None
    if budget is not None:
        meter, sep, amount = budget.partition("=")
        if not sep:
            raise ConfigError(f"--budget {budget!r}: use METER=LIMIT, e.g. cost_usd=0.50")
        try:
            limit = Decimal(ungrouped(amount, f"--budget {budget!r}").strip().lstrip("$"))
        except ArithmeticError:
            raise ConfigError(f"--budget {budget!r}: {amount!r} is not a number") from None
        meter = meter.strip()
    start, end = _period(since, until, last)
    need = fields_for([by]) | {"resolved"}
    arms = ab_test(_rows(ledger, start, end, _where(where), need), by, meter=meter, limit=limit)
    _write(ab_table(arms, by), fmt, output)


def _now(at: str | None) -> datetime:
    return datetime.now(UTC) if at is None else parse_instant(at, field="--at")


@report_app.command("utilisation", cls=Command)
@friendly
def utilisation_command(
    ledger: LedgerOption = DEFAULT_LEDGER,
    at: Annotated[
        str | None, typer.Option(help="Report the windows containing this instant (default now).")
    ] = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    check: BudgetCheckOption = False,
) -> None:
    """Budget utilisation in each budget's current window, with the projection to its end."""
    from tokenward.observe.reports.utilisation import UTILISATION_FIELDS, utilisation, utilisation_table

    now = _now(at)
    lines = _utilisation(ledger, now, UTILISATION_FIELDS, utilisation)
    _write(utilisation_table(lines), fmt, output)
    if check:
        _fail_check(
            [
                f"budget {u.budget.name!r} ({u.budget.scope} {u.subject_id!r}) spent "
                f"{plain(u.spent)} of {plain(u.budget.limit)} {u.budget.meter}"
                for u in lines
                if u.budget.mode == "hard" and u.spent >= u.budget.limit
            ]
        )


def _utilisation(ledger: str, now: datetime, need: frozenset[str], compute: Callable[..., Any]) -> Any:
    store = open_existing_ledger(ledger)
    try:
        budgets = store.budgets()
    finally:
        store.close()
    starts = [s for b in budgets if (s := b.window.start(now)) is not None]
    since = None if any(b.window.start(now) is None for b in budgets) or not starts else min(starts)
    return compute(_rows(ledger, since, None, None, need), budgets, now)


@report_app.command("anomalies", cls=Command)
@friendly
def anomalies_command(
    ledger: LedgerOption = DEFAULT_LEDGER,
    kind: Annotated[str | None, typer.Option(help="Only loop, spike or context_growth findings.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    last: LastOption = None,
    where: WhereOption = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    check: FindingsCheckOption = False,
) -> None:
    """Scan recorded sessions for runaway loops, spikes and ever-growing context."""
    from tokenward.observe.anomalies import Call, scan_sessions
    from tokenward.observe.reports.output import Table

    if kind is not None and kind not in ("loop", "spike", "context_growth"):
        raise ConfigError(f"--kind {kind!r}: use loop, spike or context_growth")
    start, end = _period(since, until, last)

    def calls() -> Iterator[Call]:
        for r in _rows(ledger, start, end, _where(where), {"cache_read_tokens", "step"}):
            scopes = tuple(
                (s, v) for s in ("user", "key", "project", "team", "org") if (v := r.value(s)) is not None
            )
            yield Call(
                r.session,
                r.at,
                r.model,
                r.input_tokens,
                r.output_tokens,
                r.cache_read_tokens,
                r.step,
                r.request_id,
                None,
                scopes,
            )

    findings = [f for f in scan_sessions(calls()) if kind is None or f.kind == kind]
    table = Table(
        "anomalies",
        ["kind", "scope", "subject_id", "at", "step", "message"],
        [(f.kind, f.scope, f.subject_id, f.at, f.step, f.message) for f in findings],
        [f"{len(findings):,} findings; thresholds and their reasons: docs/observing.md"],
        {"findings": [f.to_dict() for f in findings]},
    )
    _write(table, fmt, output)
    if check:
        _fail_check([f"{f.kind} in {f.scope} {f.subject_id!r}: {f.message}" for f in findings])


@report_app.command("burn", cls=Command)
@friendly
def burn_command(
    scope: Annotated[str, typer.Option(help="Scope to rank: user, project, session, ...")] = "user",
    ledger: LedgerOption = DEFAULT_LEDGER,
    at: Annotated[str | None, typer.Option(help="The instant (default: the last recorded call).")] = None,
    minutes: Annotated[int, typer.Option(help="Smoothing time constant, in minutes.")] = 10,
    top: Annotated[int, typer.Option(help="How many to show.")] = 10,
    fmt: FormatOption = "table",
    output: OutputOption = None,
) -> None:
    """Smoothed burn rates (tokens/min, USD/hour) of the fastest-spending scope values."""
    from tokenward.observe.burnrate import BurnRates
    from tokenward.observe.reports.output import Table

    if scope not in SCOPES:
        raise ConfigError(f"--scope {scope!r}: use one of {', '.join(SCOPES)}")
    tau = timedelta(minutes=minutes)
    until = None if at is None else parse_instant(at, field="--at")
    rates = BurnRates(tau, scopes=(scope,))
    last_at: datetime | None = None
    from tokenward.core.events import UsageEvent
    from tokenward.core.usage import Usage

    for r in _rows(ledger, None if until is None else until - tau * 10, until, None, set()):
        rates.add(
            UsageEvent(
                r.request_id, r.at, r.subject(), Usage(r.input_tokens, r.output_tokens), cost_usd=r.cost_usd
            )
        )
        last_at = r.at
    now = until or last_at or datetime.now(UTC)
    ranked = rates.top(scope, now, top)
    table = Table(
        f"burn rate by {scope} at {now.isoformat().replace('+00:00', 'Z')} (smoothed over ~{minutes} min)",
        [scope, "tokens_per_minute", "usd_per_hour", "requests_per_minute"],
        [
            (
                b.subject_id,
                b.tokens_per_minute.quantize(Decimal("0.01")),
                b.usd_per_hour.quantize(Decimal("0.000001")),
                b.requests_per_minute.quantize(Decimal("0.01")),
            )
            for b in ranked
        ],
    )
    _write(table, fmt, output)


@report_app.command("chart", cls=Command)
@friendly
def chart_command(
    kind: Annotated[str, typer.Argument(help="spend (over time), top (spenders) or utilisation.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The image: a .png or .svg file.")],
    by: Annotated[
        list[str] | None, typer.Option("--by", "-b", help="spend: series (user...); top: who (default user).")
    ] = None,
    every: Annotated[
        str, typer.Option(help="spend: the period of each point (hour, day, week, month).")
    ] = "day",
    ledger: LedgerOption = DEFAULT_LEDGER,
    since: SinceOption = None,
    until: UntilOption = None,
    last: LastOption = None,
    where: WhereOption = None,
    top: Annotated[int, typer.Option(help="top/utilisation: how many bars.")] = 15,
    at: Annotated[str | None, typer.Option(help="utilisation: the instant (default now).")] = None,
) -> None:
    """Charts as PNG or SVG: spend over time, top spenders, budget utilisation."""
    from tokenward.observe import charts
    from tokenward.observe.reports.chargeback import chargeback, dimension, fields_for
    from tokenward.observe.reports.utilisation import UTILISATION_FIELDS, utilisation

    start, end = _period(since, until, last)
    if kind == "spend":
        dims = [every, *(by or [])]
        for name in dims:
            dimension(name)
        report = chargeback(_rows(ledger, start, end, _where(where), fields_for(dims)), dims)
        path = charts.spend_over_time_chart(report, output)
    elif kind == "top":
        dims = by or ["user"]
        for name in dims:
            dimension(name)
        report = chargeback(_rows(ledger, start, end, _where(where), fields_for(dims)), dims)
        path = charts.top_spenders_chart(report, output, n=top)
    elif kind == "utilisation":
        lines = _utilisation(ledger, _now(at), UTILISATION_FIELDS, utilisation)
        if not any(line.ratio is not None for line in lines):
            # An empty plot would look like a chart of idle budgets: say so and write nothing.
            err.print(
                f"no budgets to chart: no budget in {ledger} has spend in its current window; "
                f"{output} was not written",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(1)
        path = charts.budget_utilisation_chart(lines, output, n=top)
    else:
        raise ConfigError(f"unknown chart {kind!r}; use spend, top or utilisation")
    out.print(f"wrote {path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``tokenward report ...`` to the CLI."""
    app.add_typer(report_app, name="report")
