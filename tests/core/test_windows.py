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


# --- week start names, mapping forms --------------------------------------------------------------


def test_week_start_by_name_in_the_string_form() -> None:
    w = Window.parse("week:sunday@America/New_York")
    assert (w.unit, w.week_start, w.time_zone) == ("week", 6, "America/New_York")
    assert str(w) == "week:sunday@America/New_York"
    assert Window.parse(str(w)) == w
    # Wednesday 2025-06-04 10:00 in New York (EDT, UTC-4): the week began Sunday 2025-06-01 00:00 EDT.
    assert w.start(z("2025-06-04T14:00:00Z")) == z("2025-06-01T04:00:00Z")
    assert str(Window.parse("week:monday")) == "week"  # the default is not spelt out


@pytest.mark.parametrize("spec", ["day:sunday", "week:funday", "week:8"])
def test_a_start_day_only_for_weeks(spec: str) -> None:
    with pytest.raises(ConfigError):
        Window.parse(spec)


def test_window_from_a_mapping_as_the_cases_write_it() -> None:
    # C42 / C45: {"type": "calendar", "unit": "day", "time_zone": "UTC", "reset_local_time": "00:00"}
    w = Window.from_value(
        {"type": "calendar", "unit": "day", "time_zone": "UTC", "reset_local_time": "00:00"}
    )
    assert w == Window(unit="day")
    assert Window.from_value({"type": "calendar", "unit": "week", "week_start": "sun"}) == Window(
        "week", week_start=6
    )
    assert Window.from_value("week", week_start="saturday") == Window("week", week_start=5)
    assert Window.from_value({"type": "rolling", "duration": "5h"}) == Window.parse("rolling:5h")
    assert Window.from_value(None) == NO_WINDOW
    with pytest.raises(ConfigError, match="week windows only"):
        Window.from_value("day", week_start="sunday")
    with pytest.raises(ConfigError, match="reset_local_time"):
        Window.from_value({"type": "calendar", "unit": "day", "reset_local_time": "06:00"})
    with pytest.raises(ConfigError, match="unknown keys"):
        Window.from_value({"type": "calendar", "unit": "day", "colour": "red"})


# --- rolling windows ------------------------------------------------------------------------------


def test_rolling_window_buckets_and_string_form() -> None:
    w = Window.parse("rolling:5h")
    assert (w.unit, w.duration, w.buckets, w.bucket) == (
        "rolling",
        timedelta(hours=5),
        60,
        timedelta(minutes=5),
    )
    assert str(w) == "rolling:5h"
    # 90 minutes = 5400 s: the largest divisor up to 60 is 60 (90 s buckets); 7 s: 7 buckets of 1 s.
    assert Window.parse("rolling:90m").bucket == timedelta(seconds=90)
    assert Window.parse("rolling:7s").buckets == 7
    # 61 s is prime: 1 bucket of 61 s.
    assert Window.parse("rolling:61s").buckets == 1
    explicit = Window.parse("rolling:1h30m:45")
    assert (explicit.buckets, explicit.bucket, str(explicit)) == (
        45,
        timedelta(minutes=2),
        "rolling:1h30m:45",
    )
    assert Window.parse(str(explicit)) == explicit


@pytest.mark.parametrize(
    "spec", ["rolling", "rolling:", "rolling:0s", "rolling:5x", "rolling:1h:7", "rolling:1h:x"]
)
def test_bad_rolling_windows(spec: str) -> None:
    with pytest.raises(ConfigError):
        Window.parse(spec)


def test_rolling_span_and_when_spend_drops_out() -> None:
    """rolling:1h = 60 buckets of 60 s, aligned on the epoch (so on whole minutes).

    At 13:00:30 the current bucket starts 13:00:00 and the span is the 61 buckets from 12:00:00
    to 13:00:00. Spend stored in the 12:00:00 bucket stops counting when the current bucket is
    13:01:00, i.e. at 13:01:00: between 60 and 61 minutes after it was charged.
    """
    w = Window.parse("rolling:1h")
    at = z("2025-06-02T13:00:30Z")
    assert w.span(at) == ("r60:2025-06-02T12:00:00Z", "r60:2025-06-02T13:00:00Z")
    assert w.key(at) == "r60:2025-06-02T13:00:00Z"
    assert w.start(at) == z("2025-06-02T12:00:00Z")
    assert w.reset_at(at) == z("2025-06-02T13:01:00Z")  # the next bucket boundary
    assert w.drops_at("r60:2025-06-02T12:00:00Z") == z("2025-06-02T13:01:00Z")
    assert Window.parse("day").drops_at("2025-06-02T00:00:00Z") is None
    # keys sort in time order inside one span
    keys = [w.key(at + timedelta(minutes=m)) for m in range(-70, 5)]
    assert keys == sorted(keys)


@settings(deadline=None)
@given(
    seconds=st.integers(1, 8 * 86400),
    charged=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1)),
)
def test_rolling_spend_counts_at_least_the_duration_and_at_most_one_bucket_more(
    seconds: int, charged: datetime
) -> None:
    w = Window(unit="rolling", duration=timedelta(seconds=seconds))
    charged = charged.replace(tzinfo=UTC)
    key = w.key(charged)
    first, last = w.span(charged)
    assert first <= key <= last
    drops = w.drops_at(key)
    assert drops is not None
    assert charged + w.duration <= drops <= charged + w.duration + w.bucket  # type: ignore[operator]
    before = drops - timedelta(microseconds=1)
    lo, hi = w.span(before)
    assert lo <= key <= hi  # still counted just before
    lo, hi = w.span(drops)
    assert not lo <= key <= hi  # gone at the instant
