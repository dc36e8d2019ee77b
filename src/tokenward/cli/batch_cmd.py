"""``tokenward batch run``: an OpenAI Batch file sent as ordinary calls under a job budget."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from tokenward.cli.common import Command, Group, err, friendly, out, print_json

if TYPE_CHECKING:
    from tokenward.batch import BatchReport

__all__ = ["register"]

batch_app = typer.Typer(
    cls=Group,
    help="Batch jobs: a file of requests sent under a job budget, resumable.",
    no_args_is_help=True,
)


def _money(value: Decimal | None) -> str:
    from tokenward.numbers import plain

    return "unknown" if value is None else f"${plain(value)}"


def _say(text: str, end: str = "\n") -> None:
    out.print(text, end=end, highlight=False, markup=False, emoji=False, soft_wrap=True)


def _print_report(report: BatchReport) -> None:
    _say(
        f"job {report.job}: {report.done:,} of {report.total:,} records done ({report.percent}%): "
        f"{report.succeeded:,} succeeded, {report.failed:,} failed, {report.remaining:,} not processed",
    )
    reclaimed = (
        f" + {report.reclaimed_tokens:,} charged for calls cut by a crash" if report.reclaimed_tokens else ""
    )
    _say(
        f"spent: {report.input_tokens:,} input + {report.output_tokens:,} output tokens{reclaimed}, "
        f"{_money(report.cost_usd)}",
    )
    if report.charged_by == "gateway":
        _say(f"charged by the gateway under task batch:{report.job} (tokens above are from the answers)")
    for b in report.budgets:
        _say(f"budget {b.name}: {b.spent} of {b.limit} {b.meter} spent, {b.remaining} left")
    if report.remaining:
        mean = ""
        if report.projected_at_mean_tokens is not None:
            mean = (
                f"; at the mean so far {report.projected_at_mean_tokens:,} tokens, "
                f"{_money(report.projected_at_mean_cost_usd)}"
            )
        _say(
            f"not processed: {report.remaining:,} records in {report.remainder_path or '(no file)'}"
            + (f" (refused by budget {report.refused})" if report.refused else ""),
        )
        _say(
            f"to finish them: at most {report.projected_tokens:,} tokens, "
            f"{_money(report.projected_cost_usd)}{mean}",
        )
    for crash in report.resent:
        charged = ", ".join(f"{v} {k}" for k, v in crash.charged.items()) or "nothing charged"
        _say(f"re-sent after a crash: {crash.custom_id} (the crash left {charged})")


@batch_app.command("run", cls=Command)
@friendly
def run_command(
    requests: Annotated[Path, typer.Argument(help="OpenAI Batch input file (JSONL).")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Output file (OpenAI Batch output lines).")],
    budget: Annotated[
        list[str] | None,
        typer.Option(
            "--budget",
            "-b",
            help=escape("The job's budget, METER=LIMIT: total_tokens=10000000, cost_usd=50. Repeatable."),
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Records in flight at most.", min=1)] = 8,
    job: Annotated[
        str | None, typer.Option(help="Job name (task batch:<job>). Default: the input file's name.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Go on from --out: records with a line there are not sent again.")
    ] = False,
    retry_errors: Annotated[
        bool, typer.Option("--retry-errors", help="With --resume, send failed records again too.")
    ] = False,
    remainder: Annotated[
        Path | None,
        typer.Option(help="Where to write the records not processed. Default: OUT.remainder.jsonl."),
    ] = None,
    base_url: Annotated[
        str,
        typer.Option(
            help="Where to send: a provider's API (https://api.openai.com/v1), a compatible server, "
            "or a tokenward gateway (http://127.0.0.1:8080/v1)."
        ),
    ] = "https://api.openai.com/v1",
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the API key (or tokenward key).")
    ] = "OPENAI_API_KEY",
    provider: Annotated[
        str | None, typer.Option(help="Provider kind for prices when the host does not tell (openai...).")
    ] = None,
    ledger: Annotated[
        str | None,
        typer.Option(help="Ledger URL (else TOKENWARD_LEDGER, else sqlite:///tokenward.db)."),
    ] = None,
    prices: Annotated[Path | None, typer.Option(help="Price-override file (YAML or JSON).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar (on a terminal).")
    ] = True,
) -> None:
    """Send a batch file's records as ordinary calls, within the job's budget.

    Each record is estimated first and never clamped: a record the budget cannot pay for in full
    is not sent and goes to the remainder file. --resume continues after a stop or a kill.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tokenward.batch import check_files, read_records, run
    from tokenward.batch.http import HttpCaller
    from tokenward.cli.ledgers import DEFAULT_LEDGER, LEDGER_ENV
    from tokenward.files import load_prices
    from tokenward.sdk import Guard

    check_files(requests, out_file, remainder)
    records = read_records(requests)
    book = load_prices(prices) if prices else None
    url = ledger or os.environ.get(LEDGER_ENV) or DEFAULT_LEDGER
    guard = Guard(url, prices=book, on_unattributed="ignore")
    caller = HttpCaller(guard, base_url, api_key=os.environ.get(api_key_env), provider=provider)
    name = job or requests.stem
    bar = Progress(
        TextColumn("[bold]batch {task.fields[job]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[spend]}"),
        TimeElapsedColumn(),
        console=err,
        disable=not progress or not err.is_terminal,
    )
    try:
        with bar:
            task = bar.add_task("batch", total=len(records), job=name, spend="")

            def moved(p: object) -> None:
                from tokenward.batch import Progress as Step

                assert isinstance(p, Step)
                spend = "  ".join(f"{b.meter} {b.spent} spent, {b.remaining} left" for b in p.budgets)
                bar.update(task, completed=len(records) - p.total + p.done, spend=spend)

            report = run(
                records,
                caller,
                guard=guard,
                budget=budget or (),
                job=name,
                concurrency=concurrency,
                out=out_file,
                remainder=remainder,
                resume=resume,
                retry_errors=retry_errors,
                on_progress=moved,
            )
    finally:
        caller.close()
        guard.close()
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if report.remaining:
        err.print(
            f"{report.remaining:,} records not processed; resubmit {report.remainder_path} or run again "
            "with --resume and a bigger --budget",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    """Add ``tokenward batch`` to the command line."""
    app.add_typer(batch_app, name="batch")
