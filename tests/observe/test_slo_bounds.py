"""SLO bounds read as budget limits are: a comma only as a thousands separator."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokenward.errors import ConfigError
from tokenward.observe.reports.slo import SLO, parse_slo


def test_an_slo_bound_reads_a_comma_only_as_a_thousands_separator() -> None:
    """``max_cost_usd: 0,50`` was read as 50 (a bound 100 times the one meant), as budget limits
    were; now it is refused, and ``1,300,000`` is still 1300000."""
    assert parse_slo("95% of calls under 1,300,000 tokens").max_total_tokens == 1_300_000
    assert SLO.from_config({"target": "99%", "max_cost_usd": "1,000.5"}).max_cost_usd == Decimal("1000.5")
    with pytest.raises(ConfigError, match="thousands separator"):
        SLO.from_config({"target": "99%", "max_cost_usd": "0,50"})
