"""Prometheus series for spend, budgets, denials, holds and cut-offs (a guard observer).

Series (``prometheus-client`` names; counters get ``_total`` in the exposition):

==========================================  =========  ======================================
name                                        type       labels
==========================================  =========  ======================================
``tokenward_spend_usd_total``               counter    model, provider (priced calls only)
``tokenward_tokens_total``                  counter    model, type (input, output, cache_read,
                                                       cache_write, reasoning)
``tokenward_calls_total``                   counter    model, status (ok, cut_off, ...)
``tokenward_unpriced_calls_total``          counter    model
``tokenward_cutoffs_total``                 counter    model (streams ended at the hold)
``tokenward_holds_total``                   counter    model (reservations taken at admission)
``tokenward_clamps_total``                  counter    budget (output bounds lowered)
``tokenward_denials_total``                 counter    budget, scope, meter
``tokenward_budget_limit``                  gauge      budget, scope, subject_id, meter, window
``tokenward_budget_spent``                  gauge      (same)
``tokenward_budget_held``                   gauge      (same): amounts reserved by calls in flight
``tokenward_budget_remaining``              gauge      (same): limit - spent - held
``tokenward_budget_utilisation_ratio``      gauge      (same): spent / limit
``tokenward_settle_lag_seconds``            histogram  none: from the end of a call's answer to
                                                       its usage event being durable in the
                                                       ledger (buckets 0.1 ms .. 10 s)
==========================================  =========  ======================================

Prometheus samples are floats: these series are for dashboards and alert rules, while reports
(:mod:`tokenward.observe.reports`) keep money exact. Budget gauges are refreshed from the ledger
for the subject of every admitted, refused or settled call (in a background thread, at most once
a second per subject and ``max_refreshes_per_second`` subjects a second in all: the gauges lag
the ledger by up to a second, longer when more subjects are busy than that); at most
``max_budget_series`` budget instances are exported, the least recently active dropped first.

:meth:`Prometheus.asgi_app` is the ``/metrics`` endpoint (the gateway mounts it).

Several processes (``tokenward serve --workers N``): when ``PROMETHEUS_MULTIPROC_DIR`` was set
before this process imported ``prometheus_client`` (the supervisor sets it for its workers),
counters and the histogram go to prometheus-client's per-process files and ``/metrics`` adds up
every process's, dead ones included; budget gauges go to one shared table holding the most recent
reading of each budget instance (:mod:`tokenward.observe.multiprocess`). So every scrape, whichever
worker answers it, shows the same totals. Without the variable nothing of this is used.
"""

from __future__ import annotations

import threading
import time
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
_BUDGET_GAUGES = (  # attribute, name, help: in the order of SharedBudgetGauges' values
    ("limit", "tokenward_budget_limit", "Budget limit, in its meter's unit."),
    ("spent", "tokenward_budget_spent", "Spent in the current window."),
    ("held", "tokenward_budget_held", "Held by calls in flight."),
    ("remaining", "tokenward_budget_remaining", "Limit minus spent minus held."),
    ("utilisation", "tokenward_budget_utilisation_ratio", "Spent over limit (1 = exhausted)."),
)

