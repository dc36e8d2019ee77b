"""The gateway's configuration file (YAML), validated with errors that say where.

Shape (every key but ``upstreams`` and ``keys`` is optional)::

    ledger: sqlite:///tokenward.db       # where budgets, holds and usage events live
    prices: prices.yaml                  # price overrides, over the pinned genai-prices table
    denial_status: 402                   # or 429
    idempotency_ttl_seconds: 86400       # how long an Idempotency-Key's answer is replayed
    defaults:
      max_output_tokens: 1024            # the output bound when a request sets none
      min_output_tokens: 16              # a budget that cannot pay for this much denies
      reservation_ttl_seconds: 600
      unknown_model: flag                # flag | default (the price file's default row) | deny
      admission_wait_seconds: 3          # a call refused only by holds in flight waits this long
      unknown_context: deny              # deny | <tokens>: stored context the ledger never saw
      service_tier: null                 # the tier calls naming none are served at (null: dearest)
      server_tool_max_uses: 5            # uses held for a server-side tool with no cap of its own
      server_tool_input_tokens: 8000     # prompt tokens held for each use's results
    upstreams:                           # tried in order; the first whose models match serves
      - name: local-fake
        provider: fake                   # fake | openai | anthropic | gemini | openai-compatible | azure
        base_url: http://127.0.0.1:9100  # fake without base_url runs in-process
        api_key_env: OPENAI_API_KEY      # the provider key, read from the environment
        models: ["*"]                    # glob patterns of model names
        bound_non_streamed: stream       # stream (default) | trust: see UpstreamConfig
        service_tier: default            # the tier it serves calls naming none at (else: dearest)
      - name: azure-east                 # Azure OpenAI (docs/gateway.md, "Cloud platforms")
        provider: azure
        base_url: https://my-resource.openai.azure.com
        api_version: 2024-10-21          # the deployments surface; omitted: the v1 surface
        auth: api-key                    # api-key (api_key_env) | entra (azure-identity)
        api_key_env: AZURE_OPENAI_API_KEY
        deployments:                     # deployment name -> the model it runs
          gpt4o-prod: gpt-4o
          gpt4o-eu: {model: gpt-4o, price_multiplier: 1.1}
      - name: vertex                     # Google Vertex AI: Gemini and Claude
        provider: vertex
        project: my-project
        location: us-east5               # or global; the base URL follows it
        models: ["gemini-*", "claude-*"]
      - name: bedrock                    # Amazon Bedrock: Converse, and InvokeModel for Claude
        provider: bedrock
        region: us-east-1                # base URL https://bedrock-runtime.<region>.amazonaws.com
        auth: sigv4                      # sigv4 (the AWS credential chain) | api-key (api_key_env)
    keys:                                # virtual keys clients use instead of provider keys
      - key: tw-demo-key                 # or key_sha256: <hex digest of the key>
        name: demo
        user: alice
        project: demo
        allow_user_override: false       # may this key charge another user (x-tokenward-user)?
        tags: {cost_center: cc-42}       # tags every call of the key carries (tag:NAME budgets)
        allow_client_tags: false         # may clients add tags (x-tokenward-tags: arm=b)?
        allow_client_budgets: false      # may clients carry session/task budgets (the SDK's)?
    dashboard: true                      # /ui (default: on when admin_keys is set)
    dashboard_secret: null               # signs its cookies (default: kept in the ledger)
    budgets:
      - {name: per-session, scope: session, meter: total_tokens, limit: 50000}
      - {name: alice-daily, scope: user, id: alice, meter: cost_usd, limit: 5, window: day}
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tokenward.core.budgets import Budget
from tokenward.core.modifiers import vertex_uplifted
from tokenward.errors import ConfigError
from tokenward.files import load_mapping
from tokenward.gateway.observing import ObserveConfig, parse_observe
from tokenward.guard import GuardSettings
from tokenward.guard.wire.azure import azure_deployments
from tokenward.guard.wire.bounded import BOUND_MODES
from tokenward.guard.wire.degrade import Degrade
from tokenward.guard.wire.endpoints.billable import requested_tier

__all__ = [
    "AUTH_MODES",
    "PROVIDERS",
    "AdminKeyConfig",
    "Deployment",
    "GatewayConfig",
    "KeyConfig",
    "UpstreamConfig",
    "key_tags",
    "project_problem",
    "tag_pair",
]


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """What a kind of upstream speaks.

    Attributes:
        default_base: its base URL unless configured (OpenAI's includes ``/v1``).
        families: the API families it serves (``openai``, ``anthropic``, ``gemini``).
        openai_prefix: prepended to OpenAI-family paths when the base URL has no ``/v1``.
    """

    default_base: str
    families: frozenset[str]
    openai_prefix: str = ""


PROVIDERS: dict[str, ProviderKind] = {
    "openai": ProviderKind("https://api.openai.com/v1", frozenset({"openai"})),
    "openai-compatible": ProviderKind("", frozenset({"openai"})),
    "anthropic": ProviderKind("https://api.anthropic.com", frozenset({"anthropic"})),
    "gemini": ProviderKind("https://generativelanguage.googleapis.com", frozenset({"gemini"})),
    "fake": ProviderKind("", frozenset({"openai", "anthropic", "gemini"}), "/v1"),
    "azure": ProviderKind("", frozenset({"openai"})),
    "vertex": ProviderKind("", frozenset({"gemini", "anthropic"})),
    "bedrock": ProviderKind("", frozenset({"bedrock"})),
}

AUTH_MODES = {"azure": ("api-key", "entra"), "vertex": ("adc",), "bedrock": ("sigv4", "api-key")}
"""How each cloud upstream kind authenticates to its platform (the first is the default)."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """An Azure OpenAI deployment: its name, the model it runs, and how its price relates to the
    model's global (OpenAI) price when the price table has no Azure row of its own.

    Attributes:
        name: the deployment name (in Azure URLs, and the ``model`` clients send).
        model: the model it runs (prices, tokenizer and events use it).
        price_multiplier: the factor on the fallback (OpenAI) row; None for 1. Regional and
            data-zone deployments cost more than global ones (genai-prices' Azure notes).
    """

    name: str
    model: str
    price_multiplier: Decimal | None = None


_FAMILY_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One upstream LLM service.

    Attributes:
        name: label used in logs and events.
        provider: ``fake``, ``openai``, ``anthropic``, ``gemini`` or ``openai-compatible``.
        base_url: where it listens (the provider's default when omitted; ``None`` for an
            in-process fake).
        api_key_env: the environment variable holding the provider key (never logged).
        models: glob patterns of the model names it serves.
        bound_non_streamed: ``stream`` (default): a call the client did not stream is read from
            this upstream as a stream, so it is stopped at its hold like a streamed one, and
            answered as JSON; ``trust``: it is forwarded as it is, trusting the upstream to honour
            the output bound (the charge floor still applies). See
            :mod:`tokenward.guard.wire.bounded`.
        service_tier: the service tier it serves calls that name none (or ``auto``) at, as the
            provider account is configured (OpenAI's project tier); None holds them at the
            model's dearest tier (``defaults.service_tier`` when set).
    """

    name: str
    provider: str
    base_url: str | None
    api_key_env: str | None = None
    models: tuple[str, ...] = ("*",)
    bound_non_streamed: str = "stream"
    service_tier: str | None = None
    deployments: tuple[Deployment, ...] = ()
    api_version: str | None = None
    auth: str | None = None
    project: str | None = None
    location: str | None = None
    region: str | None = None

    def serves(self, family: str, model: str) -> bool:
        """Whether this upstream speaks the API ``family`` and serves ``model``."""
        return family in PROVIDERS[self.provider].families and any(
            fnmatch.fnmatchcase(model, p) for p in self.models
        )

    def deployment(self, name: str) -> Deployment | None:
        """The Azure deployment called ``name``, or None."""
        return next((d for d in self.deployments if d.name == name), None)

    def deployment_of(self, model: str) -> str | None:
        """The first Azure deployment running ``model``, or None."""
        return next((d.name for d in self.deployments if d.model == model), None)

    def served_model(self, name: str) -> str:
        """The model a call naming ``name`` runs: an Azure deployment's model, else ``name``."""
        found = self.deployment(name)
        return found.model if found is not None else name

    def url(self, family: str, path: str) -> str:
        """The full URL of ``path`` (relative to the family's base) on this upstream."""
        base = (self.base_url or "http://fake.invalid").rstrip("/")
        if self.provider == "azure":  # its routes without a deployment (gateway/clouds/azure.py)
            if self.api_version is None:
                return f"{base}/openai/v1{path}"
            return f"{base}/openai{path}?api-version={self.api_version}"
        prefix = PROVIDERS[self.provider].openai_prefix if family == "openai" else ""
        return base + prefix + path

    def pricing_provider(self, family: str, model: str | None = None) -> str:
        """The provider whose prices apply to calls of ``family`` here: the upstream's own kind,
        or for the fake provider the family's real provider (``openai``, ``anthropic``,
        ``google``), so its calls are priced like the real ones. An Azure deployment with a
        ``price_multiplier`` is priced as ``azure:<upstream>/<deployment>``
        (:meth:`~tokenward.core.pricebook.PriceBook.derive`, registered by :meth:`price_rules`)."""
        if self.provider == "vertex":
            regional = self.location not in (None, "global")
            if regional and family == "anthropic" and model is not None and vertex_uplifted(model):
                return "google:regional"
            return "google"
        if self.provider == "azure":
            found = self.deployment(model) if model is not None else None
            if found is not None and found.price_multiplier is not None:
                return f"azure:{self.name}/{found.name}"
            return "azure"
        if self.provider == "bedrock":
            return "aws"
        if self.provider == "fake":
            return _FAMILY_PROVIDERS[family]
        return "google" if self.provider == "gemini" else self.provider

    def price_rules(self) -> list[tuple[str, str, Decimal]]:
        """(provider id, base platform, multiplier) of each priced deployment, for
        :meth:`~tokenward.core.pricebook.PriceBook.derive`."""
        return [
            (f"azure:{self.name}/{d.name}", "azure", d.price_multiplier)
            for d in self.deployments
            if d.price_multiplier is not None
        ]

    def api_key(self) -> str | None:
        """The provider key from the environment, or None."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def key_problem(self) -> str | None:
        """Why this upstream's calls would go without a provider key, or None: its
        ``api_key_env`` is not set (or empty) in the environment, or a hosted provider
        (``openai``, ``anthropic``, ``gemini``) has no ``api_key_env`` at all."""
        if self.api_key_env and not self.api_key():
            return (
                f"upstream {self.name!r}: the environment variable {self.api_key_env} (its api_key_env) "
                "is not set, so its calls go without a provider key and will likely be refused (401)"
            )
        if self.provider == "vertex" or (self.provider == "bedrock" and self.auth == "sigv4"):
            return None  # the platform's credential chain (gateway/clouds)
        if not self.api_key_env and self.provider == "bedrock":
            return (
                f"upstream {self.name!r} (bedrock, auth: api-key) has no api_key_env (a Bedrock API "
                "key, e.g. AWS_BEARER_TOKEN_BEDROCK), so its calls will likely be refused (403)"
            )
        if not self.api_key_env and self.provider == "azure" and self.auth != "entra":
            return (
                f"upstream {self.name!r} (azure, auth: api-key) has no api_key_env, so its calls go "
                "without an api-key and will likely be refused (401); or set auth: entra"
            )
        if not self.api_key_env and self.provider in ("openai", "anthropic", "gemini"):
            return (
                f"upstream {self.name!r} ({self.provider}) has no api_key_env, so its calls go "
                "without a provider key and will likely be refused (401)"
            )
        return None


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """A virtual key: what a client authenticates with, and whom its calls are charged to.

    Attributes:
        name: the key's label (the subject's ``key`` scope).
        key_sha256: SHA-256 hex digest of the key (keys are compared by digest).
        subject: ``user``, ``project``, ``team``, ``org`` the key charges.
        allow_user_override: whether the key may name another user with ``x-tokenward-user``.
        tags: ``(name, value)`` tags every call of the key carries (``tag:NAME`` budgets apply by
            them); in the key's project's namespace (``<project>/<value>``) like its user.
        allow_client_tags: whether clients may add tags with ``x-tokenward-tags`` (they add to
            the key's own, never replace one).
        allow_client_budgets: whether clients may carry budgets for their own session or task
            (``x-tokenward-session-budget`` / ``x-tokenward-task-budget``: what the SDK's
            ``guard.session(budget=...)`` sends; see :mod:`tokenward.gateway.carried`).
        sigv4_secret: the secret with which boto3 (or another AWS SDK) signs requests for this
            key, its access key id being the key's ``name`` (``sigv4_secret`` or
            ``sigv4_secret_env`` in the file); None: the key cannot sign.
    """

    name: str
    key_sha256: str
    subject: Mapping[str, str]
    allow_user_override: bool = False
    tags: tuple[tuple[str, str], ...] = ()
    allow_client_tags: bool = False
    allow_client_budgets: bool = False
    sigv4_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AdminKeyConfig:
    """A key for the admin API.

    Attributes:
        name: who it is (written to the audit log as the actor).
        key_sha256: SHA-256 hex digest of the key.
        project: None for a full administrator; a project name for one who sees and changes only
            that project's budgets, keys, events and balances.
    """

    name: str
    key_sha256: str
    project: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The validated gateway configuration (see the module docstring for the file's shape)."""

    upstreams: tuple[UpstreamConfig, ...]
    keys: tuple[KeyConfig, ...]
    budgets: tuple[Budget, ...] = ()
    ledger: str | None = None
    prices: str | None = None
    denial_status: int = 402
    settings: GuardSettings = field(default_factory=GuardSettings)
    source: str = "<memory>"
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    admin_keys: tuple[AdminKeyConfig, ...] = ()
    observe: ObserveConfig = field(default_factory=ObserveConfig)
    degrade: Degrade = field(default_factory=lambda: Degrade(marked_only=True))
    retry_horizon_seconds: int = 60
    disconnect_grace_seconds: float = 5.0
    idempotency_ttl_seconds: int = 86400
    """How long the answer of a request sent with an ``Idempotency-Key`` is replayed to repeats
    (:mod:`tokenward.gateway.idempotency`); 0 turns the header off (it is ignored)."""
    dashboard: bool | None = None
    """Serve the dashboard at ``/ui``: None (the default) means on when ``admin_keys`` is set."""
    dashboard_secret: str | None = None
    """The key signing the dashboard's session cookies; None: one made once and kept in the
    ledger (``Ledger.secret``), so every worker and replica shares it."""

    @property
    def dashboard_on(self) -> bool:
        """Whether ``/ui`` is served: ``dashboard`` if set, else whether there are admin keys."""
        return bool(self.admin_keys) if self.dashboard is None else self.dashboard

    def upstream_for(self, family: str, model: str) -> UpstreamConfig | None:
        """The first upstream that speaks ``family`` and serves ``model``."""
        return next((u for u in self.upstreams if u.serves(family, model)), None)

    def attempts(self, family: str, model: str) -> list[tuple[str, UpstreamConfig]]:
        """Where to send a call, in order: every upstream serving ``model``, then those serving
        each of its configured fallback models. Each attempt is admitted on its own."""
        out = [(model, u) for u in self.upstreams if u.serves(family, model)]
        for fallback in self.fallbacks.get(model, ()):
            out += [(fallback, u) for u in self.upstreams if u.serves(family, fallback)]
        return out

    def admin_key_for(self, presented: str) -> AdminKeyConfig | None:
        """The admin key matching ``presented``, compared by SHA-256 digest."""
        digest = hashlib.sha256(presented.encode()).hexdigest()
        return next((k for k in self.admin_keys if k.key_sha256 == digest), None)

    def key_for(self, presented: str) -> KeyConfig | None:
        """The virtual key matching ``presented``, compared by SHA-256 digest."""
        digest = hashlib.sha256(presented.encode()).hexdigest()
        return next((k for k in self.keys if k.key_sha256 == digest), None)

    @classmethod
    def load(cls, path: str | Path) -> GatewayConfig:
        """Read and validate a YAML/JSON config file; relative paths in it are taken from its folder.

        Raises:
            ConfigError: the file or a field is invalid (the message names which).
        """
        data, _ = load_mapping(path)
        try:
            return cls.from_mapping(data, base_dir=Path(path).resolve().parent, source=str(path))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None, source: str = "<memory>"
    ) -> GatewayConfig:
        """Validate a config mapping.

        Raises:
            ConfigError: a missing or invalid field.
        """
        known = {
            "ledger",
            "prices",
            "denial_status",
            "defaults",
            "upstreams",
            "keys",
            "budgets",
            "fallbacks",
            "admin_keys",
            "observe",
            "degrade",
            "retry_horizon_seconds",
            "disconnect_grace_seconds",
            "idempotency_ttl_seconds",
            "dashboard",
            "dashboard_secret",
        }
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)}; known: {sorted(known)}")
        upstreams = tuple(_upstream(i, u) for i, u in enumerate(_list(data, "upstreams", required=True)))
        _unique("upstreams", [u.name for u in upstreams], "name", "each upstream has its own client")
        keys = tuple(_key(i, k) for i, k in enumerate(_list(data, "keys", required=True)))
        _unique("keys", [k.key_sha256 for k in keys], "key", "only the first would ever be used")
        budgets = tuple(_budget(i, b) for i, b in enumerate(_list(data, "budgets")))
        names = [b.name for b in budgets]
        if len(names) != len(set(names)):
            raise ConfigError("budgets: names must be unique")
        status = data.get("denial_status", 402)
        if status not in (402, 429):
            raise ConfigError(f"denial_status must be 402 or 429, got {status!r}")
        prices = data.get("prices")
        if prices is not None and base_dir is not None and not Path(str(prices)).is_absolute():
            prices = str(base_dir / str(prices))
        ledger = data.get("ledger")
        if isinstance(ledger, str) and base_dir is not None:
            ledger = _anchored(ledger, base_dir)
        return cls(
            upstreams=upstreams,
            keys=keys,
            budgets=budgets,
            ledger=ledger,
            prices=prices,
            denial_status=int(status),
            settings=_settings(data.get("defaults") or {}),
            source=source,
            fallbacks=_fallbacks(data.get("fallbacks")),
            admin_keys=_admin_keys(_list(data, "admin_keys"), keys),
            observe=parse_observe(data.get("observe"), base_dir),
            degrade=_degrade(data.get("degrade")),
            retry_horizon_seconds=_number(data, "retry_horizon_seconds", 60, int),
            disconnect_grace_seconds=_number(data, "disconnect_grace_seconds", 5.0, float),
            idempotency_ttl_seconds=_number(data, "idempotency_ttl_seconds", 86400, int),
            dashboard=_dashboard(data.get("dashboard")),
            dashboard_secret=_dashboard_secret(data.get("dashboard_secret")),
        )


