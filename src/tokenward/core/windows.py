"""Budget windows: when spend counts and when it resets.

A window is keyed by its start, so nothing needs a reset job: a new window is simply a new key.

* ``none``: spend accumulates for ever (key ``""``).
* calendar ``hour`` / ``day`` / ``week`` / ``month`` in an IANA time zone (default UTC): the window
  starts at the local boundary (midnight, Monday 00:00 unless ``week_start`` says otherwise, the
  1st of the month) and is stored by that instant in UTC. Daylight-saving changes are handled by
  ``zoneinfo``: a local day may last 23 or 25 hours. Time-zone data comes from the ``tzdata``
  package where the system has none.
* ``rolling``: the last ``duration`` (``rolling:5h``), counted in ``buckets`` equal buckets
  (default: the largest divisor of the duration in seconds that is at most 60, so a 5-hour window
  has 60 buckets of 5 minutes). Spend is stored per bucket (keyed ``r<bucket seconds>:<bucket
  start>``, buckets aligned on the Unix epoch) and the window at an instant is its own bucket plus
  the ``buckets`` before it. **Precision**: a charge counts for at least ``duration`` and at most
  ``duration`` plus one bucket after the instant it was admitted, so spend in *any* interval of
  length ``duration`` is always counted (a hard rolling budget is never overspent over any such
  interval), and it is forgotten at most one bucket late.

String forms (``Window.parse``, ``str(window)``): ``none``, ``day``, ``month@Europe/Paris``,
``week:sunday@America/New_York``, ``rolling:5h``, ``rolling:90m:45`` (45 buckets).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tokenward.clock import utc
from tokenward.errors import ConfigError

__all__ = ["NO_WINDOW", "WEEKDAYS", "Window", "parse_duration"]

Unit = Literal["hour", "day", "week", "month", "rolling"]
UNITS: tuple[str, ...] = ("hour", "day", "week", "month")
"""Calendar units."""

WEEKDAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
"""Names for ``week_start`` (0 = Monday ... 6 = Sunday)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


_MAX_DURATION = 36500 * 86400  # seconds: 100 years


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """A duration from ``"90s"``, ``"15m"``, ``"5h"``, ``"1h30m"``, ``"7d"``, ``"2w"``, a number of
    seconds, or a ``timedelta``.

    Raises:
        ConfigError: not a positive whole number of seconds, or longer than 100 years.
    """
    if isinstance(text, timedelta):
        seconds = text.total_seconds()
    elif isinstance(text, bool):
        raise ConfigError(f"duration {text!r}: expected e.g. 5h, 90m, 7d")
    elif isinstance(text, int | float):
        seconds = float(text)
    else:
        spec = str(text).strip().lower().replace(" ", "")
        parts = _DURATION.findall(spec)
        if not spec or "".join(n + u for n, u in parts) != spec:
            raise ConfigError(f"duration {text!r}: expected e.g. 90s, 15m, 5h, 1h30m, 7d, 2w")
        seconds = float(sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))
    if seconds < 1 or seconds != int(seconds):
        raise ConfigError(f"duration {text!r}: must be a whole number of seconds, at least 1")
    if seconds > _MAX_DURATION:  # a longer one overflows timedelta and datetime arithmetic
        raise ConfigError(f"duration {text!r}: at most 36500d (100 years)")
    return timedelta(seconds=int(seconds))


def _default_buckets(seconds: int) -> int:
    return max(n for n in range(1, 61) if seconds % n == 0)


def _duration_text(seconds: int) -> str:
    out = ""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out


