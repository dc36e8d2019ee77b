"""The primitives a transactional ledger backend provides, and the caches around them.

A backend supplies a transaction (a process lock for ``memory://``, ``BEGIN IMMEDIATE`` for
SQLite) and the reads and writes below, which run inside it. The logic over them lives in
:mod:`.steps` and :mod:`.transactional`, written once for every backend.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from tokenward.clock import Clock, SystemClock
from tokenward.core.budgets import Budget, Subject
from tokenward.core.calibration import EstimateStats
from tokenward.core.events import UsageEvent
from tokenward.ledger.admin import AdminRecords
from tokenward.ledger.base import Reservation
from tokenward.ledger.denials import DenialQuery
from tokenward.ledger.records import (
    Adjustment,
    BudgetInstance,
    Denial,
    IdempotentAnswer,
    ShadowDenial,
    StopMarker,
    ThresholdEvent,
)
from tokenward.ledger.rows import Rows, Snapshot, Span

__all__ = ["Primitives"]

_CACHE_LIMIT = 200_000


class Primitives(AdminRecords, abc.ABC):
    """What a backend implements; every method runs inside ``_transaction()``."""

    url: str

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._known_thresholds: set[tuple[str, str, str, str]] = set()  # threshold events known stored
        self._known_instances: set[tuple[str, str]] = set()  # template instances known stored
        self._pending = threading.local()

    # -- primitives a backend provides ----------------------------------------------------------
    @abc.abstractmethod
    def _transaction(self, write: bool = True) -> AbstractContextManager[None]:
        """A transaction; with ``write=True`` it excludes every other writer until it ends."""

    @abc.abstractmethod
    def _snapshot(self) -> Snapshot:
        """Every budget and every stop marker (a backend may cache them by revision)."""

    @abc.abstractmethod
    def _store_budget(self, budget: Budget) -> None: ...

    @abc.abstractmethod
    def _remove_budget(self, name: str) -> bool: ...

    @abc.abstractmethod
    def _read_rows(self, spans: Sequence[Span]) -> Rows:
        """Every stored balance row inside ``spans`` (missing rows are absent, meaning zeros)."""

    @abc.abstractmethod
    def _write_rows(self, rows: Rows) -> None:
        """Set these balance rows to these absolute ``(spent, held)`` values."""

    @abc.abstractmethod
    def _get_reservation(self, reservation_id: str) -> Reservation | None: ...

    @abc.abstractmethod
    def _find_idempotent(self, key: str) -> Reservation | None: ...

    @abc.abstractmethod
    def _put_reservation(self, reservation: Reservation) -> bool:
        """Store a new reservation; False (nothing stored) when its idempotency key is taken by a
        stored reservation or is the request id of a stored usage event (the call was settled)."""

    @abc.abstractmethod
    def _set_state(self, reservation_id: str, state: str) -> None: ...

    @abc.abstractmethod
    def _drop_reservation(self, reservation_id: str) -> None:
        """Delete a reservation (settled or released: nothing of it is kept, its key freed)."""

    @abc.abstractmethod
    def _set_expiry(self, reservation_id: str, expires_at: datetime) -> None:
        """Set an active reservation's ``expires_at``."""

    @abc.abstractmethod
    def _expire(self, now: datetime) -> list[Reservation]:
        """Mark active reservations whose ``expires_at`` is at or before ``now`` expired; return
        them as they were (active)."""

    @abc.abstractmethod
    def _active_owners(self) -> list[str]:
        """The distinct owners of active reservations."""

    @abc.abstractmethod
    def _owned_active(self, owners: Sequence[str]) -> list[Reservation]:
        """The active reservations of these owners (locked for the transaction where the store
        locks rows)."""

    @abc.abstractmethod
    def _get_event(self, request_id: str) -> UsageEvent | None: ...

    @abc.abstractmethod
    def _query_disputed(self, since: datetime | None, limit: int | None) -> list[UsageEvent]:
        """Disputed usage events (the column, else ``metadata.disputed``), in time order."""

    @abc.abstractmethod
    def _insert_event(self, event: UsageEvent) -> bool:
        """Append ``event``; False (nothing written) when its request id is already stored."""

    @abc.abstractmethod
    def _query_events(
        self, subject: Subject | None, since: datetime | None, until: datetime | None, limit: int | None
    ) -> list[UsageEvent]: ...

    @abc.abstractmethod
    def _find_event(self, key: str, value: str) -> UsageEvent | None:
        """The most recently stored event whose ``metadata[key]`` is ``value`` (``key`` is one of
        :data:`~tokenward.ledger.records.EVENT_LOOKUPS`), or None."""

    @abc.abstractmethod
    def _insert_threshold(self, event: ThresholdEvent) -> bool:
        """Store a threshold event (its id assigned by the store); False when one with the same
        ``(budget, subject_id, window_key, threshold)`` exists."""

    @abc.abstractmethod
    def _query_thresholds(self, after: int | None, limit: int | None) -> list[ThresholdEvent]: ...

    @abc.abstractmethod
    def _insert_shadow(self, denials: Sequence[ShadowDenial]) -> None:
        """Append shadow denials (ids assigned by the store)."""

    @abc.abstractmethod
    def _query_shadow(
        self, after: int | None, limit: int | None, budget: str | None
    ) -> list[ShadowDenial]: ...

    @abc.abstractmethod
    def _count_denials(self, subject_key: str, budget: str, minute: str) -> int:
        """How many non-aggregated denials of this subject, budget and minute are stored."""

    @abc.abstractmethod
    def _insert_denial(self, denial: Denial) -> Denial:
        """Append one denial; returns it numbered by the store."""

    @abc.abstractmethod
    def _fold_denial(self, denial: Denial) -> Denial:
        """Add one to the aggregated record of ``denial``'s subject, budget and minute (made
        from ``denial`` when missing); returns the record as stored."""

    @abc.abstractmethod
    def _query_denials(self, query: DenialQuery) -> list[Denial]:
        """Denials matching ``query``, newest first, ``query.offset`` skipped, at most
        ``query.limit`` (:func:`~tokenward.ledger.denials.paged` does the tag filter and the
        paging for a store that reads more)."""

    @abc.abstractmethod
    def _get_idempotent(self, namespace: str, key: str) -> IdempotentAnswer | None:
        """The stored record of an ``Idempotency-Key``, expired or not, or None."""

    @abc.abstractmethod
    def _put_idempotent(self, record: IdempotentAnswer) -> None:
        """Create or replace the record of ``(record.namespace, record.key)``."""

    @abc.abstractmethod
    def _delete_idempotent(self, namespace: str, key: str) -> None:
        """Forget an ``Idempotency-Key``."""

    @abc.abstractmethod
    def _purge_idempotent(self, now: datetime) -> None:
        """Forget every ``Idempotency-Key`` record that expired before ``now``."""

    @abc.abstractmethod
    def _store_stops(self, markers: Sequence[StopMarker]) -> None:
        """Store stop markers, keeping any that already exist for the same session or task."""

    @abc.abstractmethod
    def _insert_adjustment(self, adjustment: Adjustment) -> Adjustment:
        """Append an adjustment; returns it numbered (``seq``)."""

    @abc.abstractmethod
    def _get_adjustment(self, adjustment_id: str) -> Adjustment | None: ...

    @abc.abstractmethod
    def _query_adjustments(self, since: datetime | None, until: datetime | None) -> list[Adjustment]: ...

    @abc.abstractmethod
    def _store_instances(self, instances: Sequence[BudgetInstance]) -> None:
        """Record template instances, keeping those already recorded."""

    @abc.abstractmethod
    def _query_instances(self, budget: str) -> list[BudgetInstance]: ...

    @abc.abstractmethod
    def _estimate_stats(self, model: str) -> EstimateStats | None:
        """The stored calibration aggregates of one model key, or None."""

    @abc.abstractmethod
    def _store_estimate_stats(self, stats: EstimateStats) -> None:
        """Create or replace one model key's calibration aggregates."""

    def close(self) -> None:
        """Release connections (nothing to do by default)."""

    # -- transactions that remember what they stored --------------------------------------------
    def _write(self) -> _Write:
        """A write transaction; marks added with :meth:`_remember` reach the in-process caches
        only once it committed, so a rolled-back write is never taken as stored."""
        return _Write(self)

    def _remember(self, cache: set[Any], key: Any) -> None:
        marks = getattr(self._pending, "marks", None)
        if marks is not None:
            marks.append((cache, key))


class _Write:
    """The context manager of :meth:`Primitives._write` (a class: this is on every call's path)."""

    __slots__ = ("_ledger", "_marks", "_tx")

    def __init__(self, ledger: Primitives) -> None:
        self._ledger = ledger
        self._marks: list[tuple[set[Any], Any]] = []
        self._tx: AbstractContextManager[None] | None = None

    def __enter__(self) -> None:
        self._ledger._pending.marks = self._marks
        self._tx = self._ledger._transaction()
        try:
            self._tx.__enter__()
        except BaseException:
            self._ledger._pending.marks = None
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        try:
            self._tx.__exit__(kind, error, trace)  # type: ignore[union-attr]  # never suppresses
        finally:
            self._ledger._pending.marks = None
        if kind is None:
            for cache, key in self._marks:
                if len(cache) > _CACHE_LIMIT:
                    cache.clear()
                cache.add(key)
