"""``memory://``: the ledger in this process's memory (tests, replays, one-off runs).

Its transaction is a process-wide lock, which is the whole store here. Nothing survives the
process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from tokenward.clock import Clock
from tokenward.core.budgets import Budget, Subject
from tokenward.core.events import UsageEvent
from tokenward.ledger.base import Reservation
from tokenward.ledger.transactional import TransactionalLedger

__all__ = ["MemoryLedger"]


def subject_matches(event_subject: Subject, wanted: Subject | None) -> bool:
    """Whether every scope and tag set in ``wanted`` has the same value in ``event_subject``."""
    if wanted is None:
        return True
    for scope, value in wanted.to_dict().items():
        if scope == "tags":
            tags = dict(event_subject.tags)
            if any(tags.get(k) != v for k, v in value.items()):
                return False
        elif event_subject.value(scope) != value:
            return False
    return True


class MemoryLedger(TransactionalLedger):
    """The in-memory ledger.

    Args:
        url: ``memory://`` (kept for display).
        clock: where time comes from.
    """

    def __init__(self, url: str = "memory://", *, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.url = url
        self._lock = threading.RLock()
        self._budgets: dict[str, Budget] = {}
        self._rows: dict[tuple[str, str, str], tuple[Decimal, Decimal]] = {}
        self._reservations: dict[str, Reservation] = {}
        self._by_key: dict[str, str] = {}
        self._active: set[str] = set()
        self._events: list[UsageEvent] = []
        self._by_request: dict[str, UsageEvent] = {}

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[None]:
        with self._lock:
            yield

    def _load_budgets(self) -> list[Budget]:
        return list(self._budgets.values())

    def _store_budget(self, budget: Budget) -> None:
        self._budgets[budget.name] = budget

    def _remove_budget(self, name: str) -> bool:
        return self._budgets.pop(name, None) is not None

    def _balance(self, budget: str, subject_id: str, window_key: str) -> tuple[Decimal, Decimal]:
        return self._rows.get((budget, subject_id, window_key), (Decimal(0), Decimal(0)))

    def _adjust(self, budget: str, subject_id: str, window_key: str, spent: Decimal, held: Decimal) -> None:
        key = (budget, subject_id, window_key)
        old_spent, old_held = self._rows.get(key, (Decimal(0), Decimal(0)))
        self._rows[key] = (old_spent + spent, old_held + held)

    def _get_reservation(self, reservation_id: str) -> Reservation | None:
        return self._reservations.get(reservation_id)

    def _find_idempotent(self, key: str) -> Reservation | None:
        found = self._by_key.get(key)
        return None if found is None else self._reservations[found]

    def _put_reservation(self, reservation: Reservation) -> None:
        self._reservations[reservation.id] = reservation
        self._active.add(reservation.id)
        if reservation.idempotency_key is not None:
            self._by_key[reservation.idempotency_key] = reservation.id

    def _set_state(self, reservation_id: str, state: str) -> None:
        self._reservations[reservation_id] = replace(self._reservations[reservation_id], state=state)
        if state != "active":
            self._active.discard(reservation_id)

    def _expired(self, now: datetime) -> list[Reservation]:
        return [self._reservations[i] for i in self._active if self._reservations[i].expires_at <= now]

    def _get_event(self, request_id: str) -> UsageEvent | None:
        return self._by_request.get(request_id)

    def _insert_event(self, event: UsageEvent) -> None:
        self._events.append(event)
        self._by_request[event.request_id] = event

    def _query_events(
        self, subject: Subject | None, since: datetime | None, until: datetime | None, limit: int | None
    ) -> list[UsageEvent]:
        out = [
            e
            for e in sorted(self._events, key=lambda e: e.at)
            if subject_matches(e.subject, subject)
            and (since is None or e.at >= since)
            and (until is None or e.at < until)
        ]
        return out[:limit] if limit is not None else out
