"""``tokenward cost``: the normalised usage and exact cost of one call, from its usage object or
from its streamed events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tokenward.cli.main import friendly, out, print_json
from tokenward.core.numbers import plain
from tokenward.errors import ValidationError

__all__ = ["cost_report", "register"]


def _json_arg(value: str, what: str) -> Any:
    """JSON text, or ``@path`` / a path to a file holding it."""
    text = value
    if value.startswith("@") or (not value.lstrip().startswith(("{", "[")) and Path(value).exists()):
        path = Path(value.removeprefix("@"))
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValidationError(f"{what}: cannot read {path}: {exc.strerror}", field=what) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{what}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", field=what
        ) from None


def cost_report(
    dialect: str,
    model: str,
    *,
    usage: Any = None,
    events: list[Any] | None = None,
    prices_file: Path | None = None,
    input_estimate: int | None = None,
) -> dict[str, Any]:
    """The report ``tokenward cost --json`` prints (see the command's help).

    Raises:
        ValidationError: neither or both of ``usage`` and ``events``, an unknown dialect, or a
            malformed usage object.
        ConfigError: an invalid price-override file.
    """
    from tokenward.core.accounting import account
    from tokenward.core.dialects import stream_reader, usage_from
    from tokenward.core.estimate import count_tokens
    from tokenward.core.tokenizers import encoding_for_model
    from tokenward.files import load_prices

    if (usage is None) == (events is None):
        raise ValidationError("give exactly one of --usage and --events", field="usage")
    stream: dict[str, Any] | None = None
    counted = None
    if events is not None:
        if not isinstance(events, list):
            raise ValidationError("--events must hold a JSON list of the streamed events", field="events")
        reader = stream_reader(dialect)
        text = []
        for i, event in enumerate(events):
            if not isinstance(event, dict):
                raise ValidationError(f"events[{i}] is not a JSON object", field="events")
            text.append(reader.feed(event))
        reported = reader.usage
        encoding, _ = encoding_for_model(model)
        counted = count_tokens("".join(text), encoding)
        stream = {
            "events": len(events),
            "model": reader.model,
            "finish_reason": reader.finish_reason,
            "counted_output_tokens": counted,
            "usage_arrived": reported is not None,
        }
        model_served = reader.model
    else:
        if not isinstance(usage, dict):
            raise ValidationError(
                "--usage must be a JSON object (the provider's usage object)", field="usage"
            )
        reported = usage_from(dialect, usage)
        model_served = None
    accounting = account(
        reported,
        model=model,
        prices=load_prices(prices_file),
        input_estimate=input_estimate,
        output_counted=counted,
        model_served=model_served,
    )
    cost = accounting.cost
    filled = accounting.usage
    return {
        "dialect": dialect,
        "model": model,
        "usage": accounting.reported.to_dict() | {"total_tokens": accounting.reported.total_tokens},
        "usage_complete": accounting.reported.complete,
        "budget_usage": filled.to_dict() | {"total_tokens": filled.total_tokens},
        "budget_input_tokens": filled.input_tokens,
        "budget_total_tokens": filled.total_tokens,
        "input_source": filled.input_source,
        "output_source": filled.output_source,
        "cost_usd": None if cost.total_usd is None else plain(cost.total_usd),
        "cost_estimated": cost.estimated,
        "cost_source": "token_pricing",
        "breakdown": {
            name: {"tokens": cost.tokens.get(name, 0), "usd": plain(usd)}
            for name, usd in cost.breakdown.items()
        },
        "unpriced": list(cost.unpriced),
        "tier_above_input_tokens": cost.tier,
        "price": None
        if accounting.price is None
        else {
            "model": accounting.price.model,
            "source": accounting.price.source,
            "version": accounting.price.version,
        },
        "stream": stream,
    }


def cost_command(
    dialect: Annotated[
        str, typer.Option(help="Wire format: openai-chat, openai-compatible or anthropic-messages.")
    ],
    model: Annotated[str, typer.Option(help="The model the call was made and is priced under.")],
    usage: Annotated[
        str | None, typer.Option(help="The provider's usage object: JSON text, or @FILE.")
    ] = None,
    events: Annotated[
        Path | None, typer.Option(help="A JSON list of the streamed events or chunks, in order.")
    ] = None,
    prices: Annotated[Path | None, typer.Option(help="Price-override file (YAML or JSON).")] = None,
    input_estimate: Annotated[
        int | None,
        typer.Option(help="Pre-flight prompt estimate (tokens), used when the provider sent none."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Normalise one call's usage and price it exactly, with the breakdown by token class."""
    events_data = _json_arg(f"@{events}", "events") if events is not None else None
    usage_data = _json_arg(usage, "usage") if usage is not None else None
    report = cost_report(
        dialect,
        model,
        usage=usage_data,
        events=events_data,
        prices_file=prices,
        input_estimate=input_estimate,
    )
    if as_json:
        print_json(report)
        return
    table = Table(title=f"{model} ({dialect})")
    table.add_column("token class")
    table.add_column("tokens", justify="right")
    table.add_column("USD", justify="right")
    for name, row in report["breakdown"].items():
        table.add_row(name, f"{row['tokens']:,}", row["usd"])
    for name in report["unpriced"]:
        table.add_row(f"[red]{name}[/]", "", "[red]no price[/]")
    total = report["cost_usd"] if report["cost_usd"] is not None else "[red]unknown[/]"
    table.add_row(
        "[bold]total[/]", "", f"[bold]{total}[/]" + (" (estimated)" if report["cost_estimated"] else "")
    )
    out.print(table)
    usage_row = report["budget_usage"]
    out.print(
        f"input {usage_row['input_tokens']} ({report['input_source']}), cached {usage_row['cache_read_tokens']}, "
        f"cache writes {usage_row['cache_write_tokens']}, output {usage_row['output_tokens']} "
        f"({report['output_source']}), reasoning {usage_row['reasoning_tokens']}",
        highlight=False,
    )
    if report["price"]:
        price = report["price"]
        out.print(f"priced as {price['model']} from {price['source']} {price['version']}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command("cost")(friendly(cost_command))