def _unique(where: str, values: list[str], what: str, why: str) -> None:
    """Refuse two entries of ``where`` with the same ``what`` (a copy-paste left unchanged)."""
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"{where}[{i}]: the same {what} as {where}[{seen[value]}] ({why})")
        seen[value] = i


def _admin_keys(raw: list[Any], keys: tuple[KeyConfig, ...]) -> tuple[AdminKeyConfig, ...]:
    admins = tuple(_admin_key(i, k) for i, k in enumerate(raw))
    _unique("admin_keys", [a.key_sha256 for a in admins], "key", "only the first would ever be used")
    virtual = {k.key_sha256 for k in keys}
    for i, admin in enumerate(admins):
        if admin.key_sha256 in virtual:
            raise ConfigError(
                f"admin_keys[{i}]: the same key as a virtual key in keys (a client's key would "
                "administer the gateway); give the administrator a key of its own"
            )
    return admins


def _dashboard(raw: Any) -> bool | None:
    if raw is not None and not isinstance(raw, bool):
        raise ConfigError(f"dashboard must be true or false, got {raw!r}")
    return raw


def _dashboard_secret(raw: Any) -> str | None:
    if raw is not None and (not isinstance(raw, str) or len(raw) < 32):
        raise ConfigError("dashboard_secret must be a string of at least 32 characters")
    return raw