@dataclass(frozen=True, slots=True)
class Window:
    """A budget window.

    Attributes:
        unit: ``None`` for no window, a calendar unit, or ``rolling``.
        time_zone: IANA zone name the calendar boundaries are taken in.
        week_start: first day of a week, 0 = Monday ... 6 = Sunday.
        duration: the length of a rolling window (whole seconds); None otherwise.
        buckets: how many buckets a rolling window is counted in (0: the default, the largest
            divisor of the duration in seconds up to 60); each bucket is ``duration / buckets``.
    """

    unit: Unit | None = None
    time_zone: str = "UTC"
    week_start: int = 0
    duration: timedelta | None = None
    buckets: int = 0

    def __post_init__(self) -> None:
        if self.unit is not None and self.unit not in (*UNITS, "rolling"):
            raise ConfigError(
                f"unknown window {self.unit!r}; use none, {', '.join(UNITS)} or rolling:DURATION"
            )
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"unknown time zone {self.time_zone!r} (use an IANA name like Europe/Paris)"
            ) from None
        if (
            isinstance(self.week_start, bool)
            or not isinstance(self.week_start, int)
            or not 0 <= self.week_start <= 6
        ):
            raise ConfigError("week_start must be 0 (Monday) to 6 (Sunday)")
        if self.unit != "rolling":
            if self.duration is not None or self.buckets:
                raise ConfigError("duration and buckets apply to rolling windows only")
            return
        if self.duration is None:
            raise ConfigError("a rolling window needs a duration, e.g. rolling:5h")
        duration = parse_duration(self.duration)
        object.__setattr__(self, "duration", duration)
        seconds = int(duration.total_seconds())
        buckets = self.buckets or _default_buckets(seconds)
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1 or seconds % buckets:
            raise ConfigError(
                f"rolling:{_duration_text(seconds)}: {self.buckets!r} buckets do not divide "
                f"{seconds} s into whole seconds"
            )
        object.__setattr__(self, "buckets", buckets)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def parse(cls, spec: str | None) -> Window:
        """Parse ``"none"``, ``"day"``, ``"month@Europe/Paris"``, ``"week:sunday"``,
        ``"rolling:5h"``, ``"rolling:90m:45"``...

        Raises:
            ConfigError: an unknown unit, time zone, week day or duration.
        """
        if spec is None or spec.strip().lower() in ("", "none"):
            return NO_WINDOW
        head, _, zone = spec.strip().partition("@")
        unit, _, rest = head.strip().lower().partition(":")
        zone = zone.strip() or "UTC"
        if unit == "rolling":
            duration, _, buckets = rest.partition(":")
            if buckets and not buckets.isdigit():
                raise ConfigError(f"window {spec!r}: buckets must be a whole number (rolling:5h:60)")
            return cls(unit="rolling", duration=parse_duration(duration), buckets=int(buckets or 0))
        if unit not in UNITS:
            raise ConfigError(
                f"unknown window {spec!r}; use none, {', '.join(UNITS)} (optionally @Time/Zone) "
                "or rolling:DURATION"
            )
        week_start = 0
        if rest:
            if unit != "week":
                raise ConfigError(f"window {spec!r}: only a week takes a start day (week:sunday)")
            week_start = weekday(rest)
        return cls(unit=unit, time_zone=zone, week_start=week_start)  # type: ignore[arg-type]

    @classmethod
    def from_value(cls, value: Any, *, week_start: Any = None) -> Window:
        """A window from a config value: a string (:meth:`parse`), or a mapping such as
        ``{"type": "calendar", "unit": "day", "time_zone": "UTC"}`` or
        ``{"type": "rolling", "duration": "5h", "buckets": 60}``; ``week_start`` (a day name or
        0-6) overrides the week's first day.

        Raises:
            ConfigError: an invalid value (named).
        """
        if value is None or isinstance(value, str):
            window = cls.parse(value)
        elif isinstance(value, Mapping):
            known = {
                "type",
                "unit",
                "time_zone",
                "tz",
                "week_start",
                "duration",
                "buckets",
                "reset_local_time",
            }
            if set(value) - known:
                raise ConfigError(
                    f"window: unknown keys {sorted(set(value) - known)}; known: {sorted(known)}"
                )
            if value.get("reset_local_time") not in (None, "00:00"):
                raise ConfigError("window: reset_local_time other than 00:00 is not supported")
            kind = str(value.get("type") or ("rolling" if value.get("duration") else "calendar")).lower()
            if kind == "none":
                window = NO_WINDOW
            elif kind == "rolling":
                window = cls(
                    unit="rolling",
                    duration=parse_duration(value.get("duration") or ""),
                    buckets=int(value.get("buckets") or 0),
                )
            elif kind == "calendar":
                unit = str(value.get("unit") or "").lower()
                if unit not in UNITS:
                    raise ConfigError(
                        f"window: calendar unit must be one of {', '.join(UNITS)}, got {unit!r}"
                    )
                window = cls(
                    unit=unit,  # type: ignore[arg-type]
                    time_zone=str(value.get("time_zone") or value.get("tz") or "UTC"),
                    week_start=weekday(value.get("week_start", 0)),
                )
            else:
                raise ConfigError(f"window: type must be none, calendar or rolling, got {kind!r}")
        else:
            raise ConfigError(f"window: expected a string or a mapping, got {value!r}")
        if week_start is not None:
            if window.unit != "week":
                raise ConfigError("week_start applies to week windows only")
            window = cls(unit="week", time_zone=window.time_zone, week_start=weekday(week_start))
        return window

    def __str__(self) -> str:
        if self.unit is None:
            return "none"
        if self.unit == "rolling":
            assert self.duration is not None
            seconds = int(self.duration.total_seconds())
            text = f"rolling:{_duration_text(seconds)}"
            return text if self.buckets == _default_buckets(seconds) else f"{text}:{self.buckets}"
        unit = f"week:{WEEKDAYS[self.week_start]}" if self.unit == "week" and self.week_start else self.unit
        return unit if self.time_zone == "UTC" else f"{unit}@{self.time_zone}"

    # -- rolling buckets ------------------------------------------------------------------------
    @property
    def rolling(self) -> bool:
        """Whether this is a rolling window."""
        return self.unit == "rolling"

    @property
    def bucket(self) -> timedelta:
        """A rolling window's bucket length (its precision).

        Raises:
            ValueError: not a rolling window.
        """
        if self.duration is None:
            raise ValueError("only rolling windows have buckets")
        return self.duration / self.buckets

    def _bucket_start(self, at: datetime) -> datetime:
        size = int(self.bucket.total_seconds())
        seconds = int((utc(at) - _EPOCH).total_seconds() // size) * size
        return _EPOCH + timedelta(seconds=seconds)

    def _bucket_key(self, begin: datetime) -> str:
        return f"r{int(self.bucket.total_seconds())}:{begin.strftime('%Y-%m-%dT%H:%M:%SZ')}"

    def span(self, at: datetime) -> tuple[str, str]:
        """The storage keys a balance at ``at`` sums: ``(first, last)``, inclusive, in key order.

        A calendar window or none is one key (``first == last``); a rolling window is the keys of
        its ``buckets + 1`` buckets.
        """
        if self.unit != "rolling":
            key = self.key(at)
            return key, key
        last = self._bucket_start(at)
        return self._bucket_key(last - self.buckets * self.bucket), self._bucket_key(last)

    def drops_at(self, key: str) -> datetime | None:
        """When spend stored under a rolling bucket ``key`` stops counting (None for calendar
        windows, whose spend never leaves its window)."""
        if self.unit != "rolling" or ":" not in key:
            return None
        return _bucket_begin(key) + (self.buckets + 1) * self.bucket

    # -- calendar -------------------------------------------------------------------------------
    def start(self, at: datetime) -> datetime | None:
        """The start of the window containing ``at`` (UTC), or None for no window.

        For a rolling window: the start of its oldest counted bucket.
        """
        if self.unit is None:
            return None
        if self.unit == "rolling":
            return self._bucket_start(at) - self.buckets * self.bucket
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
        """When the window containing ``at`` ends (UTC), or None when it never does.

        For a rolling window: the end of the current bucket, the next instant its oldest bucket
        stops counting (the ledger names the instant the oldest *spend* stops counting).
        """
        begin = self.start(at)
        if begin is None or self.unit is None:
            return None
        if self.unit == "rolling":
            return self._bucket_start(at) + self.bucket
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
        """The storage key of the window (a rolling window: the bucket) containing ``at``: its
        UTC start, or ``""`` for no window."""
        if self.unit == "rolling":
            return self._bucket_key(self._bucket_start(at))
        begin = self.start(at)
        return "" if begin is None else begin.strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=4096)
def _bucket_begin(key: str) -> datetime:
    """The UTC start of a rolling bucket from its key (``r<seconds>:<ISO start>``). Cached: a
    one-minute window at one-second buckets reads its 61 keys on every admission and settle, and
    parsing them was 5% of a gateway's CPU once the window was full (issue 17). fromisoformat,
    not strptime, which reads the locale on every call."""
    return datetime.fromisoformat(key.partition(":")[2]).replace(tzinfo=UTC)


def weekday(value: Any) -> int:
    """0 (Monday) ... 6 (Sunday) from a day name (``sunday``, ``sun``) or a number.

    Raises:
        ConfigError: not a day.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 6:
        return value
    text = str(value).strip().lower()
    if text.isdigit() and 0 <= int(text) <= 6:
        return int(text)
    for index, name in enumerate(WEEKDAYS):
        if len(text) >= 3 and name.startswith(text):
            return index
    raise ConfigError(f"week_start {value!r}: use a day name (monday ... sunday) or 0 (Monday) to 6 (Sunday)")


NO_WINDOW = Window()
