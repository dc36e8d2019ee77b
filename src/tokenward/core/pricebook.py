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

Row keys besides the rates: ``tiers``, ``service_tiers: {flex: {...}}``, ``batch: {...}``,
``fees``, ``speed: {fast: {...rates}}`` (the rates of a speed: they replace the row's rates, and a
class the speed does not list is unpriced at that speed, never billed at the standard rate) and
``inference_geo_multiplier: {us: 1.1}`` (a multiplier on every token rate when the response
reports that geography). Without ``inference_geo_multiplier``, Claude rows take Anthropic's
documented 1.1x for ``us`` (:func:`~tokenward.core.modifiers.builtin_geo_multiplier`), and a
geography no rule knows leaves the cost unknown.

Per-unit keys (``per_image``, ``per_minute``, ``per_million_characters``; see
:mod:`tokenward.core.price_rows`) price the images and audio endpoints. genai-prices' per-character
(``tts-1``) and per-audio-hour (``whisper-1``) rows are read as such, and DALL·E's per-image prices,
which genai-prices lacks, are built in (:data:`tokenward.core.media.DALL_E_PRICES`, price source
``builtin``).

Lookup order for a call: the provider's own rows (the call's provider, then the provider named in
the model id's prefix), then ``models``, then genai-prices, then the built-in rows; within each,
every name candidate.

Cloud platforms (:meth:`PriceBook.derive`): calls through Azure OpenAI are priced at the
``azure`` rows (the override file's ``providers.azure`` section, then genai-prices' own Azure
rows) where there is one; genai-prices' Azure table otherwise falls back on the OpenAI row, which
is Azure's *global* deployment price ("prices for Regional models are often slightly higher",
genai-prices' Azure notes): such a price is multiplied by the deployment's ``price_multiplier``
and marked estimated.

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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokenward.core.media import BUILTIN_PRICES_VERSION, builtin_image_prices
from tokenward.core.modifiers import RequestFacts, normalise_geo, normalise_speed
from tokenward.core.price_rows import (
    PER_TOKEN_SANITY_BOUND_USD,
    OverrideRow,
    modified_rates,
    parse_flag,
    parse_models,
    parse_row,
)
from tokenward.core.pricing import Cost, Price, Rate, Tiered, price_usage, reservation_rates
from tokenward.core.usage import Usage
from tokenward.errors import ConfigError, UnpricedCall

