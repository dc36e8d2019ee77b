"""Virtual keys and the audit log (the gateway's admin API stores them in the ledger), and the
estimator's calibration aggregates."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.ledger.conftest import Backend
from tests.ledger.helpers import T0, D
from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget, Subject
from tokenward.errors import ValidationError
from tokenward.ledger import AuditEntry, KeyRecord, Ledger, open_ledger
from tokenward.ledger.sqlite import path_from_url


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def key(key_id: str, secret: str, **extra: object) -> KeyRecord:
    return KeyRecord(id=key_id, name=f"{key_id}-name", key_sha256=sha(secret), **extra)  # type: ignore[arg-type]


# -- keys ------------------------------------------------------------------------------------------
def test_a_key_is_stored_by_its_digest_and_found_by_it(ledger: Ledger) -> None:
    record = key(
        "k1",
        "tw-secret-1",
        subject=Subject(project="p1", team="red", user="alice"),
        allow_user_override=True,
        prefix="tw-sec",
    )
    stored = ledger.put_key(record)
    assert stored.created_at == T0 and stored.project == "p1"  # defaults: now, the subject's project
    assert ledger.get_key("k1") == stored
    assert ledger.key_by_hash(sha("tw-secret-1")) == stored
    assert ledger.key_by_hash(sha("tw-secret-1").upper()) == stored
    assert ledger.key_by_hash(sha("something else")) is None
    assert "tw-secret-1" not in repr(stored.to_dict())
    assert KeyRecord.from_dict(stored.to_dict()) == stored


def test_revoked_and_expired_keys_are_not_found_unless_asked(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_key(key("k1", "s1"))
    ledger.put_key(key("k2", "s2", expires_at=T0 + timedelta(hours=1)))
    assert ledger.revoke_key("k1") is True
    assert ledger.revoke_key("k1") is False  # already revoked
    assert ledger.revoke_key("nope") is False
    assert ledger.key_by_hash(sha("s1")) is None
    assert ledger.key_by_hash(sha("s1"), include_inactive=True).revoked_at == T0  # type: ignore[union-attr]
    assert ledger.key_by_hash(sha("s2")) is not None
    clock.advance(timedelta(hours=1))
    assert ledger.key_by_hash(sha("s2")) is None
    assert ledger.key_by_hash(sha("s2"), at=T0) is not None


def test_keys_by_project_oldest_first_and_a_digest_is_unique(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_key(key("b", "s-b", subject=Subject(project="p1")))
    clock.advance(1)
    ledger.put_key(key("a", "s-a", subject=Subject(project="p2")))
    clock.advance(1)
    ledger.put_key(key("c", "s-c", project="p1"))
    assert [k.id for k in ledger.keys(project=None)] == ["b", "a", "c"]
    assert [k.id for k in ledger.keys(project="p1")] == ["b", "c"]
    with pytest.raises(ValidationError) as error:
        ledger.put_key(key("d", "s-a"))
    assert error.value.field == "key_sha256"
    renamed = ledger.put_key(KeyRecord(id="a", name="renamed", key_sha256=sha("s-a"), created_at=T0))
    assert ledger.get_key("a") == renamed and len(ledger.keys()) == 3


@pytest.mark.parametrize("digest", ["abc", "g" * 64, ""])
def test_a_malformed_digest_is_refused(digest: str) -> None:
    with pytest.raises(ValidationError):
        KeyRecord(id="k", name="k", key_sha256=digest)


def test_a_key_change_is_seen_at_once_by_another_connection(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    first.put_key(key("k1", "s1"))
    assert second.key_by_hash(sha("s1")) is not None  # cached by the second connection
    first.revoke_key("k1")
    assert second.key_by_hash(sha("s1")) is None


# -- audit log -------------------------------------------------------------------------------------
def test_audit_entries_are_appended_and_queried(ledger: Ledger, clock: ManualClock) -> None:
    first = ledger.audit(
        "admin", "budget.put", "alice-usd", None, {"limit": Decimal("5.00"), "at": T0}, project="p1"
    )
    clock.advance(60)
    second = ledger.audit(
        "p2-admin", "key.revoke", "k9", {"revoked_at": None}, {"revoked_at": "now"}, project="p2"
    )
    clock.advance(60)
    third = ledger.audit("admin", "budget.delete", "old", {"limit": "1"}, None)
    assert first == AuditEntry(
        first.id,
        T0,
        "admin",
        "budget.put",
        "alice-usd",
        None,
        {"at": "2025-06-02T12:00:00Z", "limit": "5"},
        "p1",
    )
    assert first.id < second.id < third.id
    assert ledger.audit_log() == [first, second, third]
    assert ledger.audit_log(project="p1") == [first]
    assert ledger.audit_log(since=T0 + timedelta(seconds=60)) == [second, third]
    assert ledger.audit_log(after=first.id, limit=1) == [second]


@pytest.mark.parametrize(
    ("args", "field"), [(("", "a", "t"), "actor"), (("x", " ", "t"), "action"), (("x", "a", ""), "target")]
)
def test_an_audit_entry_needs_actor_action_and_target(
    ledger: Ledger, args: tuple[str, str, str], field: str
) -> None:
    with pytest.raises(ValidationError) as error:
        ledger.audit(*args)
    assert error.value.field == field


def test_audit_states_must_be_json(ledger: Ledger) -> None:
    with pytest.raises(ValidationError):
        ledger.audit("admin", "x", "y", before={"set": {1, 2}})
    assert ledger.audit_log() == []


@pytest.mark.sqlite
def test_the_audit_log_is_append_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    try:
        ledger.audit("admin", "budget.put", "b")
        # one row in each of the other append-only tables
        ledger.put_budget(Budget("stop-s", "session", "requests", D(1), action="stop"))
        ledger.put_budget(Budget("shadow-s", "session", "requests", D(0), mode="shadow"))
        ledger.reserve(Subject(session="s1"), {"requests": D(1)})  # shadow denial
        ledger.adjust(Subject(session="s1"), {"requests": D(1)}, reason="r", actor="a")  # threshold, stop
    finally:
        ledger.close()
    raw = sqlite3.connect(path_from_url(url), isolation_level=None)
    try:
        for table in ("audit_log", "threshold_events", "adjustments", "shadow_denials", "stops"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                raw.execute(f"DELETE FROM {table}")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute("UPDATE audit_log SET project = 'p'")
    finally:
        raw.close()


# -- calibration of the estimator ------------------------------------------------------------------
def test_estimate_observations_are_aggregated_per_model(ledger: Ledger) -> None:
    assert ledger.estimate_stats("claude-3-5-sonnet-20241022") is None
    ledger.record_estimate("claude-3-5-sonnet-20241022", 100, 120)
    ledger.record_estimate("anthropic.claude-3-5-sonnet-20240620-v1:0", 200, 200)  # the same model key
    ledger.record_estimate("claude-3-5-sonnet", 0, 50)  # an estimate of 0 is ignored
    stats = ledger.estimate_stats("claude-3-5-sonnet")
    assert stats is not None
    assert (stats.model, stats.count, stats.sum_estimated, stats.sum_actual) == (
        "claude-3-5-sonnet",
        2,
        300,
        320,
    )
    assert (stats.max_ratio, stats.min_ratio) == (D("1.2"), D("1"))
    assert ledger.estimate_stats("gemini-2.5-pro") is None


def test_paging_arguments_are_safe_on_every_store(ledger: Ledger) -> None:
    """Ids and limits come from query strings: any whole number works, a negative limit is a
    validation error."""
    first = ledger.audit("admin", "a", "t")
    second = ledger.audit("admin", "b", "t")
    huge = 10**30
    assert ledger.audit_log(after=huge) == []
    assert ledger.audit_log(after=-5) == [first, second]
    assert ledger.audit_log(limit=huge) == [first, second]
    assert ledger.audit_log(limit=0) == []
    assert ledger.threshold_events(after=huge, limit=huge) == []
    assert ledger.shadow_denials(after=huge) == []
    assert ledger.events(limit=huge) == []
    assert ledger.adjustments(limit=huge) == []
    for call in (
        lambda: ledger.audit_log(limit=-1),
        lambda: ledger.threshold_events(limit=-1),
        lambda: ledger.events(limit=-1),
        lambda: ledger.audit_log(after="3"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValidationError):
            call()
