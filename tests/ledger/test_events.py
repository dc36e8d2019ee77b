"""Usage events: append-only, queried by subject scope and by time, in time order."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.ledger.conftest import Backend
from tests.ledger.helpers import ALICE, BOB, D, cost_budget, event, usd
from tokenward.core.budgets import Subject
from tokenward.core.events import UsageEvent
from tokenward.ledger import Ledger, open_ledger
from tokenward.ledger.sqlite import path_from_url

AT = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)


def _minute(n: int) -> datetime:
    return AT + timedelta(minutes=n)


@pytest.fixture
def three(ledger: Ledger) -> Ledger:
    """Three events written out of time order: e3 (alice, 12:03), e1 (bob, 12:01), e2 (carol, 12:02)."""
    carol = Subject(team="blue", user="carol", tags=(("arm", "b"), ("env", "prod")))
    ledger.settle(None, event(ALICE, usd("0.3"), at=_minute(3), request_id="e3"))
    ledger.settle(None, event(BOB, usd("0.1"), at=_minute(1), request_id="e1"))
    ledger.settle(None, event(carol, usd("0.2"), at=_minute(2), request_id="e2"))
    return ledger


def _ids(events: list[UsageEvent]) -> list[str]:
    return [e.request_id for e in events]


def test_events_come_back_in_time_order(three: Ledger) -> None:
    assert _ids(three.events()) == ["e1", "e2", "e3"]


def test_events_with_the_same_instant_keep_their_insertion_order(ledger: Ledger) -> None:
    for rid in ("b", "a", "c"):
        ledger.settle(None, event(ALICE, usd("1"), at=AT, request_id=rid))
    assert _ids(ledger.events()) == ["b", "a", "c"]


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        (Subject(user="alice"), ["e3"]),
        (Subject(team="red"), ["e1", "e3"]),
        (Subject(org="acme", user="bob"), ["e1"]),
        (Subject(org="acme", user="carol"), []),
        (Subject(tags=(("arm", "b"),)), ["e2"]),
        (Subject(team="blue", tags=(("arm", "a"),)), []),
        (Subject(), ["e1", "e2", "e3"]),
    ],
)
def test_events_by_subject_scope(three: Ledger, wanted: Subject, expected: list[str]) -> None:
    assert _ids(three.events(subject=wanted)) == expected


def test_events_by_time_since_inclusive_until_exclusive(three: Ledger) -> None:
    assert _ids(three.events(since=_minute(2))) == ["e2", "e3"]
    assert _ids(three.events(until=_minute(3))) == ["e1", "e2"]
    assert _ids(three.events(since=_minute(2), until=_minute(3))) == ["e2"]
    assert _ids(three.events(since=_minute(4))) == []
    assert _ids(three.events(subject=Subject(team="red"), since=_minute(2))) == ["e3"]


def test_events_limit_takes_the_earliest(three: Ledger) -> None:
    assert _ids(three.events(limit=2)) == ["e1", "e2"]
    assert _ids(three.events(subject=Subject(team="red"), limit=1)) == ["e1"]


def test_time_bounds_in_another_zone_mean_the_same_instant(three: Ledger) -> None:
    paris_summer = timezone(timedelta(hours=2))
    since = datetime(2025, 6, 2, 14, 2, tzinfo=paris_summer)  # = 12:02Z
    assert _ids(three.events(since=since)) == ["e2", "e3"]
    assert _ids(three.events(until=datetime(2025, 6, 2, 14, 3, tzinfo=paris_summer))) == ["e1", "e2"]
    naive_utc = datetime(2025, 6, 2, 12, 2)  # naive means UTC, as everywhere in tokenward
    assert _ids(three.events(since=naive_utc)) == ["e2", "e3"]


def test_an_event_reads_back_as_written(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    reservation = ledger.reserve(ALICE, {"cost_usd": D("0.5"), "requests": D("1")})
    written = ledger.settle(
        reservation.id,
        event(ALICE, {"cost_usd": D("0.5123456789"), "requests": D("1")}, at=AT, status="cut_off"),
    )
    assert ledger.events() == [written]
    stored = ledger.events()[0]
    assert stored.cost_usd == D("0.5123456789")
    assert stored.status == "cut_off"
    assert stored.overage == {"cost_usd": D("0.0123456789")}


def test_events_are_append_only(ledger: Ledger) -> None:
    first = ledger.settle(None, event(ALICE, usd("1"), at=AT, request_id="e1"))
    # A second write of the same request id neither replaces nor duplicates it.
    ledger.settle(None, event(BOB, usd("5"), at=_minute(1), request_id="e1"))
    listed = ledger.events()
    listed.clear()  # the caller's list, not the store
    assert ledger.events() == [first]
    # Deleting a budget keeps its events.
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    ledger.delete_budget("alice-usd")
    assert ledger.events() == [first]


def test_events_are_seen_by_every_connection(backend: Backend) -> None:
    writer = backend.open()
    written = writer.settle(None, event(ALICE, usd("1"), at=AT))
    assert backend.reader().events() == [written]


@pytest.mark.sqlite
def test_sqlite_triggers_refuse_update_and_delete(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    try:
        ledger.settle(None, event(ALICE, usd("1"), at=AT, request_id="e1"))
    finally:
        ledger.close()

    raw = sqlite3.connect(path_from_url(url), isolation_level=None)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute("UPDATE usage_events SET status = 'ok', cost_usd = '0' WHERE request_id = 'e1'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute("DELETE FROM usage_events")
        assert raw.execute("SELECT request_id, cost_usd FROM usage_events").fetchall() == [("e1", "1")]
    finally:
        raw.close()


def test_an_event_is_found_by_its_response_id_conversation_or_cached_content(ledger: Ledger) -> None:
    from dataclasses import replace

    from tokenward.errors import ValidationError

    def tagged(request_id: str, at: datetime, **metadata: str) -> UsageEvent:
        return replace(event(ALICE, usd("0.1"), at=at, request_id=request_id), metadata=metadata)

    ledger.settle(None, tagged("t1", _minute(1), response_id="resp_1", conversation="conv_a"))
    ledger.settle(None, tagged("t2", _minute(2), response_id="resp_2", conversation="conv_a"))
    ledger.settle(None, tagged("c1", _minute(3), cached_content="cachedContents/x1"))
    assert ledger.event_by_metadata("response_id", "resp_1").request_id == "t1"  # type: ignore[union-attr]
    assert ledger.event_by_metadata("conversation", "conv_a").request_id == "t2"  # type: ignore[union-attr]
    found = ledger.event_by_metadata("cached_content", "cachedContents/x1")
    assert found is not None and found.usage.input_tokens == 100
    assert ledger.event_by_metadata("response_id", "resp_unknown") is None
    assert ledger.event_by_metadata("conversation", "resp_1") is None  # keys are not mixed up
    with pytest.raises(ValidationError):
        ledger.event_by_metadata("model", "fake-model")  # only the documented keys
    with pytest.raises(ValidationError):
        ledger.event_by_metadata("response_id", "")


def test_the_latest_event_of_a_conversation_is_the_last_recorded(backend: Backend) -> None:
    from dataclasses import replace

    ledger = backend.open()
    for index, rid in enumerate(("u1", "u2", "u3")):
        stored = replace(
            event(ALICE, usd("0.1"), at=_minute(index), request_id=rid), metadata={"conversation": "c"}
        )
        ledger.settle(None, stored)
    found = ledger.event_by_metadata("conversation", "c")
    assert found is not None and found.request_id == "u3"
