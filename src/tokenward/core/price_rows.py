"""Rows of the price-override file: parsing, validation, and the variants a row can price.

A row maps rate keys (:data:`~tokenward.core.pricing.RATE_KEYS`, USD per 1M tokens, or per token
with ``unit: usd_per_token``) to prices, with optional ``tiers``, ``service_tiers``, ``batch``,
``fees``, ``speed`` (rates of a speed such as Anthropic's fast mode) and
``inference_geo_multiplier`` (a multiplier on every token rate per inference geography), and the
per-unit prices of the images and audio endpoints: ``per_image`` (USD per image, by quality then
size: ``{standard: {1024x1024: 0.04}, hd: {1024x1024: 0.08}}``), ``per_minute`` (USD per minute of
input audio) and ``per_million_characters`` (USD per 1,000,000 input characters); ``unit`` does not
apply to them. See :mod:`tokenward.core.pricebook` for the file as a whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from tokenward.core.modifiers import builtin_geo_multiplier
from tokenward.core.pricing import MILLION, RATE_KEYS, Rate, Tiered
from tokenward.errors import ConfigError

__all__ = [
    "PER_TOKEN_SANITY_BOUND_USD",
    "OverrideRow",
    "modified_rates",
    "parse_flag",
    "parse_models",
    "parse_row",
    "price_number",
]

PER_TOKEN_SANITY_BOUND_USD = Decimal("0.01")
"""No real model costs more than one US cent per token; a row above it is a unit mistake
(a per-million price typed as per-token) and is refused when the table is loaded."""


def price_number(value: Any, where: str) -> Decimal:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a price, got {value!r}")
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ConfigError(f"{where}: a price must be a finite, non-negative number, got {value!r}")
    return number


def _per_million(value: Any, unit: str, where: str) -> Decimal:
    number = price_number(value, where)
    if unit == "usd_per_token":
        if number > PER_TOKEN_SANITY_BOUND_USD:
            raise ConfigError(
                f"{where}: {number} USD per token is above the {PER_TOKEN_SANITY_BOUND_USD} USD sanity "
                "bound; is this a price per million tokens? Use unit: usd_per_million"
            )
        return number * MILLION
    if unit != "usd_per_million":
        raise ConfigError(f"{where}: unknown unit {unit!r}; use usd_per_million or usd_per_token")
    if number > PER_TOKEN_SANITY_BOUND_USD * MILLION:
        raise ConfigError(
            f"{where}: {number} USD per million tokens is above the sanity bound of "
            f"{PER_TOKEN_SANITY_BOUND_USD * MILLION}; check the unit"
        )
    return number


_ROW_KEYS = {
    *RATE_KEYS,
    "tiers",
    "service_tiers",
    "batch",
    "fees",
    "per_call_fees_usd",
    "unit",
    "speed",
    "inference_geo_multiplier",
    "per_image",
    "per_minute",
    "per_million_characters",
}

UNIT_PRICE_SANITY_BOUND_USD = Decimal(1000)
"""No image, minute of audio or million characters costs more than this; a larger figure is a
unit mistake (a price per million images, say) and is refused when the table is loaded."""


def _unit_price(value: Any, where: str) -> Decimal:
    number = price_number(value, where)
    if number > UNIT_PRICE_SANITY_BOUND_USD:
        raise ConfigError(
            f"{where}: {number} USD is above the sanity bound of {UNIT_PRICE_SANITY_BOUND_USD}; check the unit"
        )
    return number


def _per_image(raw: Any, where: str) -> dict[str, dict[str, Decimal]]:
    """``{quality: {size: USD per image}}``."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(isinstance(v, Mapping) for v in raw.values()):
        raise ConfigError(
            f"{where}: expected {{quality: {{size: USD per image}}}}, e.g. {{standard: {{1024x1024: 0.04}}}}"
        )
    out: dict[str, dict[str, Decimal]] = {}
    for quality, sizes in raw.items():
        out[str(quality).lower()] = {
            str(size).lower(): _unit_price(usd, f"{where}.{quality}.{size}") for size, usd in sizes.items()
        }
    return out


def _rates(row: Mapping[str, Any], unit: str, where: str) -> dict[str, Decimal]:
    return {
        key: _per_million(row[key], unit, f"{where}.{key}") for key in RATE_KEYS if row.get(key) is not None
    }


def _tiered(base: dict[str, Decimal], tiers: Any, unit: str, where: str) -> dict[str, Rate]:
    if tiers is None:
        return dict(base)
    if not isinstance(tiers, list):
        raise ConfigError(f"{where}.tiers: expected a list of {{above_input_tokens: N, ...rates}}")
    parsed: list[tuple[int, dict[str, Decimal]]] = []
    for i, tier in enumerate(tiers):
        if not isinstance(tier, Mapping) or not isinstance(tier.get("above_input_tokens"), int):
            raise ConfigError(f"{where}.tiers[{i}]: needs an integer above_input_tokens")
        parsed.append((tier["above_input_tokens"], _rates(tier, unit, f"{where}.tiers[{i}]")))
    parsed.sort(key=lambda t: t[0])
    out: dict[str, Rate] = {}
    for key in RATE_KEYS:
        if key not in base:
            if any(key in rates for _, rates in parsed):
                raise ConfigError(f"{where}.tiers: {key} has tier rates but no base rate")
            continue
        steps: list[tuple[int, Decimal]] = []
        current = base[key]
        for threshold, rates in parsed:
            current = rates.get(key, base[key])
            steps.append((threshold, current))
        out[key] = Tiered(base[key], tuple(steps)) if steps else base[key]
    return out


