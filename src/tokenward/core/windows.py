"""Budget windows: when spend counts and when it resets.

A window is keyed by its start, so nothing needs a reset job: a new window is simply a new key.

* ``none``: spend accumulates for ever (key ``""``).
* calendar ``hour`` / ``day`` / ``week`` / ``month`` in an IANA time zone (default UTC): the window
  starts at the local boundary (midnight, Monday 00:00 unless ``week_start`` says otherwise, the
  1st of the month) and is stored by that instant in UTC. Daylight-saving changes are handled by
  ``zoneinfo``: a local day may last 23 or 25 hours. Time-zone data comes from the ``tzdata``
  package where the system has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tokenward.clock import utc
from tokenward.errors import ConfigError

__all__ = ["NO_WINDOW", "Window"]

Unit = Literal["hour", "day", "week", "month"]
UNITS: tuple[str, ...] = ("hour", "day", "week", "month")


@dataclass(frozen=True, slots=True)
class Window:
    """A budget window.

    Attributes:
        unit: ``None`` for no window, else the calendar unit.
        time_zone: IANA zone name the calendar boundaries are taken in.
        week_start: first day of a week, 0 = Monday ... 6 = Sunday.
    """

    unit: Unit | None = None
    time_zone: str = "UTC"
    week_start: int = 0

    def __post_init__(self) -> None:
        if self.unit is not None and self.unit not in UNITS:
            raise ConfigError(f"unknown window {self.unit!r}; use none, {', '.join(UNITS)}")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"unknown time zone {self.time_zone!r} (use an IANA name like Europe/Paris)"
            ) from None
        if not 0 <= self.week_start <= 6:
            raise ConfigError("week_start must be 0 (Monday) to 6 (Sunday)")

    @classmethod
    def parse(cls, spec: str | None) -> Window:
        """Parse ``"none"``, ``"day"``, ``"month@Europe/Paris"``...

        Raises:
            ConfigError: an unknown unit or time zone.
        """
        if spec is None or spec.strip().lower() in ("", "none"):
            return NO_WINDOW
        unit, _, zone = spec.strip().partition("@")
        unit = unit.strip().lower()
        if unit not in UNITS:
            raise ConfigError(
                f"unknown window {spec!r}; use none, {', '.join(UNITS)} (optionally @Time/Zone)"
            )
        return cls(unit=unit, time_zone=zone.strip() or "UTC")  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.unit is None:
            return "none"
        return self.unit if self.time_zone == "UTC" else f"{self.unit}@{self.time_zone}"

    def start(self, at: datetime) -> datetime | None:
        """The start of the window containing ``at`` (UTC), or None for no window."""
        if self.unit is None:
            return None
        zone = ZoneInfo(self.time_zone)
        local = utc(at).astimezone(zone)
        if self.unit == "hour":
            begin = local.replace(minute=0, second=0, microsecond=0)
            return begin.astimezone(UTC)
        day = local.date()
        if self.unit == "week":
            day -= timedelta(days=(day.weekday() - self.week_start) % 7)
        elif self.unit == "month":
            day = day.replace(day=1)
        return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)

    def reset_at(self, at: datetime) -> datetime | None:
        """When the window containing ``at`` ends (UTC), or None when it never does."""
        begin = self.start(at)
        if begin is None or self.unit is None:
            return None
        if self.unit == "hour":
            after = begin + timedelta(hours=1)
            if self.start(after) == after:
                return after
            # A 30-minute daylight-saving shift (Australia/Lord_Howe) makes a local hour last 30 or
            # 90 minutes: step on to the next instant where the local hour changes.
            step = timedelta(minutes=15)
            after = begin + step
            while self.start(after) == begin:
                after += step
            return self.start(after)
        zone = ZoneInfo(self.time_zone)
        day = begin.astimezone(zone).date()
        if self.unit == "day":
            day += timedelta(days=1)
        elif self.unit == "week":
            day += timedelta(days=7)
        else:
            day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
        return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)

    def key(self, at: datetime) -> str:
        """The storage key of the window containing ``at``: its UTC start, or ``""``."""
        begin = self.start(at)
        return "" if begin is None else begin.strftime("%Y-%m-%dT%H:%M:%SZ")


NO_WINDOW = Window()