def _degrade(raw: Any) -> Degrade:
    if raw is None:
        return Degrade(marked_only=True)  # only budgets whose action is "degrade"
    if not isinstance(raw, Mapping):
        raise ConfigError(
            "degrade: expected a mapping (below, models, reasoning_effort, thinking_budget_tokens)"
        )
    known = {"below", "models", "reasoning_effort", "thinking_budget_tokens"}
    if set(raw) - known:
        raise ConfigError(f"degrade: unknown keys {sorted(set(raw) - known)}; known: {sorted(known)}")
    models = raw.get("models") or {}
    if not isinstance(models, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in models.items()
    ):
        raise ConfigError("degrade.models must map a model to its cheaper stand-in")
    return Degrade(
        below=raw.get("below", "0.2"),
        models=dict(models),
        reasoning_effort=raw.get("reasoning_effort", "low"),
        thinking_budget_tokens=raw.get("thinking_budget_tokens", 1024),
    )


def _fallbacks(raw: Any) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(
        isinstance(v, list) and all(isinstance(m, str) and m for m in v) for v in raw.values()
    ):
        raise ConfigError("fallbacks must map a model name to a list of model names to try next")
    return {str(k): tuple(v) for k, v in raw.items()}


def _number(data: Mapping[str, Any], name: str, default: Any, kind: type) -> Any:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
    return kind(value)


