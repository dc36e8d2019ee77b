"""Where prices come from: a price-override table first, then the pinned ``genai-prices`` data.

``genai-prices`` is used for its bundled snapshot only (``genai_prices.data_snapshot``); tokenward
never starts its ``UpdatePrices`` task, so nothing is fetched at run time.

Model names are resolved the way providers and routers write them (see :func:`model_candidates`):
an exact override row first, then the name without a provider prefix (``google/``, ``@google/``,
``openrouter/google/``), then without a trailing date (``-2025-10-01``, ``-20251001``,
``@20250929``). genai-prices applies its own alias and snapshot rules to its rows. A genuinely
different model (``gpt-5.6-terra-mini`` against a ``gpt-5.6-terra`` row) never matches: it stays
visibly unpriced.

The override file (YAML or JSON)::

    unit: usd_per_million            # or usd_per_token (a per-token rate above $0.01 is refused)
    trust_reported_cost: false       # take a provider-reported cost (> 0) over tokens x price
    models:                          # rows for any provider
      my-model: {input: 3, cache_read: 0.3, output: 15, fees: {web_search: 0.01, request: 0.001}}
    providers:                       # rows that apply only to calls through that provider
      openrouter:
        trust_reported_cost: true
        models: {deepseek/deepseek-chat: {input: 0.28, cache_read: 0.028, output: 0.42}}
    default: {input: 15, output: 75} # the conservative stand-in for unknown models (policy "default")

Lookup order for a call: the provider's own rows (the call's provider, then the provider named in
the model id's prefix), then ``models``, then genai-prices; within each, every name candidate.

Prices that change over time (genai-prices' dated rows, DeepSeek's time-of-day rows) are looked
up at the call's instant; cached lookups are keyed by the rule that was active, so an off-peak and
a peak call of the same day never share a cached price.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tokenward.core.pricing import MILLION, RATE_KEYS, Cost, Price, Rate, Tiered, price_usage
from tokenward.core.usage import Usage
from tokenward.errors import ConfigError, UnpricedCall

__all__ = [
    "PER_TOKEN_SANITY_BOUND_USD",
    "UNKNOWN_MODEL_POLICIES",
    "PriceBook",
    "PriceContext",
    "UnknownModel",
    "model_candidates",
]

UNKNOWN_MODEL_POLICIES = ("flag", "default", "deny")
"""What to do with a model no price source knows: ``flag`` (cost unknown, the event records it as
unpriced), ``default`` (price it at the book's conservative ``default`` row, marked estimated) or
``deny`` (refuse the call before it is made)."""


class UnknownModel(UnpricedCall):
    """A call refused because its model has no known price and the policy is ``deny``.

    Attributes:
        model: the model requested.
        budget: ``"unknown_model"`` (the policy that refused it, in the budget slot the gateway's
            denial body reports).
    """

    def __init__(self, model: str) -> None:
        super().__init__(model, "unknown_model")
        self.args = (
            f"model {model!r} has no known price and the unknown-model policy is 'deny'; "
            "add it to the price-override file or set defaults.unknown_model to flag or default",
        )


PER_TOKEN_SANITY_BOUND_USD = Decimal("0.01")
"""No real model costs more than one US cent per token; a row above it is a unit mistake
(a per-million price typed as per-token) and is refused when the table is loaded."""

_BEDROCK_ID = re.compile(
    r"^(?:(?:us|eu|apac|jp|au|ca|global|us-gov)\.)?"
    r"(?:anthropic|meta|mistral|amazon|cohere|ai21|deepseek|openai|qwen|writer|twelvelabs)\.[a-z0-9]"
)
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
    "input_audio_mtok": "input_audio",
    "cache_audio_read_mtok": "cache_read_audio",
    "output_audio_mtok": "output_audio",
    "input_image_mtok": "input_image",
    "cache_image_read_mtok": "cache_read_image",
    "output_image_mtok": "output_image",
}


def _from_genai(value: Any) -> Rate:
    from genai_prices.types import TieredPrices

    if isinstance(value, TieredPrices):
        return Tiered(value.base, tuple((t.start, t.price) for t in value.tiers))
    return Decimal(value)


def _active_index(info: Any, at: datetime) -> int:
    """Which of a genai-prices model's conditional prices applies at ``at`` (-1: a flat price).

    Mirrors ``ModelInfo.get_prices``: the last conditional price whose constraint is active wins,
    the first one when none is.
    """
    prices = info.prices
    if not isinstance(prices, list):
        return -1
    for index in range(len(prices) - 1, -1, -1):
        constraint = prices[index].constraint
        if constraint is None or constraint.active(at):
            return index
    return 0


def _parse_models(models: Any, unit: str, where: str) -> dict[str, _OverrideRow]:
    if not isinstance(models, Mapping):
        raise ConfigError(f"{where}: 'models' must map model names to rates")
    return {str(name).lower(): _parse_row(str(name), row, unit) for name, row in models.items()}


_TOP_KEYS = {"models", "unit", "providers", "default", "trust_reported_cost"}
_MISSING = object()


class PriceBook:
    """Resolves model names to prices and prices usages; lookups are cached.

    Args:
        overrides: the parsed price-override file (see the module docstring for its keys).
        version: a label for the override data (a digest of the file).
        use_genai: whether to fall back on the pinned genai-prices table.

    Raises:
        ConfigError: a malformed or implausible override row (the message names it), or an
            unknown key.
    """

    def __init__(
        self, overrides: Mapping[str, Any] | None = None, *, version: str = "", use_genai: bool = True
    ) -> None:
        data = overrides or {}
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise ConfigError(f"price overrides: unknown keys {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
        unit = str(data.get("unit", "usd_per_million"))
        self._rows = _parse_models(data.get("models") or {}, unit, "price overrides")
        self._trust: dict[str | None, bool] = {
            None: _flag(data.get("trust_reported_cost"), "trust_reported_cost")
        }
        self._provider_rows: dict[str, dict[str, _OverrideRow]] = {}
        providers = data.get("providers") or {}
        if not isinstance(providers, Mapping):
            raise ConfigError("price overrides: 'providers' must map provider names to {models: ...}")
        for name, section in providers.items():
            where = f"providers.{name}"
            if not isinstance(section, Mapping) or set(section) - {"models", "unit", "trust_reported_cost"}:
                raise ConfigError(f"{where}: expected {{models: {{...}}, unit, trust_reported_cost}}")
            key = str(name).lower()
            self._provider_rows[key] = _parse_models(
                section.get("models") or {}, str(section.get("unit", unit)), where
            )
            if "trust_reported_cost" in section:
                self._trust[key] = _flag(section["trust_reported_cost"], f"{where}.trust_reported_cost")
        default = data.get("default")
        self.version = version or (
            hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]
            if data
            else ""
        )
        self.default_price: Price | None = None
        """The conservative stand-in row for unknown models (``default`` in the file), or None."""
        if default is not None:
            row = _parse_row("default", default, unit)
            if not row.rates.get("input") or not row.rates.get("output"):
                raise ConfigError("price overrides: default needs at least input and output rates")
            self.default_price = Price(
                model="default",
                source="default",
                version=self.version,
                rates=row.rates,
                fees=row.fees,
                estimated=True,
            )
        self.use_genai = use_genai
        self._cache: dict[tuple[Any, ...], Price | None] = {}
        self._genai_models: dict[tuple[str, str | None], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> PriceBook:
        """A book with no overrides: the pinned genai-prices table only."""
        return cls()

    def trusts_reported_cost(self, provider: str | None = None) -> bool:
        """Whether a provider-reported cost (> 0) is taken over tokens x price for ``provider``
        (``trust_reported_cost`` of its ``providers`` section, else of the file; default no)."""
        if provider is not None and provider.lower() in self._trust:
            return self._trust[provider.lower()]
        return self._trust[None]

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
            provider: a provider id hint (``openai``, ``anthropic``, ``openrouter``...), e.g. the
                upstream's kind: its ``providers`` rows are tried first, and genai-prices is
                asked for that provider's row.
            context: the service tier that served the call, batch, and the instant.
            served: the model the response names, when it differs; tried before ``model`` within
                each source, so an override row for either name wins over genai-prices.
        """
        context = context or PriceContext()
        names = tuple(dict.fromkeys(n for n in (served, model) if n))
        key = (names, provider, context.service_tier, context.batch)
        price = self._cache.get(key, _MISSING)
        if price is _MISSING:
            price = self._lookup_overrides(names, provider, context)
            with self._lock:
                self._cache[key] = price
        if price is not None or not self.use_genai:
            return price  # type: ignore[return-value]
        for name in names:
            found = self._find_genai(name, provider)
            if found is not None:
                return self._genai_price(found, context)
        return None

    def priced(
        self,
        model: str,
        *,
        policy: str = "flag",
        provider: str | None = None,
        context: PriceContext | None = None,
        served: str | None = None,
    ) -> Price | None:
        """:meth:`resolve`, then the unknown-model ``policy`` when nothing knows the model.

        Returns:
            The row; the ``default`` row (``estimated``) under ``default``; None under ``flag``.

        Raises:
            UnknownModel: under ``deny``.
            ConfigError: an unknown policy, or ``default`` without a ``default`` row.
        """
        if policy not in UNKNOWN_MODEL_POLICIES:
            raise ConfigError(
                f"unknown-model policy {policy!r}; use one of {', '.join(UNKNOWN_MODEL_POLICIES)}"
            )
        price = self.resolve(model, provider=provider, context=context, served=served)
        if price is not None or policy == "flag":
            return price
        if policy == "deny":
            raise UnknownModel(model)
        if self.default_price is None:
            raise ConfigError(
                "unknown-model policy 'default' needs a 'default' row in the price-override file"
            )
        return self.default_price

    def cost(
        self, usage: Usage, model: str, *, provider: str | None = None, context: PriceContext | None = None
    ) -> Cost:
        """Price ``usage`` for ``model``: :meth:`resolve` then :func:`price_usage`."""
        return price_usage(usage, self.resolve(model, provider=provider, context=context))

    def _lookup_overrides(
        self, names: tuple[str, ...], provider: str | None, context: PriceContext
    ) -> Price | None:
        sections: list[tuple[str | None, dict[str, _OverrideRow]]] = []
        prefixes = [part.lower() for n in names for part in n.lstrip("@").split("/")[:-1]]
        for hint in dict.fromkeys(h for h in (provider, *prefixes) if h):
            rows = self._provider_rows.get(hint.lower())
            if rows:
                sections.append((hint.lower(), rows))
        sections.append((None, self._rows))
        for section, rows in sections:
            for name in names:
                price = self._lookup_override(rows, name, context, section)
                if price is not None:
                    return price
        return None

    def _lookup_override(
        self, rows: Mapping[str, _OverrideRow], model: str, context: PriceContext, section: str | None
    ) -> Price | None:
        for candidate in model_candidates(model):
            row = rows.get(candidate.lower())
            if row is None:
                continue
            rates = dict(row.rates)
            if context.batch and row.batch is not None:
                rates.update(row.batch)
            if context.service_tier and context.service_tier in row.service_tiers:
                rates.update(row.service_tiers[context.service_tier])
            return Price(
                model=candidate,
                source="override",
                version=self.version,
                rates=rates,
                fees=row.fees,
                provider=section,
            )
        return None

    def _find_genai(self, model: str, provider: str | None) -> Any:
        """(provider, ModelInfo) from genai-prices for a name, cached; None when unknown."""
        key = (model, provider)
        found = self._genai_models.get(key, _MISSING)
        if found is not _MISSING:
            return found
        from genai_prices.data_snapshot import get_snapshot

        snapshot = get_snapshot()
        bedrock = "aws" if _BEDROCK_ID.match(model.lower()) else None  # anthropic.claude-...-v1:0
        hints = [h for h in (provider_prefix(model), provider, bedrock) if h] + [None]
        found = None
        for candidate in model_candidates(model):
            for hint in dict.fromkeys(hints):
                try:
                    found = snapshot.find_provider_model(candidate, None, hint, None)
                except LookupError:
                    continue
                break
            if found is not None:
                break
        with self._lock:
            self._genai_models[key] = found
        return found

    def _genai_price(self, found: Any, context: PriceContext) -> Price | None:
        import genai_prices

        found_provider, info = found
        at = context.at or datetime.now(tz=UTC)
        key = (
            "genai",
            found_provider.id,
            info.id,
            at.date(),
            _active_index(info, at),
            context.service_tier,
            context.batch,
        )
        cached = self._cache.get(key, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        price_context: dict[str, str] = {}
        if context.service_tier:
            price_context["service_tier"] = context.service_tier
        if context.batch:
            price_context["processing"] = "batch"
        model_price = info.get_prices(at, price_context or None)
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
        price: Price | None = None
        if "input" in rates or "output" in rates:  # else not token-priced (audio hours, characters)
            price = Price(
                model=info.id,
                source="genai-prices",
                version=genai_prices.__version__,
                rates=rates,
                fees=fees,
                inherit=True,
                provider=found_provider.id,
            )
        with self._lock:
            self._cache[key] = price
        return price


def _flag(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"price overrides: {where} must be true or false, got {value!r}")
    return value
