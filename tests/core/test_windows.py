"""Calendar windows in IANA zones, keyed by their UTC start.

Expected instants are worked out by hand from the zones' published rules (EU summer time starts
2025-03-30 01:00 UTC and ends 2025-10-26 01:00 UTC; US DST ends 2025-11-02 06:00 UTC; Lord Howe
Island shifts by 30 minutes at 02:00 local) and from cases C42 and C45.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenward.core.windows import NO_WINDOW, Window
from tokenward.errors import ConfigError


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("window", "at", "start", "reset"),
    [
        ("hour", "2025-06-02T15:42:10Z", "2025-06-02T15:00:00Z", "2025-06-02T16:00:00Z"),
        ("day", "2025-06-02T15:00:00Z", "2025-06-02T00:00:00Z", "2025-06-03T00:00:00Z"),  # C42
        ("day", "2025-05-15T12:00:00Z", "2025-05-15T00:00:00Z", "2025-05-16T00:00:00Z"),  # C45
        ("month", "2025-05-15T12:00:00Z", "2025-05-01T00:00:00Z", "2025-06-01T00:00:00Z"),  # C45 variant
        ("week", "2025-06-01T12:00:00Z", "2025-05-26T00:00:00Z", "2025-06-02T00:00:00Z"),  # Sunday -> Monday
        ("week", "2025-06-02T00:00:00Z", "2025-06-02T00:00:00Z", "2025-06-09T00:00:00Z"),  # Monday 00:00
        ("month", "2024-02-29T23:59:59Z", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"),  # leap year
        ("month", "2025-02-28T12:00:00Z", "2025-02-01T00:00:00Z", "2025-03-01T00:00:00Z"),
        ("month", "2025-12-31T23:00:00Z", "2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        ("month", "2025-01-31T00:00:00Z", "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z"),
        ("day", "2025-06-02T23:59:59.999999Z", "2025-06-02T00:00:00Z", "2025-06-03T00:00:00Z"),
        ("day", "2025-06-03T00:00:00Z", "2025-06-03T00:00:00Z", "2025-06-04T00:00:00Z"),
    ],
)
def test_utc_windows(window: str, at: str, start: str, reset: str) -> None:
    w = Window.parse(window)
    assert w.start(z(at)) == z(start)
    assert w.reset_at(z(at)) == z(reset)
    assert w.key(z(at)) == start.replace(".999999", "")


@pytest.mark.parametrize(
    ("window", "at", "start", "reset", "hours"),
    [
        # Paris springs forward on 2025-03-30: the local day lasts 23 hours.
        ("day@Europe/Paris", "2025-03-30T12:00:00Z", "2025-03-29T23:00:00Z", "2025-03-30T22:00:00Z", 23),
        # and falls back on 2025-10-26: 25 hours.
        ("day@Europe/Paris", "2025-10-26T12:00:00Z", "2025-10-25T22:00:00Z", "2025-10-26T23:00:00Z", 25),
        # New York falls back on 2025-11-02: 25 hours, midnight EDT to midnight EST.
        ("day@America/New_York", "2025-11-02T12:00:00Z", "2025-11-02T04:00:00Z", "2025-11-03T05:00:00Z", 25),
        ("day@America/New_York", "2025-03-09T12:00:00Z", "2025-03-09T05:00:00Z", "2025-03-10T04:00:00Z", 23),
        # An instant late on the UTC day is already the next local day in Tokyo (UTC+9).
        ("day@Asia/Tokyo", "2025-06-02T16:00:00Z", "2025-06-02T15:00:00Z", "2025-06-03T15:00:00Z", 24),
        # Half-hour offset: Kolkata is UTC+5:30.
        ("day@Asia/Kolkata", "2025-01-01T20:00:00Z", "2025-01-01T18:30:00Z", "2025-01-02T18:30:00Z", 24),
        ("hour@Asia/Kolkata", "2025-01-01T20:10:00Z", "2025-01-01T19:30:00Z", "2025-01-01T20:30:00Z", 1),
        # The Paris month of March 2025 holds the spring-forward: 31 days minus 1 hour.
        (
            "month@Europe/Paris",
            "2025-03-15T00:00:00Z",
            "2025-02-28T23:00:00Z",
            "2025-03-31T22:00:00Z",
            31 * 24 - 1,
        ),
        # Local 1 November starts at 23:00 UTC on 31 October in Paris (CET, UTC+1).
        (
            "month@Europe/Paris",
            "2025-10-31T23:30:00Z",
            "2025-10-31T23:00:00Z",
            "2025-11-30T23:00:00Z",
            30 * 24,
        ),
        # Paris week holding the fall-back: Monday 2025-10-20 00:00 CEST to Monday 10-27 00:00 CET.
        (
            "week@Europe/Paris",
            "2025-10-26T12:00:00Z",
            "2025-10-19T22:00:00Z",
            "2025-10-26T23:00:00Z",
            7 * 24 + 1,
        ),
    ],
)
def test_zoned_windows_across_daylight_saving(
    window: str, at: str, start: str, reset: str, hours: int
) -> None:
    w = Window.parse(window)
    assert w.start(z(at)) == z(start)
    assert w.reset_at(z(at)) == z(reset)
    assert w.reset_at(z(at)) - w.start(z(at)) == timedelta(hours=hours)  # type: ignore[operator]


def test_repeated_local_hour_is_two_windows() -> None:
    # Paris 2025-10-26: local 02:00-03:00 happens twice (CEST, then CET).
    w = Window.parse("hour@Europe/Paris")
    first, second = z("2025-10-26T00:30:00Z"), z("2025-10-26T01:30:00Z")
    assert (w.start(first), w.reset_at(first)) == (z("2025-10-26T00:00:00Z"), z("2025-10-26T01:00:00Z"))
    assert (w.start(second), w.reset_at(second)) == (z("2025-10-26T01:00:00Z"), z("2025-10-26T02:00:00Z"))
    assert w.key(first) != w.key(second)


def test_lord_howe_half_hour_shift_keeps_the_instant_inside_its_hour() -> None:
    # Lord Howe falls back 30 minutes at 02:00 local (+11:00 -> +10:30) on 2025-04-06, i.e. at
    # 15:00 UTC: local 01:00-02:00 lasts 90 minutes, 14:00Z to 15:30Z.
    w = Window.parse("hour@Australia/Lord_Howe")
    at = z("2025-04-05T15:10:00Z")
    assert w.start(at) == z("2025-04-05T14:00:00Z")
    assert w.reset_at(at) == z("2025-04-05T15:30:00Z")
    # It springs forward 30 minutes at 02:00 local on 2025-10-05 (15:30 UTC): the local hour
    # 02:30-03:00 lasts 30 minutes.
    at = z("2025-10-04T15:40:00Z")
    assert (w.start(at), w.reset_at(at)) == (z("2025-10-04T15:30:00Z"), z("2025-10-04T16:00:00Z"))


def test_week_start_is_configurable() -> None:
    sunday = Window(unit="week", time_zone="UTC", week_start=6)
    assert sunday.start(z("2025-06-04T10:00:00Z")) == z("2025-06-01T00:00:00Z")
    assert sunday.reset_at(z("2025-06-04T10:00:00Z")) == z("2025-06-08T00:00:00Z")


def test_no_window() -> None:
    assert Window.parse(None) == NO_WINDOW
    assert Window.parse("none") == NO_WINDOW
    assert Window.parse("") == NO_WINDOW
    assert NO_WINDOW.start(z("2025-01-01T00:00:00Z")) is None
    assert NO_WINDOW.reset_at(z("2025-01-01T00:00:00Z")) is None
    assert NO_WINDOW.key(z("2025-01-01T00:00:00Z")) == ""
    assert str(NO_WINDOW) == "none"


def test_naive_instants_are_utc_and_aware_ones_are_converted() -> None:
    w = Window.parse("day")
    assert w.start(datetime(2025, 6, 2, 15)) == z("2025-06-02T00:00:00Z")
    paris_morning = datetime.fromisoformat("2025-06-03T01:00:00+02:00")  # 2025-06-02T23:00Z
    assert w.start(paris_morning) == z("2025-06-02T00:00:00Z")


def test_parse_and_str() -> None:
    assert Window.parse("Month@Europe/Paris") == Window(unit="month", time_zone="Europe/Paris")
    assert Window.parse("day@") == Window(unit="day")
    assert str(Window.parse("day@America/New_York")) == "day@America/New_York"
    assert str(Window.parse("week")) == "week"


@pytest.mark.parametrize("spec", ["fortnight", "day@Mars/Olympus_Mons", "day@../../etc/passwd", "year@UTC"])
def test_bad_windows_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        Window.parse(spec)


def test_bad_week_start() -> None:
    with pytest.raises(ConfigError):
        Window(unit="week", week_start=7)


ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/Santiago",
    "America/Havana",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "America/St_Johns",
]


@settings(deadline=None)  # shared, noisy machines: no per-example time limit
@given(
    unit=st.sampled_from(["hour", "day", "week", "month"]),
    zone=st.sampled_from(ZONES),
    at=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1)),
)
def test_every_instant_lies_in_exactly_one_window(unit: str, zone: str, at: datetime) -> None:
    w = Window(unit=unit, time_zone=zone)  # type: ignore[arg-type]
    at = at.replace(tzinfo=UTC)
    start, reset = w.start(at), w.reset_at(at)
    assert start is not None and reset is not None
    assert start <= at < reset
    assert w.start(start) == start  # the start belongs to its own window
    assert w.start(reset) == reset  # the next window starts where this one ends
    assert w.key(reset) != w.key(at)
    assert w.key(reset - timedelta(microseconds=1)) == w.key(at)