@dataclass(frozen=True, slots=True)
class OverrideRow:
    rates: dict[str, Rate]
    fees: dict[str, Decimal]
    service_tiers: dict[str, dict[str, Rate]]
    batch: dict[str, Rate] | None
    speeds: dict[str, dict[str, Rate]]
    geo_multipliers: dict[str, Decimal]
    per_image: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    per_minute: Decimal | None = None
    per_million_characters: Decimal | None = None


def _variants(raw: Any, unit: str, where: str) -> dict[str, dict[str, Rate]]:
    """``{name: rates}`` of a ``service_tiers`` or ``speed`` mapping."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected {{name: rates}}")
    out: dict[str, dict[str, Rate]] = {}
    for name, rates in raw.items():
        if not isinstance(rates, Mapping):
            raise ConfigError(f"{where}.{name}: expected a mapping of rates")
        unknown = set(rates) - {*RATE_KEYS, "tiers"}
        if unknown:
            raise ConfigError(f"{where}.{name}: unknown keys {sorted(unknown)}; known: {sorted(RATE_KEYS)}")
        out[str(name).lower()] = _tiered(
            _rates(rates, unit, f"{where}.{name}"), rates.get("tiers"), unit, where
        )
    return out


def _multipliers(raw: Any, where: str) -> dict[str, Decimal]:
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected {{geography: multiplier}}, e.g. {{us: 1.1}}")
    out = {}
    for name, value in raw.items():
        number = price_number(value, f"{where}.{name}")
        if number <= 0 or number > 100:
            raise ConfigError(f"{where}.{name}: a multiplier must be above 0 and at most 100, got {value!r}")
        out[str(name).lower()] = number
    return out


def parse_row(model: str, row: Any, default_unit: str) -> OverrideRow:
    where = f"models.{model}"
    if not isinstance(row, Mapping):
        raise ConfigError(f"{where}: expected a mapping of rates")
    unknown = set(row) - _ROW_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_ROW_KEYS)}")
    unit = str(row.get("unit", default_unit))
    rates = _tiered(_rates(row, unit, where), row.get("tiers"), unit, where)
    fees_raw = row.get("fees", row.get("per_call_fees_usd")) or {}
    if not isinstance(fees_raw, Mapping):
        raise ConfigError(f"{where}.fees: expected {{tool: USD per call}}")
    fees = {str(k): price_number(v, f"{where}.fees.{k}") for k, v in fees_raw.items()}
    tiers_raw = row.get("service_tiers") or {}
    if not isinstance(tiers_raw, Mapping):
        raise ConfigError(f"{where}.service_tiers: expected {{tier: rates}}")
    service_tiers = {
        str(name): _tiered(_rates(v, unit, f"{where}.service_tiers.{name}"), v.get("tiers"), unit, where)
        for name, v in tiers_raw.items()
        if isinstance(v, Mapping)
    }
    speeds = _variants(row.get("speed"), unit, f"{where}.speed")
    geo = _multipliers(row.get("inference_geo_multiplier"), f"{where}.inference_geo_multiplier")
    batch_raw = row.get("batch")
    batch = (
        _tiered(_rates(batch_raw, unit, f"{where}.batch"), batch_raw.get("tiers"), unit, where)
        if isinstance(batch_raw, Mapping)
        else None
    )
    return OverrideRow(
        rates,
        fees,
        service_tiers,
        batch,
        speeds,
        geo,
        _per_image(row.get("per_image"), f"{where}.per_image"),
        None if row.get("per_minute") is None else _unit_price(row["per_minute"], f"{where}.per_minute"),
        None
        if row.get("per_million_characters") is None
        else _unit_price(row["per_million_characters"], f"{where}.per_million_characters"),
    )


def parse_models(models: Any, unit: str, where: str) -> dict[str, OverrideRow]:
    if not isinstance(models, Mapping):
        raise ConfigError(f"{where}: 'models' must map model names to rates")
    return {str(name).lower(): parse_row(str(name), row, unit) for name, row in models.items()}


def _scaled(rate: Rate, factor: Decimal) -> Rate:
    if isinstance(rate, Tiered):
        return Tiered(rate.base * factor, tuple((at, r * factor) for at, r in rate.tiers))
    return rate * factor


def modified_rates(
    model: str,
    rates: dict[str, Rate],
    speeds: Mapping[str, dict[str, Rate]],
    geo_multipliers: Mapping[str, Decimal],
    *,
    speed: str | None,
    geo: str | None,
) -> tuple[dict[str, Rate], tuple[str, ...], dict[str, str]]:
    """The row's rates at a speed (None: standard) and inference geography (None: unstated):
    (rates, what cannot be priced, modifiers applied).

    A speed replaces the rates with its own (prompt-caching multipliers are already in them); a
    speed the row does not know is unpriced. A geography multiplies every token rate by the row's
    ``inference_geo_multiplier``, else by Anthropic's documented multiplier for Claude
    (:func:`builtin_geo_multiplier`); a geography with no known multiplier is unpriced.
    """
    unpriced: list[str] = []
    modifiers: dict[str, str] = {}
    if speed is not None:
        if speed in speeds:
            rates = dict(speeds[speed])
            modifiers["speed"] = speed
        else:
            unpriced.append(f"speed:{speed}")
    if geo is not None:
        factor = geo_multipliers.get(geo, builtin_geo_multiplier(model, geo))
        if factor is None:
            unpriced.append(f"inference_geo:{geo}")
        elif factor != 1:
            rates = {key: _scaled(rate, factor) for key, rate in rates.items()}
            modifiers["inference_geo"] = geo
            modifiers["inference_geo_multiplier"] = str(factor)
    return rates, tuple(unpriced), modifiers


def parse_flag(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"price overrides: {where} must be true or false, got {value!r}")
    return value
