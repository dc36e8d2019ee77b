"""Time, injectable: the ledger, windows and expiry read it from a clock, so tests never sleep."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tokenward.errors import ValidationError

__all__ = ["Clock", "ManualClock", "SystemClock", "parse_instant", "utc"]


def utc(at: datetime) -> datetime:
    """``at`` as an aware UTC datetime (a naive one is taken to be UTC already).

    Raises:
        ValidationError: ``at`` has an offset that puts it outside the years 1 to 9999 in UTC
            (e.g. ``0001-01-01T00:00:00+00:01``), which no datetime can represent.
    """
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise ValidationError(
            f"{at.isoformat()} cannot be represented in UTC (it falls outside the years 1 to 9999)"
        ) from None


def parse_instant(text: str, *, field: str | None = None) -> datetime:
    """A date (``2025-11-18``: its midnight, UTC) or an ISO 8601 instant (``Z`` or an offset; naive
    means UTC), as an aware UTC datetime: how the command line reads the instants users write.

    Args:
        text: what the user wrote.
        field: the option or parameter it came from (named in the message and the error).

    Raises:
        ValidationError: the text is neither a date nor an instant, or names one that cannot be
            represented in UTC.
    """
    where = f"{field}: " if field else ""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            f"{where}{text!r} is not a date or instant; use e.g. 2025-11-18 or 2025-11-18T22:00:00Z",
            field=field,
        ) from None
    try:
        return utc(parsed)
    except ValidationError as exc:
        raise ValidationError(f"{where}{exc}", field=field) from None


class Clock(Protocol):
    """Anything with ``now()`` returning an aware UTC datetime."""

    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        return datetime.now(tz=UTC)


class ManualClock:
    """A clock that only moves when told to (for tests and replays).

    Args:
        start: the initial instant (naive means UTC); defaults to 2025-01-01T00:00:00Z.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = utc(start) if start else datetime(2025, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The current (manual) instant."""
        with self._lock:
            return self._now

    def set(self, at: datetime) -> None:
        """Jump to ``at`` (naive means UTC)."""
        with self._lock:
            self._now = utc(at)

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by ``delta`` (a timedelta, or seconds) and return the new instant."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        with self._lock:
            self._now += step
            return self._now
