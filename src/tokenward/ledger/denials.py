"""Denials: recording a refused call, folding a flood, and the query rules, written once.

A denial is recorded by :func:`record_denial_in` inside a store's write transaction (the
``memory://``, SQLite and PostgreSQL ledgers call it from ``record_denial``; the Redis ledger's
drainer calls it when it moves a spooled denial to its durable store), so every backend applies
the same flood rule:

* the first ``rate`` (:data:`~tokenward.ledger.records.DENIAL_RATE`, 60) denials of one subject
  by one budget in one UTC minute are stored one by one;
* every later one of that subject, budget and minute is folded into a single *aggregated* record
  (its ``count`` and ``last_at`` grow; its other fields are those of the first folded denial).

So a flood costs one indexed count and one upsert per denial, and nothing is dropped: the sum of
``count`` over the records is the number of refused calls.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from tokenward.clock import utc
from tokenward.core.budgets import SCOPES, Subject
from tokenward.errors import ValidationError
from tokenward.ledger.records import Denial

__all__ = [
    "DenialQuery",
    "DenialStore",
    "check_denial_query",
    "filtered_after",
    "matches",
    "paged",
    "record_denial_in",
]


class DenialStore(Protocol):
    """The primitives a store provides for denials (inside its write transaction)."""

    def _count_denials(self, subject_key: str, budget: str, minute: str) -> int:
        """How many non-aggregated denials of this subject, budget and minute are stored."""
        ...

    def _insert_denial(self, denial: Denial) -> Denial:
        """Append one denial; returns it numbered."""
        ...

    def _fold_denial(self, denial: Denial) -> Denial:
        """Add ``denial`` to its subject, budget and minute's aggregated record (made from it
        when there is none yet, with ``count`` 1); returns the record as stored."""
        ...


def record_denial_in(store: Any, denial: Denial, rate: int) -> Denial:
    """Store ``denial`` by the flood rule (see the module docstring); call inside a write
    transaction of ``store``. Returns the record it was stored as (an aggregated one past
    ``rate``)."""
    denial = replace(denial, id=0, count=1, aggregated=False, last_at=denial.at)
    if store._count_denials(denial.subject_key, denial.budget, denial.minute) < rate:
        return store._insert_denial(denial)  # type: ignore[no-any-return]
    return store._fold_denial(replace(denial, aggregated=True))  # type: ignore[no-any-return]


class DenialQuery:
    """The checked arguments of ``Ledger.denials`` (see :func:`check_denial_query`)."""

    __slots__ = ("budget", "columns", "limit", "model", "offset", "since", "subject", "tags", "until")

    def __init__(
        self,
        since: datetime | None,
        until: datetime | None,
        subject: Subject | None,
        budget: str | None,
        limit: int | None,
        offset: int,
    ) -> None:
        self.since = since
        self.until = until
        self.subject = subject
        self.budget = budget
        self.limit = limit
        self.offset = offset
        self.columns: dict[str, str] = {}
        """The scope columns to filter on (``user`` -> ``alice``)."""
        self.tags: dict[str, str] = dict(subject.tags) if subject is not None else {}
        """The tags to filter on (not in columns: filtered after the read)."""
        self.model: str | None = getattr(subject, "model", None) if subject is not None else None
        """The (canonical) model to filter on, when the subject names one (after the read)."""
        if subject is not None:
            self.columns = {s: v for s in SCOPES if (v := subject.value(s)) is not None}


def check_denial_query(
    since: datetime | None,
    until: datetime | None,
    subject: Subject | None,
    budget: str | None,
    limit: int | None,
    offset: int | None,
) -> DenialQuery:
    """The arguments of ``Ledger.denials``, checked.

    Raises:
        ValidationError: an instant that is not a datetime, a subject that is not a
            :class:`Subject`, a budget that is not a string, a negative or non-integer limit or
            offset.
    """
    for name, value in (("since", since), ("until", until)):
        if value is not None and not isinstance(value, datetime):
            raise ValidationError(f"{name} must be a datetime, got {value!r}", field=name)
    if subject is not None and not isinstance(subject, Subject):
        raise ValidationError(f"subject must be a Subject, got {subject!r}", field="subject")
    if budget is not None and not isinstance(budget, str):
        raise ValidationError(f"budget must be a budget's name, got {budget!r}", field="budget")
    for name, number in (("limit", limit), ("offset", offset)):
        if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < 0):
            raise ValidationError(f"{name} must be a whole number >= 0, got {number!r}", field=name)
    return DenialQuery(
        utc(since) if since is not None else None,
        utc(until) if until is not None else None,
        subject,
        budget,
        limit,
        offset or 0,
    )


def matches(denial: Denial, query: DenialQuery) -> bool:
    """Whether ``denial`` passes every filter of ``query`` (newest-first paging aside)."""
    if query.since is not None and denial.at < query.since:
        return False
    if query.until is not None and denial.at >= query.until:
        return False
    if query.budget is not None and denial.budget != query.budget:
        return False
    if any(denial.subject.value(s) != v for s, v in query.columns.items()):
        return False
    if query.model is not None and getattr(denial.subject, "model", None) != query.model:
        return False
    tags = dict(denial.subject.tags)
    return all(tags.get(k) == v for k, v in query.tags.items())


def filtered_after(query: DenialQuery) -> bool:
    """Whether some filter of ``query`` is applied after the store's read (tags, model), so the
    store must not page."""
    return bool(query.tags) or query.model is not None


def paged(found: list[Denial], query: DenialQuery, *, sliced: bool = False) -> list[Denial]:
    """``found`` (newest first, filtered by everything but tags) filtered by ``query``'s tags
    and paged; ``sliced``: the store already applied ``offset`` and ``limit``."""
    if filtered_after(query):
        found = [d for d in found if matches(d, query)]
    if sliced:
        return found
    end = None if query.limit is None else query.offset + query.limit
    return found[query.offset : end]
