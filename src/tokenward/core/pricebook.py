"""Where prices come from: a price-override table first, then the pinned ``genai-prices`` data.

``genai-prices`` is used for its bundled snapshot only (``genai_prices.data_snapshot``); tokenward
never starts its ``UpdatePrices`` task, so nothing is fetched at run time.

Model names are resolved the way providers and routers write them (see :func:`model_candidates`):
an exact override row first, then the name without a provider prefix (``google/``, ``@google/``,
``openrouter/google/``), then without a trailing date (``-2025-10-01``, ``-20251001``,
``@20250929``). genai-prices applies its own alias and snapshot rules to its rows. A genuinely
different model (``gpt-5.6-terra-mini`` against a ``gpt-5.6-terra`` row) never matches: it stays
visibly unpriced.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tokenward.core.pricing import MILLION, RATE_KEYS, Cost, Price, Rate, Tiered, price_usage
from tokenward.core.usage import Usage
from tokenward.errors import ConfigError

__all__ = ["PER_TOKEN_SANITY_BOUND_USD", "PriceBook", "PriceContext", "model_candidates"]

PER_TOKEN_SANITY_BOUND_USD = Decimal("0.01")
"""No real model costs more than one US cent per token; a row above it is a unit mistake
(a per-million price typed as per-token) and is refused when the table is loaded."""

_DATE_SUFFIX = re.compile(r"(?:[-@](?:20\d{2}-\d{2}-\d{2}|20\d{6}))$")


def model_candidates(model: str) -> list[str]:
    """The names a model id may be priced under, most specific first.

    ``"openrouter/google/gemini-3-pro-preview"`` gives the full name, ``"gemini-3-pro-preview"``;
    ``"claude-haiku-4-5-20251001"`` gives itself and ``"claude-haiku-4-5"``. Only a provider prefix
    and a trailing date are ever removed.
    """
    name = model.strip()
    out = [name]
    bare = name.lstrip("@").rsplit("/", 1)[-1]
    if bare != name:
        out.append(bare)
    for candidate in list(out):
        undated = _DATE_SUFFIX.sub("", candidate)
        if undated != candidate and undated:
            out.append(undated)
    return list(dict.fromkeys(out))


def provider_prefix(model: str) -> str | None:
    """The provider named in front of a model id (``"google"`` for ``"@google/gemini-3-pro"``)."""
    parts = model.lstrip("@").split("/")
    if len(parts) < 2:
        return None
    return parts[-2].lower()


@dataclass(frozen=True, slots=True)
class PriceContext:
    """Facts about a call that select a price variant.

    Attributes:
        service_tier: the tier the *response* says served the call (``flex``, ``priority``,
            ``default``); the tier requested is never used.
        batch: the call went through a batch API.
        at: when the call was made (prices that change over time are looked up at this instant).
    """

    service_tier: str | None = None
    batch: bool = False
    at: datetime | None = None


def _decimal(value: Any, where: str) -> Decimal:
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
    number = _decimal(value, where)
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


_ROW_KEYS = {*RATE_KEYS, "tiers", "service_tiers", "batch", "fees", "per_call_fees_usd", "unit"}


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
class _OverrideRow:
    rates: dict[str, Rate]
    fees: dict[str, Decimal]
    service_tiers: dict[str, dict[str, Rate]]
    batch: dict[str, Rate] | None


def _parse_row(model: str, row: Any, default_unit: str) -> _OverrideRow:
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
    fees = {str(k): _decimal(v, f"{where}.fees.{k}") for k, v in fees_raw.items()}
    tiers_raw = row.get("service_tiers") or {}
    if not isinstance(tiers_raw, Mapping):
        raise ConfigError(f"{where}.service_tiers: expected {{tier: rates}}")
    service_tiers = {
        str(name): _tiered(_rates(v, unit, f"{where}.service_tiers.{name}"), v.get("tiers"), unit, where)
        for name, v in tiers_raw.items()
        if isinstance(v, Mapping)
    }
    batch_raw = row.get("batch")
    batch = (
        _tiered(_rates(batch_raw, unit, f"{where}.batch"), batch_raw.get("tiers"), unit, where)
        if isinstance(batch_raw, Mapping)
        else None
    )
    return _OverrideRow(rates, fees, service_tiers, batch)


_GENAI_KEYS = {
    "input_mtok": "input",
    "cache_read_mtok": "cache_read",
    "cache_write_mtok": "cache_write",
    "cache_write_5m_mtok": "cache_write_5m",
    "cache_write_1h_mtok": "cache_write_1h",
    "output_mtok": "output",
    "output_reasoning_mtok": "reasoning",
}


def _from_genai(value: Any) -> Rate:
    from genai_prices.types import TieredPrices

    if isinstance(value, TieredPrices):
        return Tiered(value.base, tuple((t.start, t.price) for t in value.tiers))
    return Decimal(value)


class PriceBook:
    """Resolves model names to prices and prices usages; lookups are cached.

    Args:
        overrides: the parsed price-override file (``{"models": {name: row}, "unit": ...}``).
        version: a label for the override data (a digest of the file).
        use_genai: whether to fall back on the pinned genai-prices table.

    Raises:
        ConfigError: a malformed or implausible override row (the message names it).
    """

    def __init__(
        self, overrides: Mapping[str, Any] | None = None, *, version: str = "", use_genai: bool = True
    ) -> None:
        data = overrides or {}
        unknown = set(data) - {"models", "unit"}
        if unknown:
            raise ConfigError(
                f"price overrides: unknown keys {sorted(unknown)}; expected 'models' (and 'unit')"
            )
        models = data.get("models") or {}
        if not isinstance(models, Mapping):
            raise ConfigError("price overrides: 'models' must map model names to rates")
        unit = str(data.get("unit", "usd_per_million"))
        self._rows = {str(name).lower(): _parse_row(str(name), row, unit) for name, row in models.items()}
        self.version = version or (
            hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]
            if data
            else ""
        )
        self.use_genai = use_genai
        self._cache: dict[tuple[tuple[str, ...], str | None, PriceContext], Price | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> PriceBook:
        """A book with no overrides: the pinned genai-prices table only."""
        return cls()

    def resolve(
        self,
        model: str,
        *,
        provider: str | None = None,
        context: PriceContext | None = None,
        served: str | None = None,
    ) -> Price | None:
        """The price row for ``model``, or None when no source knows it.

        Args:
            model: the model id as a client or provider wrote it.
            provider: a provider id hint (``openai``, ``anthropic``, ``google``...), e.g. the
                upstream's kind; a provider prefix in the model id wins over it.
            context: the service tier that served the call, batch, and the instant.
            served: the model the response names, when it differs; tried before ``model`` within
                each source, so an override row for either name wins over genai-prices.
        """
        context = context or PriceContext()
        day = context.at.date() if context.at else None
        key_ctx = replace(context, at=datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None)
        names = tuple(dict.fromkeys(n for n in (served, model) if n))
        key = (names, provider, key_ctx)
        cached = self._cache.get(key, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        price = next((p for p in (self._lookup_override(n, key_ctx) for n in names) if p), None)
        if price is None and self.use_genai:
            price = next((p for p in (self._lookup_genai(n, provider, key_ctx) for n in names) if p), None)
        with self._lock:
            self._cache[key] = price
        return price

    def cost(
        self, usage: Usage, model: str, *, provider: str | None = None, context: PriceContext | None = None
    ) -> Cost:
        """Price ``usage`` for ``model``: :meth:`resolve` then :func:`price_usage`."""
        return price_usage(usage, self.resolve(model, provider=provider, context=context))

    def _lookup_override(self, model: str, context: PriceContext) -> Price | None:
        for candidate in model_candidates(model):
            row = self._rows.get(candidate.lower())
            if row is None:
                continue
            rates = dict(row.rates)
            if context.batch and row.batch is not None:
                rates.update(row.batch)
            if context.service_tier and context.service_tier in row.service_tiers:
                rates.update(row.service_tiers[context.service_tier])
            return Price(model=candidate, source="override", version=self.version, rates=rates, fees=row.fees)
        return None

    def _lookup_genai(self, model: str, provider: str | None, context: PriceContext) -> Price | None:
        import genai_prices
        from genai_prices.data_snapshot import get_snapshot

        snapshot = get_snapshot()
        hints = [h for h in (provider_prefix(model), provider) if h] + [None]
        for candidate in model_candidates(model):
            for hint in dict.fromkeys(hints):
                try:
                    found_provider, info = snapshot.find_provider_model(candidate, None, hint, None)
                except LookupError:
                    continue
                price_context: dict[str, str] = {}
                if context.service_tier:
                    price_context["service_tier"] = context.service_tier
                if context.batch:
                    price_context["processing"] = "batch"
                at = context.at or datetime.now(tz=UTC)
                model_price = info.get_prices(at, price_context or None)  # type: ignore[arg-type]
                rates: dict[str, Rate] = {}
                fees: dict[str, Decimal] = {}
                for attr, value in vars(model_price).items():
                    if value is None:
                        continue
                    if attr in _GENAI_KEYS:
                        rates[_GENAI_KEYS[attr]] = _from_genai(value)
                    elif attr == "web_searches_kcount":
                        fees["web_search"] = Decimal(value) / 1000
                    elif attr == "requests_kcount":
                        fees["request"] = Decimal(value) / 1000
                if "input" not in rates and "output" not in rates:
                    return None  # not a token-priced model (audio hours, characters...)
                return Price(
                    model=info.id,
                    source="genai-prices",
                    version=genai_prices.__version__,
                    rates=rates,
                    fees=fees,
                    inherit=True,
                    provider=found_provider.id,
                )
        return None
