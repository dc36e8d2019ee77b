"""Threshold episodes of rolling windows (issue 15 item 7): pure, with hand-made balances."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from tokenward.core.budgets import Budget
from tokenward.core.decide import Balance
from tokenward.core.episodes import Episode, rolling_episode
from tokenward.core.windows import Window

BUDGET = Budget("rm", "user", "total_tokens", D(1000), window=Window.parse("rolling:1m"))
T = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def balance(key: str, *drops: tuple[int, int]) -> Balance:
    """Spend per bucket: (seconds after T at which it stops counting, tokens)."""
    rows = tuple((T + timedelta(seconds=s), D(n), D(0)) for s, n in drops)
    return Balance(BUDGET, "alice", key, sum((r[1] for r in rows), D(0)), D(0), None, rows)


def test_an_episode_begins_at_a_rise_and_lasts_while_the_spend_cannot_have_fallen() -> None:
    first = rolling_episode(balance("b0", (61, 600)), D("0.5"), T, None)
    # 600 >= 500 until 12:01:01, when it all stops counting
    assert first == Episode("b0", T + timedelta(seconds=61))
    later = rolling_episode(balance("b5", (61, 600), (66, 10)), D("0.5"), T + timedelta(seconds=5), first)
    assert later == Episode("b0", T + timedelta(seconds=61))  # the same rise: no new alert
    assert rolling_episode(balance("b61", (66, 10)), D("0.5"), T + timedelta(seconds=61), later) is None
    # seen above again after the first rise's spend went: a new episode, even with no fall seen
    again = rolling_episode(balance("b70", (130, 600)), D("0.5"), T + timedelta(seconds=70), later)
    assert again == Episode("b70", T + timedelta(seconds=130))


def test_the_fall_is_when_enough_older_spend_stops_counting() -> None:
    seen = rolling_episode(balance("b", (61, 300), (71, 300), (81, 300)), D("0.5"), T, None)
    assert seen is not None and seen.below_at == T + timedelta(seconds=71)  # 900 -> 600 -> 300 < 500
    assert rolling_episode(balance("b", (61, 499)), D("0.5"), T, None) is None
