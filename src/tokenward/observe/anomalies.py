"""Overrun and anomaly detectors: runaway loops, burn-rate spikes, context that keeps growing.

Each detector is a small state machine fed one call at a time; it returns a :class:`Finding` when
its rule fires. They run live (:class:`~tokenward.observe.actions.Anomalies`, a guard observer
that also acts on findings) and over history (:func:`scan_sessions`, used by ``tokenward report
anomalies`` and on the recorded traces).

**Runaway loop** (:class:`LoopDetector`): the same request repeated within a session. A request
is identified by a *fingerprint*:

* ``request``: what was asked. Live, the admission's plan (model, prompt estimate, output bound:
  the estimate is a deterministic count of the request body, so an identical request gives an
  identical plan), or an explicit ``request_fingerprint`` in the event's metadata when the caller
  records one. Over history, where only usage survives, the model and the exact prompt size.
* ``turn``: what one step of an agent did, for agents that re-send their history: the model, how
  much the prompt grew since the previous call (last answer plus the new observation) and the
  answer's size. An agent repeating one action and getting the same observation repeats this.

The rule: a fingerprint seen ``repeats`` times (default 3) among the session's last ``within``
calls (default 20). Why 3: one repeat is what a client's retry after a timeout or a dropped
connection looks like; a second identical repeat means neither the retry logic nor the agent is
making progress. Why 20: a loop may cycle through a few different calls (A, B, A, B, ...); 20
calls catch cycles up to 6 calls long at three passes. Why exact equality and not "similar":
growing-history agents never send the same prompt size twice by accident, and an exact match of
two token counts (or of three, for ``turn``) by chance in 20 calls is rare (~1 in 10^4 per call
with sizes spread over hundreds of values); the thresholds were set from this reasoning, not
fitted to any trace.

**Burn-rate spike** (:class:`SpikeDetector`): a scope's token rate over the last couple of
minutes (decayed, tau 2 min) at least ``ratio`` (5) times its own baseline (tau 30 min), above a
floor, once the scope has an hour of history (before that the baseline is still rising and any
start looks like a spike; a steadily growing agent stays below 2x after an hour).

**Context growth** (:class:`ContextGrowthDetector`): the prompt grew on each of the last ``steps``
calls (10) and is now at least ``ratio`` times (4) the session's first prompt: the client re-sends
its whole history every call, and that history is now three quarters of every prompt, so the
session's input cost grows with the square of its length.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from tokenward.clock import utc
from tokenward.observe.alerts import Alert
from tokenward.observe.burnrate import DecayedRate

__all__ = [
    "Call",
    "ContextGrowthDetector",
    "Finding",
    "FindingKind",
    "LoopDetector",
    "SpikeDetector",
    "plan_fingerprint",
    "scan_sessions",
]

FindingKind = Literal["loop", "spike", "context_growth"]


@dataclass(frozen=True, slots=True)
class Call:
    """What the detectors need to know of one call (from a usage event, a ledger row or a trace).

    Attributes:
        session: the session it belongs to (loops and growth are per session).
        at: when it happened (UTC).
        model: the model.
        input_tokens / output_tokens / cache_read_tokens: token counts, None when unknown.
        step: position in its session, when known.
        request_id: the call's id, when known.
        fingerprint: an explicit request fingerprint, when the caller recorded one.
        scopes: other scope values (``user``, ``key``...) for spike detection.
    """

    session: str | None
    at: datetime
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None = None
    step: int | None = None
    request_id: str | None = None
    fingerprint: str | None = None
    scopes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Finding:
    """A detector fired.

    Attributes:
        kind: ``loop``, ``spike`` or ``context_growth``.
        scope / subject_id: what it is about (``session``/``s-1``; a spike may be on ``user``...).
        session: the session of the call that fired it (the one an action pauses), if any.
        at: when (UTC).
        message: one human-readable line.
        details: the evidence (JSON-ready).
        step / request_id: the call that fired it.
    """

    kind: FindingKind
    scope: str
    subject_id: str
    session: str | None
    at: datetime
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    request_id: str | None = None

    def to_alert(self, action: str = "alert") -> Alert:
        """As an ``anomaly`` alert, raised once per kind and subject (a spike: once per hour)."""
        window = utc(self.at).strftime("%Y-%m-%dT%H:00:00Z") if self.kind == "spike" else ""
        return Alert(
            kind="anomaly",
            budget=self.kind,
            scope=self.scope,
            subject_id=self.subject_id,
            window_key=window,
            at=self.at,
            message=self.message + ("" if action == "alert" else f"; action: {action}"),
            details={**self.details, "action": action, "session": self.session, "step": self.step},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "kind": self.kind,
            "scope": self.scope,
            "subject_id": self.subject_id,
            "session": self.session,
            "at": utc(self.at).isoformat().replace("+00:00", "Z"),
            "step": self.step,
            "request_id": self.request_id,
            "message": self.message,
            "details": self.details,
        }


def plan_fingerprint(model: str, input_tokens: int, max_output_tokens: int) -> str:
    """The ``request`` fingerprint of an admission: a short hash of model, prompt estimate and
    output bound (an identical request body always gives the same three)."""
    return "plan:" + hashlib.sha256(f"{model}|{input_tokens}|{max_output_tokens}".encode()).hexdigest()[:16]


class LoopDetector:
    """The same request ``repeats`` times among a session's last ``within`` calls.

    Args:
        repeats: identical fingerprints that make a loop (default 3: two repeats).
        within: how many of the session's latest calls are compared (default 20).
        max_sessions: sessions remembered at most (the least recently seen are forgotten).
    """

    def __init__(self, repeats: int = 3, within: int = 20, *, max_sessions: int = 100_000) -> None:
        if repeats < 2 or within < repeats:
            raise ValueError("a loop needs repeats >= 2 and within >= repeats")
        self.repeats = repeats
        self.within = within
        self.max_sessions = max_sessions
        self._recent: dict[tuple[str, str], deque[str]] = {}

    def observe(self, session: str, kind: str, fingerprint: str) -> int:
        """Record one call's fingerprint (``kind`` is ``request`` or ``turn``); returns how many
        times it occurs among the session's last ``within`` calls of that kind (this one included)."""
        key = (session, kind)
        recent = self._recent.pop(key, None)
        if recent is None:
            recent = deque(maxlen=self.within)
        self._recent[key] = recent
        recent.append(fingerprint)
        while len(self._recent) > self.max_sessions:
            del self._recent[next(iter(self._recent))]
        return recent.count(fingerprint)

    def check(self, session: str, kind: str, fingerprint: str, call: Call) -> Finding | None:
        """:meth:`observe`, and a finding when the count reaches :attr:`repeats`."""
        count = self.observe(session, kind, fingerprint)
        if count < self.repeats:
            return None
        what = "request" if kind == "request" else "step (same answer size, same prompt growth)"
        return Finding(
            kind="loop",
            scope="session",
            subject_id=session,
            session=session,
            at=call.at,
            message=(
                f"session {session!r} repeated the same {what} {count} times in its last {self.within} calls: "
                "a runaway loop"
            ),
            details={
                "fingerprint_kind": kind,
                "fingerprint": fingerprint,
                "count": count,
                "within": self.within,
                "model": call.model,
                "input_tokens": call.input_tokens,
                "output_tokens": call.output_tokens,
            },
            step=call.step,
            request_id=call.request_id,
        )


