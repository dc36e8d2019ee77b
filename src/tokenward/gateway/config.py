"""The gateway's configuration file (YAML), validated with errors that say where.

Shape (every key but ``upstreams`` and ``keys`` is optional)::

    ledger: sqlite:///tokenward.db       # where budgets, holds and usage events live
    prices: prices.yaml                  # price overrides, over the pinned genai-prices table
    denial_status: 402                   # or 429
    defaults:
      max_output_tokens: 1024            # the output bound when a request sets none
      min_output_tokens: 16              # a budget that cannot pay for this much denies
      reservation_ttl_seconds: 600
    upstreams:                           # tried in order; the first whose models match serves
      - name: local-fake
        provider: fake                   # fake | openai | anthropic | openai-compatible
        base_url: http://127.0.0.1:9100  # fake without base_url runs in-process
        api_key_env: OPENAI_API_KEY      # the provider key, read from the environment
        models: ["*"]                    # glob patterns of model names
    keys:                                # virtual keys clients use instead of provider keys
      - key: tw-demo-key                 # or key_sha256: <hex digest of the key>
        name: demo
        user: alice
        project: demo
        allow_user_override: false       # may this key charge another user (x-tokenward-user)?
    budgets:
      - {name: per-session, scope: session, meter: total_tokens, limit: 50000}
      - {name: alice-daily, scope: user, id: alice, meter: cost_usd, limit: 5, window: day}
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from tokenward.core.budgets import Budget
from tokenward.errors import ConfigError
from tokenward.files import load_mapping
from tokenward.guard import GuardSettings

__all__ = ["PROVIDERS", "GatewayConfig", "KeyConfig", "UpstreamConfig"]

PROVIDERS = {
    # provider kind -> (default base URL, {dialect: path appended to the base URL})
    "openai": ("https://api.openai.com/v1", {"openai-chat": "/chat/completions"}),
    "openai-compatible": ("", {"openai-chat": "/chat/completions"}),
    "anthropic": ("https://api.anthropic.com", {"anthropic-messages": "/v1/messages"}),
    "fake": ("", {"openai-chat": "/v1/chat/completions", "anthropic-messages": "/v1/messages"}),
}


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One upstream LLM service.

    Attributes:
        name: label used in logs and events.
        provider: ``fake``, ``openai``, ``anthropic`` or ``openai-compatible``.
        base_url: where it listens (the provider's default when omitted; ``None`` for an
            in-process fake).
        api_key_env: the environment variable holding the provider key (never logged).
        models: glob patterns of the model names it serves.
    """

    name: str
    provider: str
    base_url: str | None
    api_key_env: str | None = None
    models: tuple[str, ...] = ("*",)

    def serves(self, dialect: str, model: str) -> bool:
        """Whether this upstream speaks ``dialect`` and serves ``model``."""
        return dialect in PROVIDERS[self.provider][1] and any(
            fnmatch.fnmatchcase(model, p) for p in self.models
        )

    def url(self, dialect: str) -> str:
        """The full URL of the dialect's endpoint on this upstream."""
        base = (self.base_url or "http://fake.invalid").rstrip("/")
        return base + PROVIDERS[self.provider][1][dialect]

    def api_key(self) -> str | None:
        """The provider key from the environment, or None."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """A virtual key: what a client authenticates with, and whom its calls are charged to.

    Attributes:
        name: the key's label (the subject's ``key`` scope).
        key_sha256: SHA-256 hex digest of the key (keys are compared by digest).
        subject: ``user``, ``project``, ``team``, ``org`` the key charges.
        allow_user_override: whether the key may name another user with ``x-tokenward-user``.
    """

    name: str
    key_sha256: str
    subject: Mapping[str, str]
    allow_user_override: bool = False


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

    def upstream_for(self, dialect: str, model: str) -> UpstreamConfig | None:
        """The first upstream that speaks ``dialect`` and serves ``model``."""
        return next((u for u in self.upstreams if u.serves(dialect, model)), None)

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
        known = {"ledger", "prices", "denial_status", "defaults", "upstreams", "keys", "budgets"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)}; known: {sorted(known)}")
        upstreams = tuple(_upstream(i, u) for i, u in enumerate(_list(data, "upstreams", required=True)))
        keys = tuple(_key(i, k) for i, k in enumerate(_list(data, "keys", required=True)))
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
        if (
            isinstance(ledger, str)
            and ledger.startswith("sqlite:///")
            and not ledger.startswith("sqlite:////")
        ):
            relative = ledger.removeprefix("sqlite:///")
            if base_dir is not None:
                ledger = f"sqlite:///{base_dir / relative}"
        return cls(
            upstreams=upstreams,
            keys=keys,
            budgets=budgets,
            ledger=ledger,
            prices=prices,
            denial_status=int(status),
            settings=_settings(data.get("defaults") or {}),
            source=source,
        )


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
    known = {"name", "provider", "base_url", "api_key_env", "models"}
    if set(raw) - known:
        raise ConfigError(f"{where}: unknown keys {sorted(set(raw) - known)}; known: {sorted(known)}")
    provider = str(raw.get("provider", ""))
    if provider not in PROVIDERS:
        raise ConfigError(f"{where}.provider: {provider!r} is not one of {', '.join(PROVIDERS)}")
    base_url = raw.get("base_url") or PROVIDERS[provider][0] or None
    if base_url is None and provider != "fake":
        raise ConfigError(f"{where}.base_url is required for provider {provider!r}")
    if base_url is not None and not str(base_url).startswith(("http://", "https://")):
        raise ConfigError(f"{where}.base_url must start with http:// or https://, got {base_url!r}")
    models = raw.get("models", ["*"])
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{where}.models must be a list of glob patterns")
    return UpstreamConfig(
        name=str(raw.get("name") or provider),
        provider=provider,
        base_url=None if base_url is None else str(base_url),
        api_key_env=raw.get("api_key_env"),
        models=tuple(models),
    )


def _key(i: int, raw: Any) -> KeyConfig:
    where = f"keys[{i}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    known = {"key", "key_sha256", "name", "user", "project", "team", "org", "allow_user_override"}
    if set(raw) - known:
        raise ConfigError(f"{where}: unknown keys {sorted(set(raw) - known)}; known: {sorted(known)}")
    if raw.get("key"):
        digest = hashlib.sha256(str(raw["key"]).encode()).hexdigest()
    elif raw.get("key_sha256"):
        digest = str(raw["key_sha256"]).lower()
    else:
        raise ConfigError(f"{where}: needs 'key' or 'key_sha256'")
    name = str(raw.get("name") or f"key-{digest[:8]}")
    subject = {s: str(raw[s]) for s in ("org", "project", "team", "user") if raw.get(s)}
    return KeyConfig(name, digest, subject, bool(raw.get("allow_user_override", False)))


def _budget(i: int, raw: Any) -> Budget:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"budgets[{i}]: expected a mapping")
    try:
        return Budget.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"budgets[{i}]: {exc}") from None


def _settings(raw: Any) -> GuardSettings:
    if not isinstance(raw, Mapping):
        raise ConfigError("defaults: expected a mapping")
    known = {"max_output_tokens", "min_output_tokens", "reservation_ttl_seconds"}
    if set(raw) - known:
        raise ConfigError(f"defaults: unknown keys {sorted(set(raw) - known)}; known: {sorted(known)}")
    values = {}
    for name in known:
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
    )