def _list(data: Mapping[str, Any], name: str, *, required: bool = False) -> list[Any]:
    value = data.get(name)
    if value is None:
        if required:
            raise ConfigError(f"{name!r} is required (a list)")
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{name!r} must be a list")
    if required and not value:
        raise ConfigError(f"{name!r} must not be empty")
    return value


def _upstream(i: int, raw: Any) -> UpstreamConfig:
    where = f"upstreams[{i}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    known = {"name", "provider", "base_url", "api_key_env", "models", "bound_non_streamed", "service_tier"}
    cloud = {
        "azure": {"deployments", "api_version", "auth"},
        "vertex": {"project", "location", "auth"},
        "bedrock": {"region", "auth"},
    }.get(str(raw.get("provider", "")), set())
    known |= cloud
    if set(raw) - known:
        raise ConfigError(f"{where}: unknown keys {sorted(set(raw) - known)}; known: {sorted(known)}")
    provider = str(raw.get("provider", ""))
    if provider not in PROVIDERS:
        raise ConfigError(f"{where}.provider: {provider!r} is not one of {', '.join(PROVIDERS)}")
    base_url = raw.get("base_url") or PROVIDERS[provider].default_base or None
    if provider == "vertex":
        for name in ("project", "location"):
            if not isinstance(raw.get(name), str) or not raw[name]:
                raise ConfigError(f"{where}.{name} is required for a vertex upstream")
        location = str(raw["location"])
        host = (
            "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"
        )
        base_url = base_url or f"https://{host}"
    if provider == "bedrock":
        if not isinstance(raw.get("region"), str) or not raw["region"]:
            raise ConfigError(f"{where}.region is required for a bedrock upstream (us-east-1...)")
        base_url = base_url or f"https://bedrock-runtime.{raw['region']}.amazonaws.com"
    if base_url is None and provider != "fake":
        raise ConfigError(f"{where}.base_url is required for provider {provider!r}")
    if base_url is not None and not str(base_url).startswith(("http://", "https://")):
        raise ConfigError(f"{where}.base_url must start with http:// or https://, got {base_url!r}")
    deployments = _deployments(raw.get("deployments"), where) if "deployments" in cloud else ()
    if provider == "azure" and not deployments:
        raise ConfigError(f"{where}.deployments: an azure upstream needs at least one deployment")
    auth = raw.get("auth")
    if provider in AUTH_MODES:
        auth = auth or AUTH_MODES[provider][0]
        if auth not in AUTH_MODES[provider]:
            raise ConfigError(f"{where}.auth must be one of {', '.join(AUTH_MODES[provider])}, got {auth!r}")
    api_version = raw.get("api_version")
    if api_version is not None and (not isinstance(api_version, str | date) or not str(api_version)):
        raise ConfigError(f"{where}.api_version must be a string such as 2024-10-21")
    models = raw.get("models", [d.name for d in deployments] or ["*"])
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{where}.models must be a list of glob patterns")
    return UpstreamConfig(
        name=str(raw.get("name") or provider),
        provider=provider,
        base_url=None if base_url is None else str(base_url),
        api_key_env=_env_name(raw.get("api_key_env"), f"{where}.api_key_env"),
        models=tuple(models),
        bound_non_streamed=_bound_mode(raw, where),
        service_tier=_tier(raw.get("service_tier"), f"{where}.service_tier"),
        deployments=deployments,
        api_version=None if api_version is None else str(api_version),
        auth=auth,
        project=raw.get("project"),
        location=raw.get("location"),
        region=raw.get("region"),
    )


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _env_name(raw: Any, where: str) -> str | None:
    """``api_key_env``: the name of an environment variable. The provider key itself pasted there
    (``sk-proj-...``) was written to the log in the missing-key warning; a number stopped the
    gateway with a ``TypeError``. The message never repeats the value."""
    if raw is None:
        return None
    if (
        not isinstance(raw, str)
        or not _ENV_NAME.match(raw)
        or raw.startswith(("sk_", "AIza"))  # key shapes an environment variable name can take
    ):
        raise ConfigError(
            f"{where} must name the environment variable holding the secret "
            "(e.g. OPENAI_API_KEY), not the secret itself; the value is not repeated here"
        )
    return raw


