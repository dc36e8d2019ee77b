"""Hooks for what watches the guard: metrics, spans, alerts, anomaly checks.

An observer gets told, synchronously and in the caller's thread or event loop, about every
admission, denial and settled usage event. Observers must be quick and must not block (queue
anything slow); an observer that raises is logged and never breaks the call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tokenward.core.budgets import Subject
from tokenward.core.decide import CallPlan
from tokenward.core.events import UsageEvent
from tokenward.errors import BudgetError, LedgerError
from tokenward.guard.flow import Admission
from tokenward.throttle import Throttle

__all__ = ["Observer", "Observers"]

log = logging.getLogger("tokenward.observers")


@runtime_checkable
class Observer(Protocol):
    """Something that watches the guard. Implement any subset: missing methods are skipped."""

    def on_admit(self, admission: Admission) -> None:
        """A call was admitted and its hold reserved."""

    def on_deny(self, subject: Subject, plan: CallPlan | None, error: BudgetError) -> None:
        """A call was refused by a budget (``plan`` is None for a direct charge)."""

    def on_settle(self, event: UsageEvent) -> None:
        """A call was settled (or a known charge recorded): its usage event."""


class Observers:
    """A list of observers, told in turn; failures are logged, never raised."""

    def __init__(self, observers: Sequence[object] = ()) -> None:
        self.items: list[object] = list(observers)
        self._failures = Throttle()  # ledger failures, by (observer, hook)

    def add(self, observer: object) -> None:
        """Watch with one more observer."""
        self.items.append(observer)

    def _tell(self, method: str, *args: object) -> None:
        for observer in self.items:
            hook = getattr(observer, method, None)
            if hook is None:
                continue
            try:
                hook(*args)
            except LedgerError as exc:  # the store is down: the ledger alerts that; say it once a minute
                if self._failures.due((id(observer), method)) is not None:
                    log.warning("observer %r failed in %s (the ledger): %s", observer, method, exc)
            except Exception:
                log.exception("observer %r failed in %s", observer, method)

    def admit(self, admission: Admission) -> None:
        """Tell every observer about an admission."""
        self._tell("on_admit", admission)

    def deny(self, subject: Subject, plan: CallPlan | None, error: BudgetError) -> None:
        """Tell every observer about a denial."""
        self._tell("on_deny", subject, plan, error)

    def settle(self, event: UsageEvent) -> None:
        """Tell every observer about a settled event."""
        self._tell("on_settle", event)