class ContextGrowthDetector:
    """A session whose prompt grew on each of its last ``steps`` calls and is now ``ratio`` times
    its first prompt (history re-sent every call).

    Args:
        steps: consecutive growing calls (default 10).
        ratio: current prompt over the session's first prompt (default 4).
    """

    def __init__(self, steps: int = 10, ratio: Decimal = Decimal(4), *, max_sessions: int = 100_000) -> None:
        self.steps = steps
        self.ratio = ratio
        self.max_sessions = max_sessions
        self._state: dict[str, list[int]] = {}  # session -> [first, last, run, calls, input sum, cached sum]

    def check(self, call: Call) -> Finding | None:
        """Feed one call of ``call.session``; a finding when the rule holds."""
        if call.session is None or call.input_tokens is None:
            return None
        state = self._state.pop(call.session, None)
        if state is None:
            state = [call.input_tokens, call.input_tokens, 0, 0, 0, 0]
        else:
            state[2] = state[2] + 1 if call.input_tokens > state[1] else 0
            state[1] = call.input_tokens
        state[3] += 1
        state[4] += call.input_tokens
        state[5] += call.cache_read_tokens or 0
        self._state[call.session] = state
        while len(self._state) > self.max_sessions:
            del self._state[next(iter(self._state))]
        first, last, run = state[0], state[1], state[2]
        if run < self.steps or first <= 0 or Decimal(last) < self.ratio * first:
            return None
        return Finding(
            kind="context_growth",
            scope="session",
            subject_id=call.session,
            session=call.session,
            at=call.at,
            message=(
                f"session {call.session!r}: the prompt grew on each of the last {run} calls and is now {last:,} "
                f"tokens, {Decimal(last) / first:.1f}x the first ({first:,}): the history is re-sent every call"
            ),
            details={
                "first_input_tokens": first,
                "input_tokens": last,
                "growing_calls": run,
                "calls": state[3],
                "input_tokens_so_far": state[4],
                "cached_share": None if state[4] == 0 else round(state[5] / state[4], 4),
            },
            step=call.step,
            request_id=call.request_id,
        )