def _deployments(raw: Any, where: str) -> tuple[Deployment, ...]:
    """``deployments:`` of an Azure upstream: ``name: model`` or ``name: {model, price_multiplier}``."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where}.deployments must map each deployment name to its model")
    try:
        parsed = azure_deployments(raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}.deployments: {exc}") from None
    return tuple(Deployment(name, model, factor) for name, (model, factor) in parsed.items())


def _bound_mode(raw: Mapping[str, Any], where: str) -> str:
    """``bound_non_streamed`` of an upstream (``stream`` unless set)."""
    mode = raw.get("bound_non_streamed", "stream")
    if mode not in BOUND_MODES:
        raise ConfigError(f"{where}.bound_non_streamed must be one of {', '.join(BOUND_MODES)}, got {mode!r}")
    return str(mode)


def _tier(raw: Any, where: str) -> str | None:
    """A configured service tier (``default``, ``flex``, ``priority``...), normalised."""
    if raw is None:
        return None
    tier = requested_tier(raw) if isinstance(raw, str) else None
    if tier is None:
        raise ConfigError(f"{where} must name a service tier (default, flex, priority...), got {raw!r}")
    return tier


def _key(i: int, raw: Any) -> KeyConfig:
    where = f"keys[{i}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    known = {
        "key", "key_sha256", "name", "user", "project", "team", "org", "allow_user_override", "tags",
        "allow_client_tags", "allow_client_budgets", "sigv4_secret", "sigv4_secret_env",
    }  # fmt: skip
    if set(raw) - known:
        raise ConfigError(f"{where}: unknown keys {sorted(set(raw) - known)}; known: {sorted(known)}")
    digest = _digest(raw, where)
    name = str(raw.get("name") or f"key-{digest[:8]}")
    subject = {}
    for scope in ("org", "project", "team", "user"):
        value = raw.get(scope)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            # user: 0 was dropped (the key charged no user), user: [a, b] charged the user "['a', 'b']"
            raise ConfigError(f"{where}.{scope} must be a non-empty string, got {value!r}")
        subject[scope] = str(value)
    _check_project(subject.get("project"), where)
    secret = raw.get("sigv4_secret")
    if raw.get("sigv4_secret_env"):
        secret = os.environ.get(str(_env_name(raw["sigv4_secret_env"], f"{where}.sigv4_secret_env")))
        if not secret:
            raise ConfigError(f"{where}.sigv4_secret_env: {raw['sigv4_secret_env']} is not set")
    if secret is not None and (not isinstance(secret, str) or len(secret) < 8):
        raise ConfigError(f"{where}.sigv4_secret must be a string of at least 8 characters")
    flags = {}
    for flag in ("allow_user_override", "allow_client_tags", "allow_client_budgets"):
        value = raw.get(flag, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {flag} must be true or false, got {value!r}")
        flags[flag] = value
    try:
        tags = key_tags(raw.get("tags"))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return KeyConfig(name, digest, subject, tags=tags, sigv4_secret=secret, **flags)


_TAG_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_TAG_VALUE = re.compile(r"^[\w.:@/\-]{1,200}$")


def key_tags(raw: Any) -> tuple[tuple[str, str], ...]:
    """A key's ``tags`` (a mapping of tag name to value), checked and sorted.

    Raises:
        ValueError: not a mapping, or a name or value tokenward cannot keep (the message says which).
    """
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ValueError(f"tags must be a mapping of tag name to value (cost_center: cc-42), got {raw!r}")
    return tuple(sorted(tag_pair(name, value) for name, value in raw.items()))


def tag_pair(name: Any, value: Any) -> tuple[str, str]:
    """One tag, checked: a name of 1-64 letters, digits and ``_.-`` (as in ``tag:NAME``), a value
    of 1-200 letters, digits and ``_.:@/-``.

    Raises:
        ValueError: either is not.
    """
    if not isinstance(name, str) or not _TAG_NAME.match(name):
        raise ValueError(f"tag name {name!r}: use 1-64 letters, digits and _.-")
    if isinstance(value, bool) or not isinstance(value, str | int) or not _TAG_VALUE.match(str(value)):
        raise ValueError(f"tag {name}: value {value!r}: use 1-200 letters, digits and _.:@/-")
    return name, str(value)


# -- tenancy -----------------------------------------------------------------------------------
def project_problem(project: Any) -> str | None:
    """Why ``project`` cannot name a project, or None. A project is a namespace
    (``<project>/<value>``), so its name holds no ``/``."""
    if not isinstance(project, str) or not project.strip():
        return "project must be a non-empty string"
    if "/" in project:
        return f"project {project!r} must not contain '/' (it is the namespace of its users and sessions)"
    return None


def _check_project(project: Any, where: str) -> None:
    if project is not None and (problem := project_problem(project)):
        raise ConfigError(f"{where}: {problem}")


def _digest(raw: Mapping[str, Any], where: str) -> str:
    if raw.get("key"):
        return hashlib.sha256(str(raw["key"]).encode()).hexdigest()
    if raw.get("key_sha256"):
        digest = str(raw["key_sha256"]).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):  # no presented key could ever match it
            raise ConfigError(
                f"{where}.key_sha256 must be 64 hex digits, the SHA-256 of the key "
                '(printf %s "$KEY" | sha256sum)'
            )
        return digest
    raise ConfigError(f"{where}: needs 'key' or 'key_sha256'")


_ACTOR = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def _admin_key(i: int, raw: Any) -> AdminKeyConfig:
    where = f"admin_keys[{i}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    known = {"key", "key_sha256", "name", "project"}
    if set(raw) - known:
        raise ConfigError(f"{where}: unknown keys {sorted(set(raw) - known)}; known: {sorted(known)}")
    digest = _digest(raw, where)
    name = str(raw.get("name") or f"admin-{digest[:8]}")
    if not _ACTOR.match(name):
        raise ConfigError(f"{where}: name must be letters, digits, '_', '.' or '-' (it is the audit actor)")
    _check_project(raw.get("project"), where)
    return AdminKeyConfig(name, digest, raw.get("project"))


def _budget(i: int, raw: Any) -> Budget:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"budgets[{i}]: expected a mapping")
    try:
        return Budget.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"budgets[{i}]: {exc}") from None


_HOLDING_KEYS = {
    "admission_wait_seconds",
    "unknown_context",
    "service_tier",
    "server_tool_max_uses",
    "server_tool_input_tokens",
}
"""``defaults`` keys of what is held and how long a call waits for holds (:func:`_holding`)."""


def _holding(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The ``defaults`` keys of :data:`_HOLDING_KEYS`, checked, as ``GuardSettings`` fields."""
    out: dict[str, Any] = {}
    wait = raw.get("admission_wait_seconds")
    if wait is not None:
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 600:
            raise ConfigError(f"defaults.admission_wait_seconds must be 0-600 seconds, got {wait!r}")
        out["admission_wait_seconds"] = float(wait)
    context = raw.get("unknown_context")
    if context is not None:
        if context != "deny" and (isinstance(context, bool) or not isinstance(context, int) or context < 0):
            raise ConfigError(
                f"defaults.unknown_context must be deny or a number of tokens >= 0, got {context!r}"
            )
        out["unknown_context"] = context
    if raw.get("service_tier") is not None:
        out["service_tier"] = _tier(raw["service_tier"], "defaults.service_tier")
    for name, low in (("server_tool_max_uses", 1), ("server_tool_input_tokens", 0)):
        value = raw.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"defaults.{name} must be a whole number >= {low}, got {value!r}")
            out[name] = value
    return out


