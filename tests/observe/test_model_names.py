"""Reports that group by model use one name per model (the price resolution rule,
:func:`~tokenward.core.pricebook.canonical_model`), while each usage event keeps the id the
provider or client wrote."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from tests.observe.helpers import T0, event
from tokenward.observe.reports import chargeback, efficiency, session_costs
from tokenward.observe.rows import rows_from_events

EVENTS = [
    event("r1", T0, model="google/gemini-3-pro-preview", cost="0.02"),
    event("r2", T0 + timedelta(minutes=1), model="gemini-3-pro-preview", cost="0.03"),
    event("r3", T0 + timedelta(minutes=2), model="@google/Gemini-3-Pro-Preview", cost="0.01"),
    event("r4", T0 + timedelta(minutes=3), model="gpt-4o-mini", cost="0.005"),
]


def test_chargeback_and_efficiency_by_model_count_one_model_once() -> None:
    report = chargeback(rows_from_events(EVENTS), ["model"])
    by_model = {line.key: (line.calls, line.cost_usd) for line in report.lines}
    # 0.02 + 0.03 + 0.01 under one name
    assert by_model == {
        ("gemini-3-pro-preview",): (3, Decimal("0.06")),
        ("gpt-4o-mini",): (1, Decimal("0.005")),
    }
    groups, _ = efficiency(rows_from_events(EVENTS), ["model"])
    assert sorted(g.key for g in groups) == [("gemini-3-pro-preview",), ("gpt-4o-mini",)]


def test_sessions_list_each_model_once_and_events_keep_the_provider_name() -> None:
    (session,) = session_costs(rows_from_events(EVENTS)).values()
    assert session.models == {"gemini-3-pro-preview", "gpt-4o-mini"}
    assert [row.model for row in rows_from_events(EVENTS)][:3] == [
        "google/gemini-3-pro-preview",
        "gemini-3-pro-preview",
        "@google/Gemini-3-Pro-Preview",
    ]
