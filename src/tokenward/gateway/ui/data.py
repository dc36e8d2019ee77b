"""What the dashboard's pages show, read from the ledger on every request (so a call settled by
any process, worker, replica or SDK, shows up on the next refresh) and limited to what the
signed-in admin may see: a project admin's queries are all filtered by its project.

Money stays exact (``Decimal``) until it is formatted; token counts are integers. Periods are
calendar periods in UTC: today, this week (from Monday), this month.

Session statuses (:func:`session_status`), worked out from the session's events, the ledger's
denials and stop markers:

* ``active``: a call in the last :data:`IDLE_MINUTES` minutes;
* ``idle``: no call for :data:`IDLE_MINUTES` minutes, less than :data:`ENDED_MINUTES`;
* ``ended``: the SDK closed it (its last worker left ``guard.session(...)``, noted in the audit
  log as ``session.end`` after its last call), or no call for :data:`ENDED_MINUTES` minutes;
* ``cut off``: its latest call was ended by tokenward at its hold (status ``cut_off``);
* ``refused``: its latest attempt was denied by a budget (a denial after its last call);
* ``stopped``: a ``stop`` budget (a detector's action) ended it (a stop marker).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenward.core.budgets import Budget, Subject
from tokenward.core.events import UsageEvent
from tokenward.gateway.admin.operations import owns
from tokenward.gateway.config import AdminKeyConfig
from tokenward.ledger.rollups import RollupRow, rollup_rows

__all__ = [
    "DIMENSIONS",
    "ENDED_MINUTES",
    "IDLE_MINUTES",
    "BudgetRow",
    "SessionRow",
    "budget_rows",
    "events_csv",
    "filter_events",
    "overview",
    "session_rows",
    "session_status",
    "visible_denials",
]

IDLE_MINUTES = 5
ENDED_MINUTES = 30
DIMENSIONS = ("model", "user", "project", "team", "key", "agent", "tag")
"""What spend can be broken down by (``tag``: each ``name=value`` tag)."""


def period_starts(now: datetime) -> dict[str, datetime]:
    """The starts (UTC) of today, this week (Monday) and this month."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"today": day, "week": day - timedelta(days=day.weekday()), "month": day.replace(day=1)}


def month_end(now: datetime) -> datetime:
    """The first instant of next month (UTC)."""
    start = period_starts(now)["month"]
    return (start + timedelta(days=32)).replace(day=1)


def scope_subject(admin: AdminKeyConfig, **values: str | None) -> Subject | None:
    """The subject a query is filtered by: the values given, inside the admin's project."""
    chosen = {k: v for k, v in values.items() if v}
    if admin.project is not None:
        chosen["project"] = admin.project
    return Subject.from_dict(chosen) if chosen else None


def tokens(event: UsageEvent) -> int:
    """Input plus output tokens of an event (unknown counts as 0 here, shown as such)."""
    return (event.usage.input_tokens or 0) + (event.usage.output_tokens or 0)


def dimension_values(event: UsageEvent, dimension: str) -> list[str]:
    """The values of ``dimension`` an event's spend is counted under (its tags: one each)."""
    if dimension == "model":
        return [event.model or "(unknown)"]
    if dimension == "tag":
        return [f"{k}={v}" for k, v in event.subject.tags] or ["(no tag)"]
    return [event.subject.value(dimension) or "(none)"]


@dataclass
class Totals:
    """Spend of a set of events: calls, tokens, USD (``unpriced`` calls have no cost)."""

    calls: int = 0
    tokens: int = 0
    usd: Decimal = Decimal(0)
    unpriced: int = 0

    def merge(self, row: RollupRow) -> None:
        """Add a rollup row's figures."""
        self.calls += row.calls
        self.tokens += row.input_tokens + row.output_tokens
        self.usd += row.cost_usd
        self.unpriced += row.unpriced

    def add(self, event: UsageEvent) -> None:
        self.calls += 1
        self.tokens += tokens(event)
        if event.cost_usd is None:
            self.unpriced += 1
        else:
            self.usd += event.cost_usd


@dataclass
class Overview:
    """The overview page's figures."""

    now: datetime
    periods: dict[str, Totals]
    breakdown: dict[str, list[tuple[str, Totals]]]
    burn_usd_per_hour: Decimal
    forecast_usd: Decimal
    closest: list[BudgetRow]
    alerts: list[Any]
    anomalies: list[Any]
    denials: list[Any]
    denials_available: bool
    series: dict[str, Any] = field(default_factory=dict)
    top_spenders: list[tuple[str, Totals]] = field(default_factory=list)
    latest: list[UsageEvent] = field(default_factory=list)


