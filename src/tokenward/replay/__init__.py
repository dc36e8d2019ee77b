"""Replaying recorded agent traffic through the guard: what budgets would have done."""

from tokenward.replay.run import CallResult, Cut, ReplayReport, SessionReport, replay
from tokenward.replay.traces import TraceCall, iter_traces, read_traces

__all__ = [
    "CallResult",
    "Cut",
    "ReplayReport",
    "SessionReport",
    "TraceCall",
    "iter_traces",
    "read_traces",
    "replay",
]
