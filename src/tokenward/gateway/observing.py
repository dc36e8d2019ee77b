"""The gateway's ``observe:`` section: Prometheus at ``/metrics``, OpenTelemetry, budget alerts
(log and signed webhooks from a durable outbox) and anomaly actions.

::

    observe:
      prometheus: true            # /metrics (default: on when prometheus-client is installed);
                                  # it needs a full admin key while admin_keys is set, unless
                                  # written {public: true} (or {enabled: true, public: true})
      opentelemetry: false        # spans and GenAI metrics through the global OTel providers
      alerts:
        outbox: alerts.db         # the durable outbox (relative to the config file)
        log: true
        thresholds: [0.5, 0.8, 1]
        on_disputed: false        # an alert for each call whose provider reported less than we counted
        webhooks:
          - url: https://ops.example/hooks/tokenward
            secret_env: TOKENWARD_WEBHOOK_SECRET
      anomalies:                  # alert | pause | stop, per detector
        loop: alert
        growth: alert
        spike: alert

See ``docs/observing.md`` for what each part does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokenward.errors import ConfigError, MissingDependency

__all__ = ["ObserveConfig", "Observing", "parse_observe"]

log = logging.getLogger("tokenward.gateway")

_ACTIONS = ("alert", "pause", "stop")


@dataclass(frozen=True, slots=True)
class ObserveConfig:
    """The validated ``observe:`` section."""

    prometheus: bool | None = None
    prometheus_public: bool = False
    opentelemetry: bool = False
    alerts_outbox: str | None = None
    alerts_log: bool = True
    thresholds: tuple[Decimal, ...] | None = None
    webhooks: tuple[Mapping[str, Any], ...] = ()
    anomalies: Mapping[str, str] = field(default_factory=dict)
    on_disputed: bool = False


def parse_observe(raw: Any, base_dir: Path | None) -> ObserveConfig:
    """Validate the ``observe:`` section.

    Raises:
        ConfigError: an unknown key or a bad value (named).
    """
    if raw is None:
        return ObserveConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError("observe: expected a mapping")
    unknown = set(raw) - {"prometheus", "opentelemetry", "alerts", "anomalies"}
    if unknown:
        raise ConfigError(f"observe: unknown keys {sorted(unknown)}")
    alerts = raw.get("alerts") or {}
    if not isinstance(alerts, Mapping) or set(alerts) - {
        "outbox",
        "log",
        "thresholds",
        "webhooks",
        "on_disputed",
    }:
        raise ConfigError("observe.alerts: expected outbox, log, thresholds, webhooks, on_disputed")
    on_disputed = alerts.get("on_disputed", False)
    if not isinstance(on_disputed, bool):
        raise ConfigError(f"observe.alerts.on_disputed must be true or false, got {on_disputed!r}")
    if on_disputed and alerts.get("outbox") is None:
        raise ConfigError(
            "observe.alerts.on_disputed needs observe.alerts.outbox (a file for the durable outbox)"
        )
    outbox = alerts.get("outbox")
    if outbox is not None and base_dir is not None and not Path(str(outbox)).is_absolute():
        outbox = str(base_dir / str(outbox))
    webhooks = alerts.get("webhooks") or []
    if not isinstance(webhooks, list) or not all(
        isinstance(w, Mapping) and isinstance(w.get("url"), str) for w in webhooks
    ):
        raise ConfigError("observe.alerts.webhooks: a list of {url, secret_env?, name?}")
    if webhooks and outbox is None:
        raise ConfigError(
            "observe.alerts.webhooks need observe.alerts.outbox (a file for the durable outbox)"
        )
    anomalies = raw.get("anomalies") or {}
    if (
        not isinstance(anomalies, Mapping)
        or set(anomalies) - {"loop", "growth", "spike"}
        or not all(v in _ACTIONS for v in anomalies.values())
    ):
        raise ConfigError("observe.anomalies: map loop / growth / spike to alert, pause or stop")
    prometheus, public = _prometheus(raw.get("prometheus"))
    thresholds = alerts.get("thresholds")
    try:
        parsed = None if thresholds is None else tuple(Decimal(str(t)) for t in thresholds)
    except (TypeError, ArithmeticError):
        raise ConfigError("observe.alerts.thresholds: a list of shares such as [0.5, 0.8, 1]") from None
    return ObserveConfig(
        prometheus=prometheus,
        prometheus_public=public,
        opentelemetry=bool(raw.get("opentelemetry", False)),
        alerts_outbox=outbox,
        alerts_log=bool(alerts.get("log", True)),
        thresholds=parsed,
        webhooks=tuple(dict(w) for w in webhooks),
        anomalies=dict(anomalies),
        on_disputed=on_disputed,
    )


def _prometheus(raw: Any) -> tuple[bool | None, bool]:
    """``observe.prometheus``: ``true``/``false``, or ``{enabled: true|false, public: true|false}``.
    Returns (enabled, or None for "when prometheus-client is installed"; public)."""
    if raw is None or isinstance(raw, bool):
        return raw, False
    if not isinstance(raw, Mapping) or set(raw) - {"enabled", "public"}:
        raise ConfigError("observe.prometheus: true, false, or a mapping of enabled and public")
    enabled, public = raw.get("enabled"), raw.get("public", False)
    if not isinstance(enabled, bool | None) or not isinstance(public, bool):
        raise ConfigError("observe.prometheus.enabled and .public must be true or false")
    return enabled, public


class Observing:
    """The observers the config asks for, built once the ledger is open."""

    def __init__(self, config: ObserveConfig) -> None:
        self.config = config
        self.prometheus: Any = None
        self.observers: list[Any] = []
        self._closers: list[Any] = []
        wanted = config.prometheus
        if wanted is not False:
            try:
                from tokenward.observe import Prometheus

                self.prometheus = Prometheus()
            except MissingDependency:
                if wanted:
                    raise
                log.info(
                    "prometheus-client is not installed: /metrics is off (pip install 'tokenward[prometheus]')"
                )

    def start(self, ledger: Any) -> list[Any]:
        """Build the observers on ``ledger`` (the gateway's async ledger) and start their workers."""
        from tokenward.observe.watch import sync_ledger

        config, store = self.config, sync_ledger(ledger)
        if self.prometheus is not None:
            self.prometheus.bind(store)
            self.observers.append(self.prometheus)
            self._closers.append(self.prometheus)
        if config.opentelemetry:
            from tokenward.observe import Telemetry

            self.observers.append(Telemetry())
        alerts = None
        if config.alerts_outbox is not None:
            from tokenward.observe import Alerts, Webhook

            webhooks = [
                Webhook(
                    w["url"],
                    secret=os.environ.get(w["secret_env"]) if w.get("secret_env") else None,
                    name=w.get("name"),
                )
                for w in config.webhooks
            ]
            options: dict[str, Any] = {
                "webhooks": webhooks,
                "log": config.alerts_log,
                "on_disputed": config.on_disputed,
            }
            if config.thresholds is not None:
                options["thresholds"] = config.thresholds
            alerts = Alerts(store, config.alerts_outbox, **options)
            alerts.start()
            self.observers.append(alerts)
            self._closers.append(alerts)
        if config.anomalies:
            from tokenward.observe import Anomalies

            anomalies = Anomalies(store, actions=dict(config.anomalies), alerts=alerts)
            self.observers.append(anomalies)
            self._closers.append(anomalies)
        return self.observers

    def close(self) -> None:
        """Stop the workers (undelivered alerts stay in the outbox for the next start)."""
        for closer in reversed(self._closers):
            try:
                closer.close()
            except Exception:
                log.exception("could not close %r", closer)