class SpikeDetector:
    """A scope's recent token rate far above its own baseline.

    Args:
        fast / slow: time constants of the recent rate and of the baseline.
        ratio: recent over baseline that makes a spike (default 5).
        warmup: history a scope needs before it can spike (default 1 hour).
        min_tokens_per_minute: recent rates below this never spike.
    """

    def __init__(
        self,
        fast: timedelta = timedelta(minutes=2),
        slow: timedelta = timedelta(minutes=30),
        *,
        ratio: Decimal = Decimal(5),
        warmup: timedelta = timedelta(hours=1),
        min_tokens_per_minute: Decimal = Decimal(1000),
        max_keys: int = 100_000,
    ) -> None:
        self.fast, self.slow, self.ratio, self.warmup = fast, slow, ratio, warmup
        self.floor = min_tokens_per_minute
        self.max_keys = max_keys
        self._rates: dict[tuple[str, str], tuple[DecayedRate, DecayedRate]] = {}

    def check(self, scope: str, subject_id: str, call: Call) -> Finding | None:
        """Feed one call's tokens to ``scope=subject_id``; a finding when its rate spikes."""
        tokens = Decimal((call.input_tokens or 0) + (call.output_tokens or 0))
        key = (scope, subject_id)
        pair = self._rates.pop(key, None) or (DecayedRate(self.fast), DecayedRate(self.slow))
        self._rates[key] = pair
        while len(self._rates) > self.max_keys:
            del self._rates[next(iter(self._rates))]
        fast, slow = pair
        fast.add(call.at, tokens)
        slow.add(call.at, tokens)
        if slow.first is None or utc(call.at) - slow.first < self.warmup:
            return None
        recent, baseline = fast.per_second(call.at) * 60, slow.per_second(call.at) * 60
        if recent < self.floor or baseline <= 0 or recent < self.ratio * baseline:
            return None
        return Finding(
            kind="spike",
            scope=scope,
            subject_id=subject_id,
            session=call.session,
            at=call.at,
            message=(
                f"{scope} {subject_id!r} is burning {recent:,.0f} tokens/min, {recent / baseline:.1f}x its "
                f"baseline of {baseline:,.0f} tokens/min"
            ),
            details={
                "tokens_per_minute": str(round(recent, 2)),
                "baseline_tokens_per_minute": str(round(baseline, 2)),
                "ratio": str(round(recent / baseline, 2)),
            },
            step=call.step,
            request_id=call.request_id,
        )


def _usage_fingerprints(call: Call, previous_input: int | None) -> Iterator[tuple[str, str]]:
    if call.fingerprint is not None:
        yield "request", call.fingerprint
    elif call.input_tokens is not None:
        yield "request", f"prompt:{call.model}|{call.input_tokens}"
    if call.input_tokens is not None and call.output_tokens is not None and previous_input is not None:
        growth = call.input_tokens - previous_input
        if growth > 0:
            yield "turn", f"turn:{call.model}|+{growth}|{call.output_tokens}"


def scan_sessions(
    calls: Iterable[Call],
    *,
    loops: LoopDetector | None = None,
    growth: ContextGrowthDetector | None = None,
    spikes: SpikeDetector | None = None,
    spike_scopes: tuple[str, ...] = ("user", "key", "project", "team", "org"),
) -> list[Finding]:
    """Run the detectors over recorded calls and return every finding, first per kind and subject.

    Args:
        calls: calls in time order (per session at least; interleaved sessions are fine).
        loops / growth / spikes: the detectors (defaults as documented above); pass a detector
            with other thresholds to change them.
        spike_scopes: the scopes watched for spikes (sessions are too short for a baseline).

    Returns:
        One finding per (kind, scope, subject): the first call where the rule fired.
    """
    loops = loops or LoopDetector()
    growth = growth or ContextGrowthDetector()
    spikes = spikes or SpikeDetector()
    previous: dict[str, int] = {}
    found: dict[tuple[str, str, str], Finding] = {}

    def keep(finding: Finding | None) -> None:
        if finding is not None:
            found.setdefault((finding.kind, finding.scope, finding.subject_id), finding)

    for call in calls:
        if call.session is not None:
            for kind, fingerprint in _usage_fingerprints(call, previous.get(call.session)):
                keep(loops.check(call.session, kind, fingerprint, call))
            keep(growth.check(call))
            if call.input_tokens is not None:
                previous[call.session] = call.input_tokens
        for scope, value in call.scopes:
            if scope in spike_scopes:
                keep(spikes.check(scope, value, call))
    return sorted(found.values(), key=lambda f: (f.at, f.kind, f.subject_id))
