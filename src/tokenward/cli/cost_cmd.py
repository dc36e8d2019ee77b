"""``tokenward cost``: the normalised usage and exact cost of one call, from its usage object, its
whole response, or its streamed events."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tokenward.cli.common import Command, friendly, out, print_json
from tokenward.errors import ValidationError
from tokenward.numbers import plain

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


def _events(data: Any) -> list[Any]:
    """A JSON list of events, or the lines of an NDJSON/SSE text already split into objects."""
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        data = data["events"]
    if not isinstance(data, list):
        raise ValidationError("--events must hold a JSON list of the streamed events", field="events")
    return data


def cost_report(
    dialect: str,
    model: str,
    *,
    usage: Any = None,
    events: list[Any] | None = None,
    response: Any = None,
    prices_file: Path | None = None,
    input_estimate: int | None = None,
    batch: bool = False,
    service_tier: str | None = None,
    provider: str | None = None,
    at: datetime | None = None,
    unknown_model: str = "flag",
    cache_write_ttl: str | None = None,
    image_size: str | None = None,
    image_quality: str | None = None,
) -> dict[str, Any]:
    """The report ``tokenward cost --json`` prints (see the command's help).

    Args:
        dialect: one of :data:`tokenward.core.dialects.DIALECTS`.
        model: the model requested (priced when the served model has no price).
        usage / events / response: exactly one: the usage object, the streamed events, or the whole
            response (its served model, service tier and output items count too).
        prices_file: a price-override file.
        input_estimate: our pre-flight prompt estimate (tokens), used when the provider sent none.
        batch: the call went through a batch API (batch rates).
        service_tier: the tier that served the call, when the response is not given.
        provider: the provider the call went through (its override rows and trust setting).
        at: when the call was made (prices that change over time); now by default.
        unknown_model: ``flag`` or ``default`` (the price file's ``default`` row).
        cache_write_ttl: the cache-write lifetime the request asked for (``5m``, ``1h``), for
            writes the usage reports without their split; unknown (priced at 5 minutes, marked
            estimated) when None.
        image_size / image_quality: the size and quality of the images (per-image prices), when
            the response does not say them (DALL·E answers do not).

    Raises:
        ValidationError: not exactly one of usage/events/response, an unknown dialect, or a
            malformed usage object.
        ConfigError: an invalid price-override file.
    """
    from tokenward.core.accounting import account
    from tokenward.core.dialects import response_facts, stream_facts, stream_reader, usage_facts
    from tokenward.core.dialects.base import normalise_tier
    from tokenward.core.estimate import count_tokens
    from tokenward.core.modifiers import cache_ttl
    from tokenward.core.pricebook import PriceContext
    from tokenward.core.tokenizers import encoding_for_model
    from tokenward.files import load_prices

    if sum(x is not None for x in (usage, events, response)) != 1:
        raise ValidationError("give exactly one of --usage, --response and --events", field="usage")
    stream: dict[str, Any] | None = None
    counted = None
    if events is not None:
        reader = stream_reader(dialect)
        text = []
        for i, event in enumerate(_events(events)):
            if not isinstance(event, dict):
                raise ValidationError(f"events[{i}] is not a JSON object", field="events")
            text.append(reader.feed(event))
        facts = stream_facts(reader)
        encoding, _ = encoding_for_model(model)
        counted = count_tokens("".join(text), encoding)
        stream = {
            "events": len(events),
            "model": facts.model,
            "finish_reason": facts.finish_reason,
            "counted_output_tokens": counted,
            "usage_arrived": facts.usage is not None,
        }
    elif response is not None:
        if not isinstance(response, dict):
            raise ValidationError("--response must be a JSON object (the whole response)", field="response")
        facts = response_facts(dialect, response)
    else:
        if not isinstance(usage, dict):
            raise ValidationError(
                "--usage must be a JSON object (the provider's usage object)", field="usage"
            )
        facts = usage_facts(dialect, usage)
    ttl = None if cache_write_ttl is None else cache_ttl(cache_write_ttl, "cache_write_ttl")
    tier = facts.service_tier
    tier_source = "response" if tier else None
    if tier is None and service_tier:
        tier, tier_source = normalise_tier(service_tier), "option"
    if tier == "batch":
        batch, tier = True, None
    prices = load_prices(prices_file)
    accounting = account(
        facts.usage,
        model=model,
        prices=prices,
        input_estimate=input_estimate,
        output_counted=counted,
        provider=provider,
        context=PriceContext(
            service_tier=tier,
            batch=batch,
            at=at,
            speed=facts.speed,
            inference_geo=facts.inference_geo,
            cache_write_ttl=ttl,
            image_size=_said(response, "size") or image_size,
            image_quality=_said(response, "quality") or image_quality,
        ),
        model_served=facts.model,
        reported_cost_usd=facts.reported_cost_usd,
        unknown_model=unknown_model,
    )
    cost = accounting.cost
    filled = accounting.usage
    return {
        "dialect": dialect,
        "model": model,
        "model_served": facts.model,
        "service_tier": tier or "default",
        "service_tier_source": tier_source or "default",
        "batch": batch,
        "speed": facts.speed or "standard",
        "inference_geo": facts.inference_geo,
        "cache_write_ttl": ttl,
        "usage": accounting.reported.to_dict() | {"total_tokens": accounting.reported.total_tokens},
        "usage_complete": accounting.reported.complete,
        "budget_usage": filled.to_dict() | {"total_tokens": filled.total_tokens},
        "budget_input_tokens": filled.input_tokens,
        "budget_total_tokens": filled.total_tokens,
        "input_source": filled.input_source,
        "output_source": filled.output_source,
        "cost_usd": None if cost.total_usd is None else plain(cost.total_usd),
        "cost_estimated": cost.estimated,
        "cost_source": accounting.cost_source,
        "reported_cost_usd": None
        if accounting.reported_cost_usd is None
        else plain(accounting.reported_cost_usd),
        "breakdown": {
            name: {"tokens": cost.tokens.get(name, 0), "usd": plain(usd)}
            for name, usd in cost.breakdown.items()
        },
        "unpriced": list(cost.unpriced),
        "assumed": list(cost.assumed),
        "tier_above_input_tokens": cost.tier,
        "price": None
        if accounting.price is None
        else {
            "model": accounting.price.model,
            "source": accounting.price.source,
            "version": accounting.price.version,
            "provider": accounting.price.provider,
            "estimated": accounting.price.estimated,
            "modifiers": dict(accounting.price.modifiers),
        },
        "stream": stream,
    }


def _said(response: Any, key: str) -> str | None:
    """A string field of a whole response (an images answer's ``size`` and ``quality``)."""
    value = response.get(key) if isinstance(response, dict) else None
    return value if isinstance(value, str) else None


def _instant(value: str | None) -> datetime | None:
    from tokenward.clock import parse_instant

    return None if value is None else parse_instant(value, field="--at")


def _count(value: int | None) -> str:
    """A token count for people: ``None`` is a count the provider did not report (unknown, not 0)."""
    return "not reported" if value is None else f"{value:,}"


def cost_command(
    dialect: Annotated[
        str,
        typer.Option(
            help="Wire format: openai-chat, openai-compatible, openai-responses, anthropic-messages, "
            "gemini, bedrock-converse or ollama."
        ),
    ],
    model: Annotated[str, typer.Option(help="The model the call was made and is priced under.")],
    usage: Annotated[
        str | None,
        typer.Option(help="The provider's usage object (Ollama: the final response): JSON text, or @FILE."),
    ] = None,
    response: Annotated[
        Path | None,
        typer.Option(
            help="The whole response (JSON): its served model, service tier and output items count."
        ),
    ] = None,
    events: Annotated[
        Path | None, typer.Option(help="A JSON list of the streamed events or chunks, in order.")
    ] = None,
    prices: Annotated[Path | None, typer.Option(help="Price-override file (YAML or JSON).")] = None,
    batch: Annotated[bool, typer.Option("--batch", help="The call went through a batch API.")] = False,
    service_tier: Annotated[
        str | None, typer.Option(help="The tier that served the call, when no --response says it.")
    ] = None,
    provider: Annotated[
        str | None, typer.Option(help="The provider the call went through (e.g. openrouter).")
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="When the call was made (ISO 8601), for prices that change over time.")
    ] = None,
    unknown_model: Annotated[
        str, typer.Option(help="flag (cost unknown) or default (the price file's default row).")
    ] = "flag",
    input_estimate: Annotated[
        int | None,
        typer.Option(help="Pre-flight prompt estimate (tokens), used when the provider sent none."),
    ] = None,
    cache_write_ttl: Annotated[
        str | None,
        typer.Option(
            help="Cache-write lifetime the request asked for (5m or 1h), for writes reported "
            "without their split; unknown: priced at 5m and marked estimated."
        ),
    ] = None,
    image_size: Annotated[
        str | None, typer.Option(help="Size of the images (1024x1792...), for per-image prices.")
    ] = None,
    image_quality: Annotated[
        str | None, typer.Option(help="Quality of the images (standard, hd...), for per-image prices.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Normalise one call's usage and price it exactly, with the breakdown by token class."""
    if unknown_model not in ("flag", "default"):
        raise ValidationError("--unknown-model must be flag or default", field="unknown_model")
    events_data = _json_arg(f"@{events}", "events") if events is not None else None
    response_data = _json_arg(f"@{response}", "response") if response is not None else None
    usage_data = _json_arg(usage, "usage") if usage is not None else None
    report = cost_report(
        dialect,
        model,
        usage=usage_data,
        events=events_data,
        response=response_data,
        prices_file=prices,
        input_estimate=input_estimate,
        batch=batch,
        service_tier=service_tier,
        provider=provider,
        at=_instant(at),
        unknown_model=unknown_model,
        cache_write_ttl=cache_write_ttl,
        image_size=image_size,
        image_quality=image_quality,
    )
    if as_json:
        print_json(report)
        return
    served = f", served as {report['model_served']}" if report["model_served"] not in (None, model) else ""
    extras = "".join(
        [
            ", batch" if batch else "",
            f", speed {report['speed']}" if report["speed"] != "standard" else "",
            f", inference {report['inference_geo']}" if report["inference_geo"] else "",
        ]
    )
    table = Table(title=f"{model} ({dialect}{served}, tier {report['service_tier']}{extras})")
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
    for assumption in report["assumed"]:
        out.print(f"assumed: {assumption}", highlight=False)
    usage_row = report["budget_usage"]
    out.print(
        f"input {_count(usage_row['input_tokens'])} ({report['input_source']}), "
        f"cached {_count(usage_row['cache_read_tokens'])}, "
        f"cache writes {_count(usage_row['cache_write_tokens'])}, "
        f"output {_count(usage_row['output_tokens'])} ({report['output_source']}), "
        f"reasoning {_count(usage_row['reasoning_tokens'])}",
        highlight=False,
    )
    if report["reported_cost_usd"] is not None:
        out.print(
            f"provider-reported cost {report['reported_cost_usd']} "
            f"({'used' if report['cost_source'] == 'provider_reported' else 'not trusted; tokens x price used'})",
            highlight=False,
        )
    if report["price"]:
        price = report["price"]
        out.print(f"priced as {price['model']} from {price['source']} {price['version']}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command("cost", cls=Command)(friendly(cost_command))