SETTLE_LAG_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds (seconds) of ``tokenward_settle_lag_seconds``' buckets, 0.1 ms to 10 s (+Inf)."""


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
        registry: a ``prometheus_client.CollectorRegistry`` the series are registered in (default:
            a new one of its own). It is the one ``/metrics`` serves, except in multiprocess mode
            (see the module's docstring), where :attr:`scrape_registry` collects every process.
        max_budget_series: budget instances exported at most.
        background: refresh budget gauges in a background thread (True) or inline (False).
        refresh_seconds: in the background, a subject's gauges are read at most once per this
            many seconds, however many of its calls are observed meanwhile (:meth:`flush` does
            not wait it out).
        max_refreshes_per_second: in the background, subjects' gauges read at most this many
            times a second in all (with a thousand busy sessions, a read per subject per second
            would be a ledger read on nearly every call); a subject waiting meanwhile is read once
            for all its calls.
        max_queue: in the background, subjects waiting for a read at most (the background
            thread's queue); a subject observed while it is full is not read for that call, but
            is queued again by its next call.

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
        refresh_seconds: float = 1.0,
        max_refreshes_per_second: float = 50.0,
        max_queue: int = 100_000,
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
        self.settle_lag = pc.Histogram(
            "tokenward_settle_lag_seconds",
            "Time from the end of a call's answer to its usage event being durable in the ledger.",
            buckets=SETTLE_LAG_BUCKETS,
            registry=reg,
        )
        from tokenward.observe.multiprocess import SharedBudgetGauges, active_dir

        directory = active_dir()
        self._shared = None if directory is None else SharedBudgetGauges(directory, max_budget_series)
        gauges: dict[str, Any] = {  # with several processes the gauges live in the shared table
            attribute: None if self._shared else pc.Gauge(name, documentation, _BUDGET_LABELS, registry=reg)
            for attribute, name, documentation in _BUDGET_GAUGES
        }
        self.limit: Any = gauges["limit"]
        self.spent: Any = gauges["spent"]
        self.held: Any = gauges["held"]
        self.remaining: Any = gauges["remaining"]
        self.utilisation: Any = gauges["utilisation"]
        self.scrape_registry = reg if directory is None else self._multiprocess_registry(directory)
        self.max_budget_series = max_budget_series
        self._series: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._lock = threading.Lock()
        self._background = background
        self._pending: dict[Subject, datetime | None] = {}
        self.refresh_seconds = refresh_seconds
        self._refreshed: dict[Subject, float] = {}  # when each subject's gauges were last read
        self._gap = 1.0 / max_refreshes_per_second  # seconds between two reads, whatever subject
        self._last_read = float("-inf")
        self._hurry = threading.Event()  # set by flush(): no waiting out refresh_seconds
        self._max_queue = max_queue
        self._worker = self._new_worker() if background and ledger is not None else None

    def bind(self, ledger: Any) -> None:
        """Read budget gauges from ``ledger`` from now on (in the background thread unless built
        with ``background=False``): the gateway binds its ledger once it is open. Reading it
        inline would put a ledger read on the event loop twice per call (issue 17)."""
        from tokenward.observe.watch import sync_ledger

        self.ledger = sync_ledger(ledger)
        if self._background and self._worker is None:
            self._worker = self._new_worker()

    def _new_worker(self) -> Worker:
        return Worker(self._refresh_pending, name="tokenward-prometheus", max_queue=self._max_queue)

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
        # meanwhile: the gauges are read once per burst, not twice per call. A subject is
        # remembered as waiting only once it is queued: one dropped by a full queue is queued
        # again by its next call, and no more subjects wait than the queue holds (+1 being read).
        # Queued under the lock: the thread pops a subject under it, so never before it is noted
        with self._lock:
            if subject in self._pending or self._worker.submit(subject):
                self._pending[subject] = at

    def _refresh_pending(self, subject: Subject) -> None:
        # at most one read per subject per refresh_seconds: the calls of a busy subject observed
        # meanwhile wait with this one (issue 17: two balance reads per call cost more CPU than
        # the budget checks themselves; a scrape every few seconds needs no fresher gauges)
        last = self._refreshed.get(subject)
        if last is not None:
            self._hurry.wait(self.refresh_seconds - (time.monotonic() - last))
        self._hurry.wait(self._gap - (time.monotonic() - self._last_read))  # the cap on all reads
        self._last_read = time.monotonic()
        with self._lock:
            at = self._pending.pop(subject, None)
        self._refresh((subject, at))
        now = time.monotonic()
        self._refreshed[subject] = now
        if len(self._refreshed) > 2 * self.max_budget_series:  # forget the subjects gone quiet
            self._refreshed = {k: t for k, t in self._refreshed.items() if now - t < self.refresh_seconds}

    def _refresh(self, item: tuple[Subject, datetime | None]) -> None:
        assert self.ledger is not None
        subject, at = item
        read_at = time.time()
        shared: list[tuple[tuple[str, ...], tuple[float, ...]]] = []
        for balance in self.ledger.balances(subject, at):
            budget = balance.budget
            if _is_control(budget.name):
                continue
            labels = (budget.name, budget.scope, balance.subject_id, budget.meter, str(budget.window))
            values = (
                float(budget.limit),
                float(balance.spent),
                float(balance.held),
                float(balance.remaining),
                float(balance.spent / budget.limit) if budget.limit else 0.0,
            )
            if self._shared is not None:
                shared.append((labels, values))
                continue
            for gauge, value in zip(
                (self.limit, self.spent, self.held, self.remaining, self.utilisation), values, strict=True
            ):
                gauge.labels(*labels).set(value)
            with self._lock:
                self._series.pop(labels, None)
                self._series[labels] = None
                while len(self._series) > self.max_budget_series:
                    old, _ = self._series.popitem(last=False)
                    for gauge in (self.limit, self.spent, self.held, self.remaining, self.utilisation):
                        gauge.remove(*old)
        if self._shared is not None:
            self._shared.put(shared, read_at)

    # -- settle lag ----------------------------------------------------------------------------------
    def observe_settle_lag(self, seconds: float) -> None:
        """Record one call's settle lag: from the end of its answer to its usage event being
        durable in the ledger, in seconds (a negative value, from a clock step, counts as 0)."""
        self.settle_lag.observe(seconds if seconds > 0 else 0.0)

    def flush(self) -> None:
        """Wait until the budget gauges reflect every observed call (now: without waiting out
        ``refresh_seconds``)."""
        if self._worker is not None:
            self._hurry.set()
            try:
                self._worker.flush()
            finally:
                self._hurry.clear()

    def close(self) -> None:
        """Stop the background thread (and close the shared gauges' table)."""
        if self._worker is not None:
            self._worker.stop()
        if self._shared is not None:
            self._shared.close()

    # -- exposition ----------------------------------------------------------------------------------
    def _multiprocess_registry(self, directory: str) -> Any:
        """A registry collecting every process's series from ``directory`` (prometheus-client's
        files) and the shared budget gauges; the series themselves are registered elsewhere,
        or a scrape would list this process's twice."""
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = self._pc.CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        registry.register(_SharedGaugesCollector(self))
        return registry

    def asgi_app(self) -> Any:
        """An ASGI app serving the text exposition format (mount it at ``/metrics``)."""
        return self._pc.make_asgi_app(registry=self.scrape_registry)

    def exposition(self) -> bytes:
        """The current metrics in the text exposition format."""
        return bytes(self._pc.generate_latest(self.scrape_registry))


class _SharedGaugesCollector:
    """The budget gauges of every process, from :class:`~tokenward.observe.multiprocess.SharedBudgetGauges`."""

    def __init__(self, prometheus: Prometheus) -> None:
        self.prometheus = prometheus

    def collect(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        shared = self.prometheus._shared
        assert shared is not None
        families = [GaugeMetricFamily(name, doc, labels=_BUDGET_LABELS) for _, name, doc in _BUDGET_GAUGES]
        for labels, values in shared.latest():
            for family, value in zip(families, values, strict=True):
                family.add_metric(labels, value)
        return families
