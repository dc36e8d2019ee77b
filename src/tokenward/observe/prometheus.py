"""Prometheus series for spend, budgets, denials, holds and cut-offs (a guard observer).

Series (``prometheus-client`` names; counters get ``_total`` in the exposition):

==========================================  =======  ======================================
name                                        type     labels
==========================================  =======  ======================================
``tokenward_spend_usd_total``               counter  model, provider (priced calls only)
``tokenward_tokens_total``                  counter  model, type (input, output, cache_read,
                                                     cache_write, reasoning)
``tokenward_calls_total``                   counter  model, status (ok, cut_off, ...)
``tokenward_unpriced_calls_total``          counter  model
``tokenward_cutoffs_total``                 counter  model (streams ended at the hold)
``tokenward_holds_total``                   counter  model (reservations taken at admission)
``tokenward_clamps_total``                  counter  budget (output bounds lowered)
``tokenward_denials_total``                 counter  budget, scope, meter
``tokenward_budget_limit``                  gauge    budget, scope, subject_id, meter, window
``tokenward_budget_spent``                  gauge    (same)
``tokenward_budget_held``                   gauge    (same): amounts reserved by calls in flight
``tokenward_budget_remaining``              gauge    (same): limit - spent - held
``tokenward_budget_utilisation_ratio``      gauge    (same): spent / limit
==========================================  =======  ======================================

Prometheus samples are floats: these series are for dashboards and alert rules, while reports
(:mod:`tokenward.observe.reports`) keep money exact. Budget gauges are refreshed from the ledger
for the subject of every admitted, refused or settled call (in a background thread); at most
``max_budget_series`` budget instances are exported, the least recently active dropped first.

:meth:`Prometheus.asgi_app` is the ``/metrics`` endpoint (the gateway mounts it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tokenward.core.budgets import Subject
from tokenward.core.decide import CallPlan
from tokenward.core.events import UsageEvent
from tokenward.errors import BudgetError, BudgetExceeded, MissingDependency
from tokenward.observe._worker import Worker
from tokenward.observe.alerts import _is_control

if TYPE_CHECKING:
    from tokenward.guard.flow import Admission

__all__ = ["Prometheus"]

_BUDGET_LABELS = ("budget", "scope", "subject_id", "meter", "window")


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MissingDependency("prometheus-client", "prometheus") from None
    return prometheus_client


class Prometheus:
    """Prometheus metrics of the guard's calls and of the budgets they touch.

    Args:
        ledger: the ledger budget gauges are read from (None: no budget gauges).
        registry: a ``prometheus_client.CollectorRegistry`` (default: a new one of its own).
        max_budget_series: budget instances exported at most.
        background: refresh budget gauges in a background thread (True) or inline (False).

    Raises:
        MissingDependency: ``prometheus-client`` is not installed (``tokenward[prometheus]``).
    """

    def __init__(
        self,
        ledger: Any = None,
        *,
        registry: Any = None,
        max_budget_series: int = 1000,
        background: bool = True,
    ) -> None:
        pc = _client()
        from tokenward.observe.watch import sync_ledger

        self._pc = pc
        self.ledger = None if ledger is None else sync_ledger(ledger)
        self.registry = registry if registry is not None else pc.CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.spend = pc.Counter(
            "tokenward_spend_usd", "US dollars spent by priced calls.", ["model", "provider"], registry=reg
        )
        self.tokens = pc.Counter("tokenward_tokens", "Tokens used, by type.", ["model", "type"], registry=reg)
        self.calls = pc.Counter(
            "tokenward_calls", "Calls settled, by status.", ["model", "status"], registry=reg
        )
        self.unpriced = pc.Counter(
            "tokenward_unpriced_calls", "Calls whose cost is unknown.", ["model"], registry=reg
        )
        self.cutoffs = pc.Counter(
            "tokenward_cutoffs", "Streams ended by tokenward at their hold.", ["model"], registry=reg
        )
        self.holds = pc.Counter(
            "tokenward_holds", "Reservations taken at admission.", ["model"], registry=reg
        )
        self.clamps = pc.Counter(
            "tokenward_clamps", "Output bounds lowered by a budget.", ["budget"], registry=reg
        )
        self.denials = pc.Counter(
            "tokenward_denials", "Calls refused by a budget.", ["budget", "scope", "meter"], registry=reg
        )
        gauge = pc.Gauge
        self.limit = gauge(
            "tokenward_budget_limit", "Budget limit, in its meter's unit.", _BUDGET_LABELS, registry=reg
        )
        self.spent = gauge(
            "tokenward_budget_spent", "Spent in the current window.", _BUDGET_LABELS, registry=reg
        )
        self.held = gauge("tokenward_budget_held", "Held by calls in flight.", _BUDGET_LABELS, registry=reg)
        self.remaining = gauge(
            "tokenward_budget_remaining", "Limit minus spent minus held.", _BUDGET_LABELS, registry=reg
        )
        self.utilisation = gauge(
            "tokenward_budget_utilisation_ratio",
            "Spent over limit (1 = exhausted).",
            _BUDGET_LABELS,
            registry=reg,
        )
        self.max_budget_series = max_budget_series
        self._series: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._lock = threading.Lock()
        self._background = background
        self._pending: dict[Subject, datetime | None] = {}
        self._worker = (
            Worker(self._refresh_pending, name="tokenward-prometheus")
            if background and ledger is not None
            else None
        )

    def bind(self, ledger: Any) -> None:
        """Read budget gauges from ``ledger`` from now on (in the background thread unless built
        with ``background=False``): the gateway binds its ledger once it is open. Reading it
        inline would put a ledger read on the event loop twice per call (issue 17)."""
        from tokenward.observe.watch import sync_ledger

        self.ledger = sync_ledger(ledger)
        if self._background and self._worker is None:
            self._worker = Worker(self._refresh_pending, name="tokenward-prometheus")

    # -- guard observer hooks ----------------------------------------------------------------------
    def on_admit(self, admission: Admission) -> None:
        """Count the hold (and a clamp); refresh the subject's budget gauges."""
        self.holds.labels(admission.plan.model).inc()
        if admission.decision.clamped_by:
            self.clamps.labels(admission.decision.clamped_by).inc()
        self._schedule(admission.subject, admission.at)

    def on_deny(self, subject: Subject, plan: CallPlan | None, error: BudgetError) -> None:
        """Count the denial."""
        if isinstance(error, BudgetExceeded):
            self.denials.labels(error.budget, error.scope, error.meter).inc()
        else:
            self.denials.labels(getattr(error, "budget", ""), "", "cost_usd").inc()
        self._schedule(subject, None)

    def on_settle(self, event: UsageEvent) -> None:
        """Count spend, tokens, the call and a cut-off; refresh the subject's budget gauges."""
        model = event.model or "unknown"
        if event.cost_usd is not None:
            self.spend.labels(model, event.provider or "unknown").inc(float(event.cost_usd))
        else:
            self.unpriced.labels(model).inc()
        usage = event.usage
        for kind, value in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
            ("reasoning", usage.reasoning_tokens),
        ):
            if value:
                self.tokens.labels(model, kind).inc(value)
        self.calls.labels(model, event.status).inc()
        if event.status == "cut_off":
            self.cutoffs.labels(model).inc()
        self._schedule(event.subject, event.at)

    # -- budget gauges -------------------------------------------------------------------------------
    def _schedule(self, subject: Subject, at: datetime | None) -> None:
        if self.ledger is None:
            return
        if self._worker is None:
            self._refresh((subject, at))
            return
        # one refresh per subject waiting, however many calls of it are admitted and settled
        # meanwhile: the gauges are read once per burst, not twice per call
        with self._lock:
            waiting = subject in self._pending
            self._pending[subject] = at
        if not waiting:
            self._worker.submit(subject)

    def _refresh_pending(self, subject: Subject) -> None:
        with self._lock:
            at = self._pending.pop(subject, None)
        self._refresh((subject, at))

    def _refresh(self, item: tuple[Subject, datetime | None]) -> None:
        assert self.ledger is not None
        subject, at = item
        for balance in self.ledger.balances(subject, at):
            budget = balance.budget
            if _is_control(budget.name):
                continue
            labels = (budget.name, budget.scope, balance.subject_id, budget.meter, str(budget.window))
            self.limit.labels(*labels).set(float(budget.limit))
            self.spent.labels(*labels).set(float(balance.spent))
            self.held.labels(*labels).set(float(balance.held))
            self.remaining.labels(*labels).set(float(balance.remaining))
            self.utilisation.labels(*labels).set(float(balance.spent / budget.limit) if budget.limit else 0.0)
            with self._lock:
                self._series.pop(labels, None)
                self._series[labels] = None
                while len(self._series) > self.max_budget_series:
                    old, _ = self._series.popitem(last=False)
                    for gauge in (self.limit, self.spent, self.held, self.remaining, self.utilisation):
                        gauge.remove(*old)

    def flush(self) -> None:
        """Wait until the budget gauges reflect every observed call."""
        if self._worker is not None:
            self._worker.flush()

    def close(self) -> None:
        """Stop the background thread."""
        if self._worker is not None:
            self._worker.stop()

    # -- exposition ----------------------------------------------------------------------------------
    def asgi_app(self) -> Any:
        """An ASGI app serving the text exposition format (mount it at ``/metrics``)."""
        return self._pc.make_asgi_app(registry=self.registry)

    def exposition(self) -> bytes:
        """The current metrics in the text exposition format."""
        return bytes(self._pc.generate_latest(self.registry))