async def overview(ledger: Any, admin: AdminKeyConfig, now: datetime, by: str = "model") -> Overview:
    """The overview: spend per period, this month's breakdown by every dimension, the burn rate
    of the last hour and this month's forecast at that rate, the budgets closest to their limit,
    the latest threshold alerts, anomalies (detector findings) and denials, and 30 days of daily spend stacked by ``by``.

    Read from the ledger's daily rollups (:mod:`tokenward.ledger.rollups`) when it has them, else
    (while an older ledger is being rolled up) from the events themselves; the last hour (burn
    rate, latest calls) always from the events."""
    starts = period_starts(now)
    since = min(starts["month"], now - timedelta(days=30))
    days = [(starts["today"] - timedelta(days=i)).date() for i in range(29, -1, -1)]
    recent = await ledger.events(subject=scope_subject(admin), since=now - timedelta(hours=1))
    hour = Totals()
    for event in recent:
        hour.add(event)
    month_day = starts["month"].date().isoformat()
    since_day = since.date().isoformat()
    periods = {name: Totals() for name in starts}
    breakdown: dict[str, dict[str, Totals]] = {d: defaultdict(Totals) for d in DIMENSIONS}
    stacked: dict[str, dict[Any, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    daily = await _rollup(ledger, admin, since_day, dim="*")
    if daily is not None:  # from the rollups: a few small summed queries
        month = await _rollup(ledger, admin, month_day, by_day=False) or []
        spent = await _rollup(ledger, admin, since_day, dim=by, by_day=False) or []
        top = [r.value for r in sorted(spent, key=lambda r: (-r.cost_usd, r.value))[:8]]
        series_rows = await _rollup(ledger, admin, since_day, dim=by, values=top) or []
    else:  # an older ledger still being rolled up: the events themselves
        rows = rollup_rows(await ledger.events(subject=scope_subject(admin), since=since))
        daily = [r for r in rows if r.dim == "*"]
        month = [r for r in rows if r.day >= month_day and r.dim != "*"]
        series_rows = [r for r in rows if r.dim == by]
    for row in daily:
        for name, start in starts.items():
            if row.day >= start.date().isoformat():
                periods[name].merge(row)
    for row in month:
        if row.dim in breakdown:
            breakdown[row.dim][row.value].merge(row)
    for row in series_rows:
        stacked[row.value][date.fromisoformat(row.day)] += row.cost_usd
    left_hours = Decimal((month_end(now) - now).total_seconds()) / 3600
    burn = hour.usd  # USD over the last hour
    forecast = periods["month"].usd + burn * left_hours
    ranked = {
        d: sorted(v.items(), key=lambda kv: (-kv[1].usd, -kv[1].tokens, kv[0]))[:10]
        for d, v in breakdown.items()
    }
    budgets = await budget_rows(ledger, admin, now)
    closest = sorted((r for r in budgets if r.utilisation is not None), key=lambda r: -(r.utilisation or 0))[
        :5
    ]
    alerts = await _alerts(ledger, admin, budgets)
    anomalies = await latest_anomalies(ledger, admin, now)
    denials, available = await visible_denials(ledger, admin, limit=10)
    top = sorted(stacked, key=lambda v: -sum(stacked[v].values()))[:8]
    series = {
        "labels": [d.isoformat() for d in days],
        "datasets": [{"label": v, "data": [float(stacked[v].get(d, 0)) for d in days]} for v in top],
    }
    return Overview(
        now=now,
        periods=periods,
        breakdown=ranked,
        burn_usd_per_hour=burn,
        forecast_usd=forecast,
        closest=closest,
        alerts=alerts,
        anomalies=anomalies,
        denials=denials,
        denials_available=available,
        series=series,
        top_spenders=ranked["user"][:5],
        latest=list(reversed(recent[-10:])),
    )


async def _rollup(ledger: Any, admin: AdminKeyConfig, since: str, **options: Any) -> list[RollupRow] | None:
    method = getattr(ledger, "spend_rollup", None)
    if method is None:
        return None
    rows: list[RollupRow] | None = await method(since, project=admin.project, **options)
    return rows


async def _alerts(ledger: Any, admin: AdminKeyConfig, rows: Sequence[BudgetRow]) -> list[Any]:
    """The latest threshold alerts of the budgets in ``rows``; a project admin's are of its
    project's own instance only (an alert names a budget by name, and a deleted budget's name
    may since have been given to one of that project's: its old alerts are of other subjects)."""
    names = {r.budget.name for r in rows}
    found = [
        t
        for t in await ledger.threshold_events(limit=None)
        if t.budget in names
        and (admin.project is None or (t.scope == "project" and t.subject_id == admin.project))
    ]
    return list(reversed(found[-10:]))


ANOMALY_DAYS = 7
"""How far back the overview looks for anomalies."""


async def latest_anomalies(ledger: Any, admin: AdminKeyConfig, now: datetime, limit: int = 10) -> list[Any]:
    """The latest detector findings the admin may see (newest first): the audit entries with an
    action ``anomaly.<kind>`` of the last :data:`ANOMALY_DAYS` days, as recorded by
    :class:`~tokenward.observe.actions.Anomalies` (``after`` holds the finding: kind, scope,
    subject_id, session, message, action). A project admin sees only their project's."""
    method = getattr(ledger, "audit_log", None)
    if method is None:
        return []
    entries = await method(since=now - timedelta(days=ANOMALY_DAYS), project=admin.project)
    found = [e for e in entries if e.action.startswith("anomaly.") and isinstance(e.after, dict)]
    return list(reversed(found[-limit:]))


async def visible_denials(
    ledger: Any, admin: AdminKeyConfig, *, session: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[Any], bool]:
    """The latest denials the admin may see (newest first), and whether the ledger records
    denials at all (``Ledger.denials``); shadow budgets' would-be denials are in
    :func:`overview`'s alerts instead."""
    method = getattr(ledger, "denials", None)
    if method is None:
        return [], False
    subject = scope_subject(admin, session=session)
    found = await method(subject=subject, limit=limit, offset=offset)
    return list(found), True


@dataclass
class BudgetRow:
    """One budget instance: its budget, the subject it is for, used, held, reset and projection."""

    budget: Budget
    subject_id: str
    spent: Decimal
    held: Decimal
    reset_at: datetime | None
    window_start: datetime | None
    crossing: datetime | None

    @property
    def utilisation(self) -> Decimal | None:
        """(spent + held) / limit, or None for a zero limit."""
        if self.budget.limit <= 0:
            return None
        return (self.spent + self.held) / self.budget.limit

    @property
    def label(self) -> str:
        """The budget's name, and its subject for a template's instance."""
        return (
            self.budget.name
            if self.budget.subject_id is not None
            else f"{self.budget.name} {self.subject_id}"
        )

    @property
    def percent(self) -> int:
        """Utilisation as a whole percentage capped at 100 (for the bar)."""
        u = self.utilisation
        return 100 if u is None else max(0, min(100, int(u * 100)))


async def budget_rows(ledger: Any, admin: AdminKeyConfig, now: datetime) -> list[BudgetRow]:
    """Every budget the admin sees, one row per instance (a template: per subject that used it)
    in its current window, with the projected instant spend crosses the limit at the window's
    rate so far (None when it will not within the window)."""
    rows = []
    for budget in sorted(await ledger.budgets(), key=lambda b: b.name):
        if not owns(admin, budget):
            continue
        balances = await ledger.budget_balances(budget.name, now)
        if not balances and budget.subject_id is not None:
            rows.append(
                BudgetRow(
                    budget,
                    budget.subject_id,
                    Decimal(0),
                    Decimal(0),
                    budget.window.reset_at(now),
                    budget.window.start(now),
                    None,
                )
            )
        for b in balances:
            start = budget.window.start(now)
            rows.append(
                BudgetRow(
                    budget,
                    b.subject_id,
                    b.spent,
                    b.held,
                    b.reset_at,
                    start,
                    _crossing(budget, b.spent, start, b.reset_at, now),
                )
            )
    return rows


def _crossing(
    budget: Budget, spent: Decimal, start: datetime | None, reset: datetime | None, now: datetime
) -> datetime | None:
    if start is None or spent <= 0 or spent >= budget.limit:
        return now if spent >= budget.limit > 0 else None
    elapsed = Decimal((now - start).total_seconds())
    if elapsed <= 0:
        return None
    seconds = (budget.limit - spent) * elapsed / spent
    when = now + timedelta(seconds=float(seconds))
    return when if reset is None or when < reset else None


def filter_events(
    events: Iterable[UsageEvent], *, model: str | None = None, status: str | None = None
) -> list[UsageEvent]:
    """Events of ``model`` and ``status`` (each when given)."""
    return [e for e in events if (not model or e.model == model) and (not status or e.status == status)]


def events_csv(events: Iterable[UsageEvent]) -> str:
    """Events as CSV: time, subject scopes, model, tokens, cost, status, request id."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "at",
            "project",
            "user",
            "key",
            "agent",
            "session",
            "model",
            "input_tokens",
            "cache_read_tokens",
            "output_tokens",
            "cost_usd",
            "status",
            "request_id",
        ]
    )
    for e in events:
        row = [
            e.at.isoformat().replace("+00:00", "Z"),
            *(e.subject.value(s) or "" for s in ("project", "user", "key", "agent", "session")),
            e.model or "",
            _n(e.usage.input_tokens),
            _n(e.usage.cache_read_tokens),
            _n(e.usage.output_tokens),
            "" if e.cost_usd is None else str(e.cost_usd),
            e.status,
            e.request_id,
        ]
        writer.writerow([_safe_cell(str(v)) for v in row])
    return out.getvalue()


def _n(value: int | None) -> str:
    return "" if value is None else str(value)


def _safe_cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(value) else value


def _number(value: str) -> bool:
    try:
        Decimal(value)
    except ArithmeticError:
        return False
    return True


@dataclass
class SessionRow:
    """One session: its stored id, calls, tokens, cost, first and last call, status."""

    session: str
    calls: int
    tokens: int
    usd: Decimal
    first: datetime
    last: datetime
    last_status: str
    user: str | None
    status: str = ""

    @property
    def duration(self) -> timedelta:
        return self.last - self.first


def session_status(
    row: SessionRow,
    now: datetime,
    refused_at: datetime | None,
    stopped: bool,
    ended_at: datetime | None = None,
) -> str:
    """The session's status (see the module docstring); ``ended_at``: when the SDK last closed
    it, if it did."""
    if stopped:
        return "stopped"
    if refused_at is not None and refused_at >= row.last:
        return "refused"
    if row.last_status == "cut_off":
        return "cut off"
    if ended_at is not None and ended_at >= row.last:
        return "ended"
    quiet = now - row.last
    if quiet < timedelta(minutes=IDLE_MINUTES):
        return "active"
    if quiet < timedelta(minutes=ENDED_MINUTES):
        return "idle"
    return "ended"


async def session_rows(
    ledger: Any, admin: AdminKeyConfig, now: datetime, since: datetime
) -> list[SessionRow]:
    """Every session with a call since ``since`` the admin may see, latest call first."""
    summaries = await ledger.session_summaries(since, project=admin.project)
    rows = {
        s.session: SessionRow(
            s.session, s.calls, s.tokens, s.cost_usd, s.first, s.last, s.last_status, s.user
        )
        for s in summaries
    }
    denials, _ = await visible_denials(ledger, admin, limit=1000)
    refused: dict[str, datetime] = {}
    for d in denials:
        sid = getattr(getattr(d, "subject", None), "session", None)
        if sid and (sid not in refused or d.at > refused[sid]):
            refused[sid] = d.at
    stops = {m.subject_id for m in await ledger.stops() if m.scope == "session"}
    ended = await _ended(ledger, admin, since)
    for row in rows.values():
        row.status = session_status(
            row, now, refused.get(row.session), row.session in stops, ended.get(row.session)
        )
    return sorted(rows.values(), key=lambda r: r.last, reverse=True)


async def _ended(ledger: Any, admin: AdminKeyConfig, since: datetime) -> dict[str, datetime]:
    """When the SDK last closed each session since ``since`` (audit action ``session.end``,
    written by :class:`tokenward.Guard` when a session's last worker leaves)."""
    method = getattr(ledger, "audit_log", None)
    if method is None:
        return {}
    ended: dict[str, datetime] = {}
    for entry in await method(since=since, project=admin.project):
        if entry.action == "session.end":
            ended[entry.target] = max(entry.at, ended.get(entry.target, entry.at))
    return ended
