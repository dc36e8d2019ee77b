"""Daily spend rollups (issue 18) kept as events are written, on every backend: the rows equal the
sums worked out from the events themselves; a shared secret is made once; an existing SQLite
ledger's events are rolled up by the backfill, not at start-up."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.ledger.conftest import Backend
from tokenward.core.budgets import Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.ledger import Ledger, open_ledger

FIXTURES = Path(__file__).parent / "fixtures"
DAY = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)


def _events() -> list[UsageEvent]:
    out = []
    for i in range(12):
        project = "shop" if i % 3 else None
        out.append(
            UsageEvent(
                request_id=f"req-{i}",
                at=DAY + timedelta(minutes=i * 7),  # across midnight
                subject=Subject(
                    project=project, user=f"u{i % 2}", tags=(("env", "prod"),) if i % 4 == 0 else ()
                ).namespaced(),
                usage=Usage(input_tokens=100 + i, output_tokens=10 * i),
                model="gpt-4o-mini" if i % 2 else "claude-sonnet-4",
                cost_usd=None
                if i == 5
                else Decimal("0.000000150") * (100 + i) + Decimal("0.0000006") * 10 * i,
            )
        )
    return out


def _expected(events: list[UsageEvent], project: str | None = None) -> dict[tuple[str, str, str, str], tuple]:
    """The rows worked out by hand from the events (not by the rollup code)."""
    rows: dict[tuple[str, str, str, str], list] = {}
    for e in events:
        if project is not None and e.subject.project != project:
            continue
        keys = [("*", ""), ("model", e.model or "(unknown)"), ("user", e.subject.user or "(none)")]
        keys += [(scope, e.subject.value(scope) or "(none)") for scope in ("project", "team", "key", "agent")]
        keys += [("tag", f"{k}={v}") for k, v in e.subject.tags] or [("tag", "(no tag)")]
        for dim, value in keys:
            row = rows.setdefault(
                (e.at.date().isoformat(), e.subject.project or "", dim, value), [0, 0, 0, Decimal(0), 0]
            )
            row[0] += 1
            row[1] += e.usage.input_tokens or 0  # unknown adds nothing
            row[2] += e.usage.output_tokens or 0
            if e.cost_usd is None:
                row[4] += 1
            else:
                row[3] += e.cost_usd
    return {k: tuple(v) for k, v in rows.items()}


def _got(ledger: Ledger, since: str, project: str | None = None) -> dict[tuple[str, str, str, str], tuple]:
    rows = ledger.spend_rollup(since, project=project)
    assert rows is not None
    return {
        (r.day, r.project, r.dim, r.value): (r.calls, r.input_tokens, r.output_tokens, r.cost_usd, r.unpriced)
        for r in rows
    }


def test_rollups_are_kept_as_events_are_written(backend: Backend) -> None:
    ledger = backend.open()
    events = _events()
    for event in events:
        ledger.settle(None, event)
    ledger.settle(None, events[0])  # written once: the rollup counts it once
    assert _got(ledger, "2026-03-01") == _expected(events)
    assert _got(ledger, "2026-03-02") == {k: v for k, v in _expected(events).items() if k[0] == "2026-03-02"}
    assert _got(ledger, "2026-01-01", project="shop") == _expected(events, "shop")
    assert ledger.backfill_rollup() == 0
    # the shared secret: made once, the same from a second connection
    secret = ledger.secret("dashboard")
    assert len(secret) >= 40 and ledger.secret("dashboard") == secret
    if backend.spec.shared_store:
        other = backend.open()
        assert other.secret("dashboard") == secret


@pytest.mark.sqlite
def test_an_existing_sqlite_ledger_is_rolled_up_by_the_backfill(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    shutil.copy(FIXTURES / "ledger_v4.sqlite", path)
    ledger = open_ledger(f"sqlite:///{path}")
    try:
        old = ledger.events()
        assert old and ledger.spend_rollup("2000-01-01") is None  # not yet: no scan at start-up
        new = _events()[:2]
        for event in new:
            ledger.settle(None, event)
        while ledger.backfill_rollup():  # one batch: rows of the same day summed in one statement
            pass
        assert _got(ledger, "2000-01-01") == _expected([*old, *new])
    finally:
        ledger.close()


def test_session_summaries_sum_each_sessions_calls(backend: Backend) -> None:
    ledger = backend.open()
    events = [
        UsageEvent(
            request_id=f"s-{i}",
            at=DAY + timedelta(minutes=i),
            subject=Subject(project="shop" if i % 2 else None, user="ann", session=f"s{i % 3}").namespaced(),
            usage=Usage(input_tokens=10 * i, output_tokens=i),
            model="m",
            status="cut_off" if i == 7 else "ok",
            cost_usd=None if i == 4 else Decimal("0.000001") * i,
        )
        for i in range(9)
    ]
    for event in events:
        ledger.settle(None, event)
    got = {s.session: s for s in ledger.session_summaries(DAY + timedelta(minutes=1))}
    for session in {e.subject.session for e in events[1:]}:
        mine = [e for e in events[1:] if e.subject.session == session]
        summary = got.pop(session)  # type: ignore[arg-type]
        assert summary.calls == len(mine)
        assert summary.tokens == sum(e.usage.input_tokens + e.usage.output_tokens for e in mine)
        assert summary.cost_usd == sum((e.cost_usd for e in mine if e.cost_usd is not None), Decimal(0))
        assert (summary.first, summary.last, summary.last_status) == (
            mine[0].at,
            mine[-1].at,
            mine[-1].status,
        )
    assert got == {}
    shop = ledger.session_summaries(DAY, project="shop")
    assert {s.session for s in shop} == {e.subject.session for e in events if e.subject.project == "shop"}


@pytest.mark.postgres
def test_an_existing_postgres_ledger_is_rolled_up_by_the_backfill(tmp_path: Path) -> None:
    """Events written before the rollups (marked so by moving rollup_below), summed per row in
    one batch (PostgreSQL refuses an upsert touching a row twice)."""
    from tests.ledger.backends import BACKENDS, require_available

    spec = BACKENDS["postgres"]
    require_available(spec)
    url = spec.make_url(tmp_path)
    ledger = open_ledger(url)
    try:
        events = _events()
        for event in events:
            ledger.settle(None, event)
        with ledger._transaction():  # type: ignore[attr-defined]
            ledger._execute("DELETE FROM usage_rollup")  # type: ignore[attr-defined]
            ledger._execute("UPDATE meta SET value = 1 WHERE key = 'rollup_next'")  # type: ignore[attr-defined]
            ledger._execute("UPDATE meta SET value = 1000 WHERE key = 'rollup_below'")  # type: ignore[attr-defined]
        assert ledger.spend_rollup("2000-01-01") is None
        while ledger.backfill_rollup():
            pass
        assert _got(ledger, "2000-01-01") == _expected(events)
    finally:
        ledger.close()
        spec.cleanup(url)
