"""Acting on anomalies: alert, pause the session, or stop it; for context growth, fit it.

Pausing and stopping go through the mechanism every guard already respects: a hard budget. To
pause session ``s-1``, tokenward puts the budget ``tokenward.pause:session=s-1`` (scope
``session``, id ``s-1``, meter ``requests``, limit 0, mode ``hard``) into the ledger, so the
session's next call is refused like any exhausted budget, by every gateway and SDK sharing the
ledger: the gateway answers 402 naming that budget. Stopping puts ``tokenward.stop:session=s-1``
instead: the same refusal, meant for good (:func:`resume_session` lifts a stop only with
``force=True``). Deleting the budget (``resume_session``, or the CLI) lets the session go on.

:class:`Anomalies` is the guard observer that runs the detectors of
:mod:`tokenward.observe.anomalies` live and applies the configured action per kind. Each finding
is also kept in the ledger's audit log (actor ``detector``, action ``anomaly.<kind>``), where the
dashboard of every process shows the latest ones.

**fit** (opt-in, ``context_growth`` only, for the SDK): when a session's prompt keeps growing, the
SDK guard this observer watches fits the session's history on its next call and every call after
(:mod:`tokenward.sdk.fit`: the oldest turns dropped, the system prompt, the last turns and every
tool call with its results kept) to ``fit_share`` of the prompt that fired the finding; each fitted
call's usage event says so in ``metadata.fitted`` (the bound, the messages dropped, the finding's
request id). The gateway does not offer it: the history belongs to the client.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from tokenward.core.budgets import Budget
from tokenward.core.events import UsageEvent
from tokenward.errors import ConfigError, TokenwardError
from tokenward.ledger import Ledger
from tokenward.observe._worker import Worker
from tokenward.observe.alerts import PAUSE_PREFIX, STOP_PREFIX
from tokenward.observe.anomalies import (
    Call,
    ContextGrowthDetector,
    Finding,
    LoopDetector,
    SpikeDetector,
    _usage_fingerprints,
    plan_fingerprint,
)
from tokenward.observe.watch import Alerts, sync_ledger

if TYPE_CHECKING:
    from tokenward.guard.flow import Admission

__all__ = [
    "ACTIONS",
    "Action",
    "Anomalies",
    "control_budget_name",
    "is_paused",
    "pause_session",
    "resume_session",
]

log = logging.getLogger("tokenward.anomalies")

Action = Literal["alert", "pause", "stop", "fit"]
ACTIONS: tuple[str, ...] = ("alert", "pause", "stop", "fit")
FIT_KINDS = ("context_growth",)
"""The finding kinds the ``fit`` action applies to."""
DEFAULT_ACTIONS: Mapping[str, Action] = {"loop": "alert", "spike": "alert", "context_growth": "alert"}

_SAFE = re.compile(r"^[A-Za-z0-9_.:@/=\-]{1,170}$")


def control_budget_name(session: str, *, stop: bool = False) -> str:
    """The budget that pauses (or stops) ``session``: ``tokenward.pause:session=<id>``; a
    session id that does not fit a budget name is replaced by a hash of it."""
    ident = session if _SAFE.match(session) else "sha256-" + hashlib.sha256(session.encode()).hexdigest()[:32]
    return f"{STOP_PREFIX if stop else PAUSE_PREFIX}session={ident}"


def pause_session(ledger: Ledger, session: str, *, stop: bool = False) -> Budget:
    """Refuse every further call of ``session``: a hard ``requests`` budget of 0 on it.

    Returns:
        The budget put into the ledger.
    """
    budget = Budget(
        name=control_budget_name(session, stop=stop),
        scope="session",
        meter="requests",
        limit=Decimal(0),
        subject_id=session,
        mode="hard",
    )
    ledger.put_budget(budget)
    return budget


def resume_session(ledger: Ledger, session: str, *, force: bool = False) -> bool:
    """Lift a pause (and, with ``force``, a stop) of ``session``; returns whether one was lifted.

    Raises:
        ConfigError: the session is stopped and ``force`` is False.
    """
    if ledger.get_budget(control_budget_name(session, stop=True)) is not None:
        if not force:
            raise ConfigError(f"session {session!r} was stopped, not paused; pass force=True to let it go on")
        ledger.delete_budget(control_budget_name(session, stop=True))
        ledger.delete_budget(control_budget_name(session))
        return True
    return ledger.delete_budget(control_budget_name(session))


def is_paused(ledger: Ledger, session: str) -> Action | None:
    """``"stop"`` or ``"pause"`` when the session is held by a control budget, else None."""
    if ledger.get_budget(control_budget_name(session, stop=True)) is not None:
        return "stop"
    if ledger.get_budget(control_budget_name(session)) is not None:
        return "pause"
    return None


class Anomalies:
    """Runs the anomaly detectors on the guard's calls and acts on what they find (an observer).

    Args:
        ledger: where pauses and stops are put (a ledger, the gateway's async ledger, or a URL).
        actions: per finding kind (``loop``, ``spike``, ``context_growth``), ``alert``, ``pause``
            or ``stop``, and for ``context_growth`` also ``fit``; default: alert on all. Pausing,
            stopping or fitting also alerts.
        fit_share: with the ``fit`` action, the share of the prompt that fired the finding that
            the session's later calls are fitted to (default 0.5).
        fit_keep_last: the groups at the end a fit always keeps (default 2).
        alerts: where ``anomaly`` alerts go (an :class:`~tokenward.observe.watch.Alerts`); without
            it findings are only logged and kept in :attr:`findings`.
        loops / growth / spikes: the detectors (see :mod:`tokenward.observe.anomalies`).
        spike_scopes: scopes watched for spikes.
        on_finding: called with each new finding and the action taken.
        background: run in a background thread (True) or inline (False, for tests).
        max_kept: at most this many findings are kept in :attr:`findings` (the latest), and at
            most this many admitted calls are remembered until their settle (a call released
            without a usage event is never settled; the oldest is forgotten first, and its settle,
            if it comes, checks its request fingerprint again). Default 100,000.
    """

    def __init__(
        self,
        ledger: Any,
        *,
        actions: Mapping[str, str] | None = None,
        alerts: Alerts | None = None,
        loops: LoopDetector | None = None,
        growth: ContextGrowthDetector | None = None,
        spikes: SpikeDetector | None = None,
        spike_scopes: tuple[str, ...] = ("user", "key", "project", "team", "org"),
        on_finding: Callable[[Finding, str], object] | None = None,
        background: bool = True,
        fit_share: Decimal | str | float = Decimal("0.5"),
        fit_keep_last: int = 2,
        max_kept: int = 100_000,
    ) -> None:
        self.ledger = sync_ledger(ledger)
        merged = dict(DEFAULT_ACTIONS)
        for kind, action in (actions or {}).items():
            if kind not in DEFAULT_ACTIONS:
                raise ConfigError(f"anomaly kind {kind!r} unknown; known: {', '.join(DEFAULT_ACTIONS)}")
            if action not in ACTIONS:
                raise ConfigError(f"anomaly action {action!r} unknown; known: {', '.join(ACTIONS)}")
            if action == "fit" and kind not in FIT_KINDS:
                raise ConfigError(
                    f"anomaly action 'fit' applies to {', '.join(FIT_KINDS)} only, not {kind!r}"
                )
            merged[kind] = action  # type: ignore[assignment]
        self.actions = merged
        self.alerts = alerts
        self.loops = loops or LoopDetector()
        self.growth = growth or ContextGrowthDetector()
        self.spikes = spikes or SpikeDetector()
        self.spike_scopes = spike_scopes
        self.on_finding = on_finding
        self.findings: deque[Finding] = deque(maxlen=max_kept)
        if max_kept < 1:
            raise ConfigError(f"max_kept must be at least 1, got {max_kept!r}")
        self._max_kept = max_kept
        self.fit_share = Decimal(str(fit_share))
        if not Decimal(0) < self.fit_share <= 1:
            raise ConfigError(f"fit_share must be above 0 and at most 1, got {fit_share!r}")
        self.fit_keep_last = fit_keep_last
        self._fits: dict[str, dict[str, Any]] = {}
        self._reported: set[tuple[str, str, str]] = set()
        self._admitted: dict[str, None] = {}  # request ids, oldest first
        self._previous: dict[str, int] = {}
        self._lock = threading.Lock()
        self._fit_lock = threading.Lock()
        self._worker = Worker(self._handle, name="tokenward-anomalies") if background else None

    def fit_order(self, session: str) -> dict[str, Any] | None:
        """What the SDK should fit session ``session``'s calls to, since a ``fit`` action fired for
        it: ``{"max_input_tokens", "keep_last", "finding"}`` (the finding's request id), or None."""
        with self._fit_lock:
            order = self._fits.get(session)
            return None if order is None else dict(order)

    # -- guard observer hooks ----------------------------------------------------------------------
    def on_admit(self, admission: Admission) -> None:
        """An admitted call: check its request fingerprint for a loop."""
        self._submit(("admit", admission))

    def on_settle(self, event: UsageEvent) -> None:
        """A settled call: growth, spikes, and step fingerprints."""
        self._submit(("settle", event))

    def _submit(self, item: tuple[str, Any]) -> None:
        if self._worker is None:
            self._handle(item)
        else:
            self._worker.submit(item)

    def flush(self) -> None:
        """Wait until every observed call has been checked."""
        if self._worker is not None:
            self._worker.flush()

    def close(self) -> None:
        """Check what is queued, then stop the background thread."""
        if self._worker is not None:
            self._worker.stop()

    # -- detection -----------------------------------------------------------------------------------
    def _handle(self, item: tuple[str, Any]) -> None:
        with self._lock:
            if item[0] == "admit":
                self._admit(item[1])
            else:
                self._settle(item[1])

    def _admit(self, admission: Admission) -> None:
        session = admission.subject.session
        self._admitted[admission.request_id] = None
        if len(self._admitted) > self._max_kept:  # released calls are never settled
            del self._admitted[next(iter(self._admitted))]
        if session is None:
            return
        plan = admission.plan
        call = Call(
            session, admission.at, plan.model, plan.input_tokens, None, request_id=admission.request_id
        )
        fingerprint = plan_fingerprint(plan.model, plan.input_tokens, plan.max_output_tokens)
        self._act(self.loops.check(session, "request", fingerprint, call), admission.subject.project)

    def _settle(self, event: UsageEvent) -> None:
        subject = event.subject
        step = event.metadata.get("step")
        call = Call(
            session=subject.session,
            at=event.at,
            model=event.model,
            input_tokens=event.usage.input_tokens,
            output_tokens=event.usage.output_tokens,
            cache_read_tokens=event.usage.cache_read_tokens,
            step=step if isinstance(step, int) else None,
            request_id=event.request_id,
            fingerprint=event.metadata.get("request_fingerprint"),
        )
        admitted = event.request_id in self._admitted
        self._admitted.pop(event.request_id, None)
        if call.session is not None:
            for kind, fingerprint in _usage_fingerprints(call, self._previous.get(call.session)):
                if kind == "request" and admitted and call.fingerprint is None:
                    continue  # already checked from its plan at admission
                self._act(self.loops.check(call.session, kind, fingerprint, call), subject.project)
            self._act(self.growth.check(call), subject.project)
            if call.input_tokens is not None:
                self._previous[call.session] = call.input_tokens
                if len(self._previous) > 100_000:
                    del self._previous[next(iter(self._previous))]
        for scope in self.spike_scopes:
            value = subject.value(scope)
            if value is not None:
                self._act(self.spikes.check(scope, value, call), subject.project)

    def _record(self, finding: Finding, action: str, project: str | None) -> None:
        """Keep ``finding`` in the ledger's audit log (actor ``detector``, action
        ``anomaly.<kind>``, target ``<scope>=<id>``, the finding and the action taken as
        ``after``), where every process's dashboard reads the latest anomalies. A ledger that
        cannot take it is logged; detection goes on."""
        audit = getattr(self.ledger, "audit", None)
        if audit is None:
            return
        try:
            audit(
                "detector",
                f"anomaly.{finding.kind}",
                f"{finding.scope}={finding.subject_id}",
                after={**finding.to_dict(), "action": action},
                project=project,
            )
        except TokenwardError as exc:
            log.error("could not record the %s finding in the ledger: %s", finding.kind, exc)

    def _act(self, finding: Finding | None, project: str | None = None) -> None:
        if finding is None:
            return
        key = (finding.kind, finding.scope, finding.subject_id)
        if key in self._reported and finding.kind != "spike":
            return
        self._reported.add(key)
        action = self.actions[finding.kind]
        if action in ("pause", "stop") and finding.session is not None:
            pause_session(self.ledger, finding.session, stop=action == "stop")
        elif action == "fit" and finding.session is not None:
            prompt = int(finding.details.get("input_tokens") or 0)
            with self._fit_lock:
                self._fits[finding.session] = {
                    "max_input_tokens": max(1, int(prompt * self.fit_share)),
                    "keep_last": self.fit_keep_last,
                    "finding": finding.request_id,
                }
                while len(self._fits) > 100_000:
                    del self._fits[next(iter(self._fits))]
        elif action in ("pause", "stop", "fit"):
            action = "alert"  # nothing to pause: the finding is not about one session
        self.findings.append(finding)
        log.warning("%s (%s)", finding.message, action)
        self._record(finding, action, project)
        if self.alerts is not None:
            self.alerts.raise_alerts([finding.to_alert(action)])
        if self.on_finding is not None:
            self.on_finding(finding, action)
