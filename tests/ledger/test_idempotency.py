"""``Idempotency-Key`` records (issue 15 item 16) on every backend: claimed once, refused while
running, stored with their answer for the key's time to live, freed when dropped or expired."""

from __future__ import annotations

from datetime import timedelta

from tokenward.clock import ManualClock
from tokenward.ledger import Ledger
from tokenward.ledger.records import IDEMPOTENCY_RUNNING

ANSWER = {
    "status": 200,
    "headers": [["content-type", "application/json"]],
    "media_type": None,
    "body": "e30=",
}
DAY = timedelta(hours=24)


def test_a_key_is_claimed_once_then_answered_from_the_store(ledger: Ledger, clock: ManualClock) -> None:
    assert ledger.begin_idempotent("ns", "k1", "h1", "req-1") is None  # claimed
    running = ledger.begin_idempotent("ns", "k1", "h1", "req-2")
    assert running is not None and (running.state, running.request_id, running.body_sha256) == (
        "running",
        "req-1",
        "h1",
    )
    assert ledger.begin_idempotent("other-ns", "k1", "h1", "req-3") is None  # keys are per namespace
    assert not ledger.finish_idempotent("ns", "k1", "req-2", ANSWER, DAY)  # not the holder
    assert ledger.finish_idempotent("ns", "k1", "req-1", ANSWER, DAY)
    clock.advance(timedelta(hours=23))
    done = ledger.begin_idempotent("ns", "k1", "h1", "req-4")
    assert done is not None and done.state == "done" and done.response == ANSWER
    clock.advance(timedelta(hours=1))  # the answer's 24 h are over: the key is free again
    assert ledger.begin_idempotent("ns", "k1", "h2", "req-5") is None


def test_a_dropped_or_abandoned_key_is_free_again(ledger: Ledger, clock: ManualClock) -> None:
    assert ledger.begin_idempotent("ns", "k2", "h", "req-1") is None
    assert not ledger.drop_idempotent("ns", "k2", "req-9")
    assert ledger.drop_idempotent("ns", "k2", "req-1")
    assert ledger.begin_idempotent("ns", "k2", "h", "req-2") is None
    clock.advance(timedelta(seconds=IDEMPOTENCY_RUNNING - 1))
    assert ledger.begin_idempotent("ns", "k2", "h", "req-3") is not None  # still running
    clock.advance(timedelta(seconds=1))  # its process never finished it: free again
    assert ledger.begin_idempotent("ns", "k2", "h", "req-3") is None
    assert not ledger.finish_idempotent("ns", "k2", "req-2", ANSWER, DAY)  # too late for the first
