"""``tokenward estimate``: a request's prompt estimate before the call, and how it was made."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from tokenward.cli.common import Command, friendly, out, print_json
from tokenward.core.modifiers import RequestFacts
from tokenward.errors import ValidationError
from tokenward.numbers import plain

__all__ = ["estimate_report", "output_bound", "register"]


def output_bound(body: dict[str, Any]) -> int | None:
    """The output bound a request sets, in tokens, whatever its dialect, or None."""
    candidates = [
        body.get("max_completion_tokens"),
        body.get("max_tokens"),
        body.get("max_output_tokens"),
        (body.get("generationConfig") or {}).get("maxOutputTokens")
        if isinstance(body.get("generationConfig"), dict)
        else None,
        (body.get("inferenceConfig") or {}).get("maxTokens")
        if isinstance(body.get("inferenceConfig"), dict)
        else None,
        (body.get("options") or {}).get("num_predict") if isinstance(body.get("options"), dict) else None,
    ]
    return next((v for v in candidates if isinstance(v, int) and not isinstance(v, bool) and v > 0), None)


def estimate_report(
    body: Any,
    model: str,
    *,
    dialect: str | None = None,
    ledger: str | None = None,
    prices_file: Path | None = None,
) -> dict[str, Any]:
    """The report ``tokenward estimate --json`` prints.

    The estimate is corrected by the model's calibration when ``ledger`` holds observations of it
    (models without an exact offline tokenizer only). The worst-case cost is at the rates the
    gateway would hold the request at: the speed, inference geography and cache writes it asks
    for (``held_for``).

    Raises:
        ValidationError: a body that is not a JSON object, or an unknown dialect.
        ConfigError / LedgerError: a bad price file or ledger URL.
    """
    from tokenward.core.calibration import calibration_key, correction
    from tokenward.core.estimate import detect_dialect, estimate_request, model_family
    from tokenward.core.pricebook import hold_rates
    from tokenward.core.pricing import MILLION
    from tokenward.files import load_prices

    if not isinstance(body, dict):
        raise ValidationError("the request file must hold a JSON object (the request body)", field="request")
    dialect = dialect or detect_dialect(body, model)
    estimate = estimate_request(body, model, dialect=dialect)
    calibration: dict[str, Any] | None = None
    tokens = estimate.input_tokens
    if ledger is not None:
        from tokenward.cli.ledgers import open_existing_ledger

        store = open_existing_ledger(ledger)
        try:
            stats = store.estimate_stats(model)
        finally:
            store.close()
        learnt = correction(stats)
        calibrated = model_family(model) != "openai" and learnt.applied
        if calibrated:
            tokens = learnt.apply(estimate.input_tokens)
        calibration = {
            "model_key": calibration_key(model),
            "observations": learnt.observations,
            "max_actual_over_estimate": None if stats is None else str(stats.max_ratio),
            "mean_actual_over_estimate": None
            if stats is None or stats.mean_ratio is None
            else str(round(stats.mean_ratio, 6)),
            "margin": str(learnt.margin),
            "correction": str(learnt.correction),
            "applied": calibrated,
            "factor_over_encoding": str(round(estimate.factor * learnt.correction, 6))
            if calibrated
            else None,
        }
    bound = output_bound(body)
    request = _request_facts(dialect, body)
    price, in_rate, out_rate = hold_rates(load_prices(prices_file), model, tokens, request)
    worst: str | None = None
    if price is not None and bound is not None and in_rate is not None and out_rate is not None:
        worst = plain((Decimal(tokens) * in_rate + Decimal(bound) * out_rate) / MILLION)
    return {
        "model": model,
        "dialect": dialect,
        "input_tokens": tokens,
        "uncalibrated_input_tokens": estimate.input_tokens,
        "raw_tokens": estimate.raw_tokens,
        "encoding": estimate.encoding,
        "factor": str(estimate.factor),
        "family": estimate.family,
        "approximate": estimate.approximate or tokens != estimate.input_tokens,
        "basis": estimate.basis,
        "image_tokens": estimate.image_tokens,
        "images_unknown_size": estimate.images_unknown_size,
        "calibration": calibration,
        "max_output_tokens": bound,
        "worst_case_cost_usd": worst,
        "held_for": {
            "speed": request.speed,
            "inference_geo": request.inference_geo,
            "may_write_cache": request.may_write_cache,
            "cache_write_ttl": request.cache_write_ttl,
        },
        "price": None
        if price is None
        else {"model": price.model, "source": price.source, "version": price.version},
    }


def _request_facts(dialect: str, body: dict[str, Any]) -> RequestFacts:
    """What the request asks for that changes its rates, read as the gateway reads it."""
    from tokenward.guard.wire.endpoints import AnthropicMessages, Gemini, OpenAIChat, OpenAIResponses

    endpoints = {
        "openai-chat": OpenAIChat(),
        "openai-compatible": OpenAIChat(),
        "openai-responses": OpenAIResponses(),
        "anthropic-messages": AnthropicMessages(),
        "gemini": Gemini(),
    }
    endpoint = endpoints.get(dialect)
    return RequestFacts() if endpoint is None else endpoint.request_facts(body)


def estimate_command(
    request: Annotated[Path, typer.Argument(help="The request body (JSON) as it would be sent.")],
    model: Annotated[str | None, typer.Option(help="The model (default: the body's model).")] = None,
    dialect: Annotated[
        str | None,
        typer.Option(help="The request's wire format (default: detected from its shape)."),
    ] = None,
    ledger: Annotated[
        str | None, typer.Option(help="Ledger URL holding calibration observations (sqlite:///...).")
    ] = None,
    prices: Annotated[Path | None, typer.Option(help="Price-override file (YAML or JSON).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Estimate a request's prompt tokens before the call, and say how the figure was made."""
    from tokenward.cli.cost_cmd import _json_arg

    body = _json_arg(f"@{request}", "request")
    name = (
        model
        or (body.get("model") if isinstance(body, dict) else None)
        or (body.get("modelId") if isinstance(body, dict) else None)
    )
    if not name:
        raise ValidationError("give --model (the request body names none)", field="model")
    report = estimate_report(body, str(name), dialect=dialect, ledger=ledger, prices_file=prices)
    if as_json:
        print_json(report)
        return
    out.print(
        f"[bold]{report['input_tokens']:,}[/] input tokens for {report['model']} ({report['dialect']})"
        + (" [yellow](approximate)[/]" if report["approximate"] else " (exact)")
    )
    out.print(f"basis: {report['basis']}", highlight=False)
    if report["image_tokens"]:
        out.print(
            f"images: {report['image_tokens']:,} tokens"
            + (
                f", {report['images_unknown_size']} of unknown size (worst case)"
                if report["images_unknown_size"]
                else ""
            ),
            highlight=False,
        )
    calibration = report["calibration"]
    if calibration is not None:
        if calibration["applied"]:
            out.print(
                f"calibrated from {calibration['observations']} observed calls of {calibration['model_key']}: "
                f"x {calibration['correction']} (largest actual/estimate {calibration['max_actual_over_estimate']} "
                f"x margin {calibration['margin']}); {report['uncalibrated_input_tokens']:,} before calibration",
                highlight=False,
            )
        else:
            out.print(
                f"calibration: {calibration['observations']} observed calls of {calibration['model_key']}, not applied",
                highlight=False,
            )
    if report["max_output_tokens"] is not None:
        line = f"output bound: {report['max_output_tokens']:,} tokens"
        if report["worst_case_cost_usd"] is not None:
            line += f"; worst case ${report['worst_case_cost_usd']}"
        out.print(line, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command("estimate", cls=Command)(friendly(estimate_command))