def _settings(raw: Any) -> GuardSettings:
    if not isinstance(raw, Mapping):
        raise ConfigError("defaults: expected a mapping")
    known = {"max_output_tokens", "min_output_tokens", "reservation_ttl_seconds", "unknown_model"}
    if set(raw) - known - _HOLDING_KEYS:
        allowed = sorted(known | _HOLDING_KEYS)
        raise ConfigError(
            f"defaults: unknown keys {sorted(set(raw) - known - _HOLDING_KEYS)}; known: {allowed}"
        )
    unknown_model = raw.get("unknown_model", "flag")
    if unknown_model not in ("flag", "default", "deny"):
        raise ConfigError(f"defaults.unknown_model must be flag, default or deny, got {unknown_model!r}")
    values = {}
    for name in known - {"unknown_model"}:
        if name in raw:
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"defaults.{name} must be a positive whole number, got {value!r}")
            values[name] = value
    base = GuardSettings()
    return GuardSettings(
        default_max_output_tokens=values.get("max_output_tokens", base.default_max_output_tokens),
        min_output_tokens=values.get("min_output_tokens", base.min_output_tokens),
        ttl=timedelta(seconds=values["reservation_ttl_seconds"])
        if "reservation_ttl_seconds" in values
        else base.ttl,
        unknown_model=unknown_model,
        **_holding(raw),
    )


def _anchored(url: str, base_dir: Path) -> str:
    """A ledger URL with its relative file paths taken from the config file's folder, as every
    other path in the file: a ``sqlite:///`` file, a ``spool=`` file, and those of the URL given
    as ``events=`` (``redis://...?spool=s.spool&events=sqlite:///events.db``). A spool left in
    another working directory is never replayed, so its charges would be lost."""
    head, sep, events = url.partition("events=")
    if sep:  # events= is the last parameter, and the rest of the URL is its own
        return _anchored(head, base_dir) + sep + _anchored(events, base_dir)
    path, mark, query = url.partition("?")
    if path.startswith("sqlite:///") and not path.startswith("sqlite:////"):
        path = f"sqlite:///{base_dir / path.removeprefix('sqlite:///')}"
    items = []
    for item in query.split("&") if mark else ():
        name, eq, value = item.partition("=")
        if name == "spool" and value and not Path(unquote(value)).is_absolute():
            value = str(base_dir / unquote(value))
        items.append(name + eq + value)
    return path + mark + "&".join(items)
