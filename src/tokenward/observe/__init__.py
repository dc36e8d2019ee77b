"""See the spend: alerts, burn rate, forecasts, anomalies, telemetry and reports.

Everything here is fed from usage events, either live as guard observers (pass them to
``Guard(..., observers=[...])`` or ``create_app(config, observers=[...])``) or over a ledger's
history (reports).

* :class:`Alerts` (:mod:`~tokenward.observe.watch`): budget thresholds, exhaustion and forecasts,
  delivered to webhooks (Standard Webhooks signatures), the log and Python callbacks from a durable
  SQLite outbox, once per budget, window and threshold.
* :class:`BurnRates` (:mod:`~tokenward.observe.burnrate`) and :func:`forecast_window`
  (:mod:`~tokenward.observe.forecast`): smoothed spend rates and projections over a budget's own
  window.
* :class:`Anomalies` (:mod:`~tokenward.observe.actions`): runaway loops, spikes and growing
  context, with alert / pause / stop actions (:func:`pause_session`, :func:`resume_session`).
* :class:`Telemetry` (OpenTelemetry spans and GenAI metrics; extra ``otel``) and
  :class:`Prometheus` (``/metrics``; extra ``prometheus``).
* :mod:`~tokenward.observe.reports` and :mod:`~tokenward.observe.charts` (extra ``charts``).
"""

from tokenward.observe.actions import Anomalies, is_paused, pause_session, resume_session
from tokenward.observe.alerts import DEFAULT_THRESHOLDS, Alert, threshold_alerts
from tokenward.observe.anomalies import (
    Call,
    ContextGrowthDetector,
    Finding,
    LoopDetector,
    SpikeDetector,
    scan_sessions,
)
from tokenward.observe.burnrate import BurnRate, BurnRates
from tokenward.observe.delivery import Backoff, CallbackSink, Dispatcher, LogSink
from tokenward.observe.forecast import Forecast, exhaustion_at, forecast_window
from tokenward.observe.outbox import Outbox
from tokenward.observe.prometheus import Prometheus
from tokenward.observe.rows import Row, RowSource, open_rows
from tokenward.observe.telemetry import Telemetry
from tokenward.observe.watch import Alerts
from tokenward.observe.webhooks import Webhook, sign, verify

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Alert",
    "Alerts",
    "Anomalies",
    "Backoff",
    "BurnRate",
    "BurnRates",
    "Call",
    "CallbackSink",
    "ContextGrowthDetector",
    "Dispatcher",
    "Finding",
    "Forecast",
    "LogSink",
    "LoopDetector",
    "Outbox",
    "Prometheus",
    "Row",
    "RowSource",
    "SpikeDetector",
    "Telemetry",
    "Webhook",
    "exhaustion_at",
    "forecast_window",
    "is_paused",
    "open_rows",
    "pause_session",
    "resume_session",
    "scan_sessions",
    "sign",
    "threshold_alerts",
    "verify",
]