__all__ = [
    "PER_TOKEN_SANITY_BOUND_USD",
    "UNKNOWN_MODEL_POLICIES",
    "VERTEX_REGIONAL_UPLIFT",
    "PriceBook",
    "PriceContext",
    "UnknownModel",
    "canonical_model",
    "hold_context",
    "hold_rates",
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


def canonical_model(model: str) -> str:
    """One name per model, by the price resolution rule: the id without surrounding space, without
    its provider prefix (``google/``, ``@google/``, ``openrouter/google/``), lower-cased.

    ``"google/gemini-3-pro-preview"`` and ``"Gemini-3-Pro-Preview"`` both give
    ``"gemini-3-pro-preview"``. A trailing date is kept: a dated snapshot can have a price of its
    own (``gpt-4o-2024-05-13``). Reports group by this name; usage events keep the id the client
    or provider wrote.
    """
    bare = model.strip().lstrip("@").rsplit("/", 1)[-1]
    return (bare or model.strip()).lower()


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
        speed: the speed the response says served the call (Anthropic ``usage.speed``:
            ``"fast"``, ``"standard"``); for a hold, the speed the request asks for.
        inference_geo: where the response says inference ran (Anthropic
            ``usage.inference_geo``: ``"us"``, ``"global"``); for a hold, the geography asked for.
        cache_write_ttl: the cache-write lifetime the request asked for (``"5m"``, ``"1h"``), or
            None when unknown; prices writes reported without their lifetime split.
        image_size / image_quality: the size and quality of the images generated (the answer's,
            else the request's), for rows priced per image.
    """

    service_tier: str | None = None
    batch: bool = False
    at: datetime | None = None
    speed: str | None = None
    inference_geo: str | None = None
    cache_write_ttl: str | None = None
    image_size: str | None = None
    image_quality: str | None = None

    @property
    def image(self) -> tuple[str | None, str | None]:
        """(quality, size) of the images generated."""
        return self.image_quality, self.image_size

    @property
    def fast(self) -> str | None:
        """The speed to price, when it is not the standard one (None for standard or unknown)."""
        speed = normalise_speed(self.speed)
        return None if speed in (None, "standard") else speed


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
        self._rows = parse_models(data.get("models") or {}, unit, "price overrides")
        self._trust: dict[str | None, bool] = {
            None: parse_flag(data.get("trust_reported_cost"), "trust_reported_cost")
        }
        self._provider_rows: dict[str, dict[str, OverrideRow]] = {}
        providers = data.get("providers") or {}
        if not isinstance(providers, Mapping):
            raise ConfigError("price overrides: 'providers' must map provider names to {models: ...}")
        for name, section in providers.items():
            where = f"providers.{name}"
            if not isinstance(section, Mapping) or set(section) - {"models", "unit", "trust_reported_cost"}:
                raise ConfigError(f"{where}: expected {{models: {{...}}, unit, trust_reported_cost}}")
            key = str(name).lower()
            self._provider_rows[key] = parse_models(
                section.get("models") or {}, str(section.get("unit", unit)), where
            )
            if "trust_reported_cost" in section:
                self._trust[key] = parse_flag(section["trust_reported_cost"], f"{where}.trust_reported_cost")
        default = data.get("default")
        self.version = version or (
            hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]
            if data
            else ""
        )
        self.default_price: Price | None = None
        """The conservative stand-in row for unknown models (``default`` in the file), or None."""
        if default is not None:
            row = parse_row("default", default, unit)
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
        self.override_tiers: frozenset[str] = frozenset(
            tier
            for rows in (self._rows, *self._provider_rows.values())
            for row in rows.values()
            for tier in row.service_tiers
        )
        """Every service tier an override row prices (for holds at the dearest tier)."""
        self._cache: dict[tuple[Any, ...], Price | None] = {}
        self._derived: dict[str, tuple[str, Decimal, bool]] = {}
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

    def derive(
        self, name: str, base: str, multiplier: Decimal | int | str = 1, *, own_rows_too: bool = False
    ) -> None:
        """Price calls made under the provider id ``name`` (``azure:<deployment>``) at ``base``'s
        own rows (``azure``) when it has one for the model, else at the row ``base`` falls back
        on (genai-prices' ``fallback_model_providers``, e.g. OpenAI's for Azure) times
        ``multiplier``, marked ``estimated``. With ``own_rows_too`` the multiplier is a documented
        surcharge on every row (not estimated): Vertex AI's regional endpoints for Claude. The
        provider ids ``azure`` (itself, 1) and ``google:regional`` (``google``, 1.1 on every row)
        are known without being registered.

        Raises:
            ConfigError: a multiplier that is not a positive number.
        """
        try:
            factor = Decimal(str(multiplier))
        except ArithmeticError:
            factor = Decimal(0)
        if not factor.is_finite() or factor <= 0:
            raise ConfigError(f"price_multiplier of {name!r} must be a positive number, got {multiplier!r}")
        with self._lock:
            self._derived[name.lower()] = (base.lower(), factor, own_rows_too)

    def _derivation(self, provider: str | None) -> tuple[str, Decimal, bool] | None:
        if provider is None:
            return None
        key = provider.lower()
        return self._derived.get(key) or _BUILTIN_DERIVED.get(key)

    def resolve(
        self,
        model: str,
        *,
        provider: str | None = None,
        context: PriceContext | None = None,
        served: str | None = None,
    ) -> Price | None:
        """The price row for ``model``, or None when no source knows it.

        A provider registered with :meth:`derive` (and ``azure``) is priced at its base
        platform's own row, else at the row the platform falls back on times its multiplier
        (``estimated``).

        Args:
            model: the model id as a client or provider wrote it.
            provider: a provider id hint (``openai``, ``anthropic``, ``openrouter``...), e.g. the
                upstream's kind: its ``providers`` rows are tried first, and genai-prices is
                asked for that provider's row.
            context: the service tier that served the call, batch, and the instant.
            served: the model the response names, when it differs; tried before ``model`` within
                each source, so an override row for either name wins over genai-prices.
        """
        derivation = self._derivation(provider)
        if derivation is not None:
            return self._derived_price(model, derivation, context, served)
        return self._resolve(model, provider, context, served)

    def _resolve(
        self, model: str, provider: str | None, context: PriceContext | None, served: str | None
    ) -> Price | None:
        context = context or PriceContext()
        names = tuple(dict.fromkeys(n for n in (served, model) if n))
        key = (
            names,
            provider,
            context.service_tier,
            context.batch,
            context.fast,
            normalise_geo(context.inference_geo),
        )
        price = self._cache.get(key, _MISSING)
        if price is _MISSING:
            price = self._lookup_overrides(names, provider, context)
            with self._lock:
                self._cache[key] = price
        if price is not None:
            return price  # type: ignore[return-value]
        for name in names if self.use_genai else ():
            found = self._find_genai(name, provider)
            if found is not None:
                genai = self._genai_price(found, context)
                if genai is not None:
                    return genai
        return _builtin_price(names)

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
        price = self.resolve(model, provider=provider, context=context)
        context = context or PriceContext()
        return price_usage(usage, price, cache_write_ttl=context.cache_write_ttl, image=context.image)

    def _derived_price(
        self,
        model: str,
        derivation: tuple[str, Decimal, bool],
        context: PriceContext | None,
        served: str | None,
    ) -> Price | None:
        base, factor, own_rows_too = derivation
        price = self._resolve(model, base, context, served)
        if price is None:
            return None
        if own_rows_too:
            return _scaled(price, factor, estimated=price.estimated, label="regional_uplift")
        if self._own_row(price, base):
            return price
        return _scaled(price, factor)

    def _own_row(self, price: Price, base: str) -> bool:
        """Whether ``price`` is ``base``'s own row (not one it falls back on)."""
        if price.source == "override":
            return price.provider == base
        if price.source != "genai-prices":
            return False
        from genai_prices.data_snapshot import get_snapshot

        own = next((p for p in get_snapshot().providers if p.id == base), None)
        return own is not None and any(m.id == price.model for m in own.models)

    def _lookup_overrides(
        self, names: tuple[str, ...], provider: str | None, context: PriceContext
    ) -> Price | None:
        sections: list[tuple[str | None, dict[str, OverrideRow]]] = []
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
        self, rows: Mapping[str, OverrideRow], model: str, context: PriceContext, section: str | None
    ) -> Price | None:
        for candidate in model_candidates(model):
            row = rows.get(candidate.lower())
            if row is None:
                continue
            rates: dict[str, Rate] = dict(row.rates)
            if context.batch and row.batch is not None:
                rates.update(row.batch)
            if context.service_tier and context.service_tier in row.service_tiers:
                rates.update(row.service_tiers[context.service_tier])
            rates, unpriced, modifiers = modified_rates(
                candidate,
                rates,
                row.speeds,
                row.geo_multipliers,
                speed=context.fast,
                geo=normalise_geo(context.inference_geo),
            )
            return Price(
                model=candidate,
                source="override",
                version=self.version,
                rates=rates,
                fees=row.fees,
                provider=section,
                unpriced=unpriced,
                modifiers=modifiers,
                per_image=row.per_image,
                per_minute=row.per_minute,
                per_million_characters=row.per_million_characters,
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
        from genai_prices.types import TieredPrices

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
            context.fast,
            normalise_geo(context.inference_geo),
        )
        cached = self._cache.get(key, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        price_context: dict[str, str] = {}
        if context.service_tier:
            price_context["service_tier"] = context.service_tier
        if context.batch:
            price_context["processing"] = "batch"
        fast = context.fast
        speeds: dict[str, dict[str, Rate]] = {}
        if fast is not None and _has_variant(info, "speed", fast, at):
            price_context["speed"] = fast
            speeds[fast] = {}  # filled below from the fast variant's resolved prices
        model_price = info.get_prices(at, price_context or None)
        rates: dict[str, Rate] = {}
        fees: dict[str, Decimal] = {}
        units: dict[str, Decimal] = {}
        for attr, value in vars(model_price).items():
            if value is None:
                continue
            if attr in _GENAI_KEYS:
                rates[_GENAI_KEYS[attr]] = _from_genai(value)
            elif attr == "web_searches_kcount":
                fees["web_search"] = Decimal(value) / 1000
            elif attr == "requests_kcount":
                fees["request"] = Decimal(value) / 1000
            elif attr in ("input_audio_hours", "audio_hours") and not isinstance(value, TieredPrices):
                units.setdefault("per_minute", Decimal(value) / 60)  # the input-audio price first
            elif attr == "input_mchars" and not isinstance(value, TieredPrices):
                units["per_million_characters"] = Decimal(value)
        if rates and units:  # a row that bills tokens too: its per-unit prices are not read
            units = {}
        price: Price | None = None
        if units:  # billed per audio hour (whisper-1) or per character (tts-1)
            price = Price(
                model=info.id,
                source="genai-prices",
                version=genai_prices.__version__,
                rates={},
                provider=found_provider.id,
                per_minute=units.get("per_minute"),
                per_million_characters=units.get("per_million_characters"),
            )
        elif "input" in rates or "output" in rates:
            if fast in speeds:
                speeds[fast] = rates  # genai-prices already resolved the speed's variant
            rates, unpriced, modifiers = modified_rates(
                info.id, rates, speeds, {}, speed=fast, geo=normalise_geo(context.inference_geo)
            )
            price = Price(
                model=info.id,
                source="genai-prices",
                version=genai_prices.__version__,
                rates=rates,
                fees=fees,
                inherit=True,
                provider=found_provider.id,
                unpriced=unpriced,
                modifiers=modifiers,
            )
        with self._lock:
            self._cache[key] = price
        return price


VERTEX_REGIONAL_UPLIFT = Decimal("1.1")
"""Claude on Vertex AI's regional (and multi-region) endpoints costs 10 % more than on the global
endpoint, from Claude Sonnet 4.5 on ("Regional endpoints include a 10% pricing premium over
global endpoints", https://platform.claude.com/docs/en/build-with-claude/claude-on-vertex-ai,
read 2026-12-07)."""

_BUILTIN_DERIVED: dict[str, tuple[str, Decimal, bool]] = {
    "azure": ("azure", Decimal(1), False),
    "google:regional": ("google", VERTEX_REGIONAL_UPLIFT, True),
}
"""Provider ids priced as :meth:`PriceBook.derive` rules without being registered."""


def _scaled(
    price: Price, factor: Decimal, *, estimated: bool = True, label: str = "price_multiplier"
) -> Price:
    """``price`` with every token rate times ``factor``: marked estimated by default (a fallback
    row scaled by a configured guess), else a documented surcharge recorded under ``label``."""

    def rate(value: Rate) -> Rate:
        if isinstance(value, Tiered):
            return Tiered(value.base * factor, tuple((start, p * factor) for start, p in value.tiers))
        return value * factor

    return replace(
        price,
        rates={k: rate(v) for k, v in price.rates.items()},
        estimated=estimated,
        modifiers={**price.modifiers, label: str(factor)},
    )


def _builtin_price(names: tuple[str, ...]) -> Price | None:
    """A built-in row (DALL·E per-image prices) for the first name that has one, or None."""
    for name in names:
        for candidate in model_candidates(name):
            table = builtin_image_prices(candidate)
            if table is not None:
                return Price(
                    model=candidate.rsplit("/", 1)[-1].lower(),
                    source="builtin",
                    version=BUILTIN_PRICES_VERSION,
                    rates={},
                    provider="openai",
                    per_image=table,
                )
    return None


def _has_variant(info: Any, key: str, value: str, at: datetime) -> bool:
    """Whether a genai-prices model has a price variant for ``key == value`` active at ``at``."""
    for variant in getattr(info, "price_variants", None) or ():
        constraint = variant.constraint
        if variant.when.get(key) == value and (constraint is None or constraint.active(at)):
            return True
    return False


HOLD_TIERS = ("default", "flex", "scale", "priority", "fast")
"""Service tiers a hold at "the model's dearest tier" compares, besides the ones override rows
name: OpenAI's ``default``, ``flex``, ``scale`` and ``priority``
(https://platform.openai.com/docs/api-reference/responses/create#responses-create-service_tier,
read 2026-12-08) and the ``fast`` label genai-prices prices like ``priority``."""


def hold_context(
    request: RequestFacts, at: datetime | None = None, service_tier: str | None = None
) -> PriceContext:
    """The price context a hold is priced in: the speed and inference geography the request asks
    for (the response may still report a cheaper one; the hold covers the dearer), the
    cache-write lifetime it asks for, and the service tier the hold is priced at."""
    return PriceContext(
        service_tier=service_tier,
        at=at,
        speed=request.speed,
        inference_geo=request.inference_geo,
        cache_write_ttl=request.cache_write_ttl,
    )


def hold_rates(
    prices: PriceBook,
    model: str,
    input_tokens: int,
    request: RequestFacts,
    *,
    provider: str | None = None,
    policy: str = "flag",
    at: datetime | None = None,
    default_tier: str | None = None,
) -> tuple[Price | None, Decimal | None, Decimal | None]:
    """The worst-case rates to hold a call at, for what its request asks: (row, input-side rate,
    output-side rate), USD per 1M tokens.

    Fast mode asked: the row's fast rates (cache multipliers included); US-only inference asked:
    every rate x the geography's multiplier (1.1 on Claude 4.6 and later); cache writes possible:
    the input side is the dearest of input and the write rates the request can be billed at
    (OpenAI GPT-5.6: 1.25x input; Anthropic: 1.25x for 5-minute writes, 2x for 1-hour ones, the
    1-hour rate left out only when every ``cache_control`` asks for 5 minutes). See
    :func:`~tokenward.core.pricing.reservation_rates`.

    Service tier: the tier the request names (``request.service_tier``), else ``default_tier``
    (the tier the upstream is configured to serve at), else the dearest of every tier the
    model's row prices (:data:`HOLD_TIERS` and the tiers override rows name): OpenAI serves an
    omitted or ``"auto"`` tier at the project's configured tier, which may be ``priority``
    (https://platform.openai.com/docs/api-reference/chat/create#chat-create-service_tier, read
    2026-12-08).

    Returns:
        The row (None for an unknown model under the ``flag`` policy) and the two rates; a rate
        is None when the row has none, and both are when the row cannot price what the request
        asks for (a speed it has no rates for): the call is then unpriced.

    Raises:
        UnknownModel: ``policy="deny"`` and no source knows the model.
        ConfigError: as :meth:`PriceBook.priced`.
    """
    chosen = request.service_tier or default_tier
    tiers: tuple[str | None, ...] = (
        (chosen,) if chosen else (None, *HOLD_TIERS, *sorted(prices.override_tiers - set(HOLD_TIERS)))
    )
    first: Price | None = None
    input_rate: Decimal | None = None
    output_rate: Decimal | None = None
    for index, tier in enumerate(tiers):
        price = prices.priced(
            model, policy=policy, provider=provider, context=hold_context(request, at, tier)
        )
        if price is None:
            if index == 0:
                return None, None, None
            continue
        rates = reservation_rates(
            price,
            input_tokens,
            may_write_cache=request.may_write_cache,
            cache_write_ttl=request.cache_write_ttl,
        )
        if index == 0:
            first, (input_rate, output_rate) = price, rates
            if input_rate is None and output_rate is None:
                break  # the row cannot price what the request asks: unpriced at every tier
            continue
        input_rate = _dearer(input_rate, rates[0])
        output_rate = _dearer(output_rate, rates[1])
    return first, input_rate, output_rate


def _dearer(current: Decimal | None, other: Decimal | None) -> Decimal | None:
    """The higher of two rates; a side the base row leaves unpriced stays unpriced."""
    if current is None or other is None:
        return current
    return max(current, other)
