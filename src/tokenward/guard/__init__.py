"""The guard: the one enforcement flow (attribute, estimate, decide, reserve, settle)."""

from tokenward.guard.flow import Admission, GuardSettings, Outcome, build_event, plan_call
from tokenward.guard.guard import AsyncGuard, Guard
from tokenward.guard.observers import Observer, Observers

__all__ = [
    "Admission",
    "AsyncGuard",
    "Guard",
    "GuardSettings",
    "Observer",
    "Observers",
    "Outcome",
    "build_event",
    "plan_call",
]
