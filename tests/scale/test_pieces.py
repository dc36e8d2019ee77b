"""The parts under the service-backed ledgers: URL forms, exact sub-units, the spool."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.ledger.backends import BACKENDS, drop_redis_prefix, fresh_redis_url, require_available
from tests.ledger.helpers import ALICE, cost_budget
from tokenward.errors import BudgetExceeded, ConfigError
from tokenward.ledger import open_ledger
from tokenward.ledger.failover import masked, redact
from tokenward.ledger.postgres import parse_pg_url
from tokenward.ledger.redis import parse_redis_url
from tokenward.ledger.redis.units import field, from_units, to_units, unfield
from tokenward.ledger.spool import Spool


# -- URLs ----------------------------------------------------------------------------------------
def test_redis_url_names_its_events_store_last_verbatim() -> None:
    s = parse_redis_url(
        "redis://:pw@10.0.0.5:6380/2?prefix=acme&timeout=0.5&spool=/var/tw/spool.db"
        "&events=postgresql://tw@db/ledger?schema=acme&sslmode=require"
    )
    assert s.redis_url == "redis://:pw@10.0.0.5:6380/2"
    assert s.events_url == "postgresql://tw@db/ledger?schema=acme&sslmode=require"
    assert (s.prefix, s.timeout, str(s.spool), s.cluster) == ("acme", 0.5, "/var/tw/spool.db", False)
    encoded = parse_redis_url("redis://h/0?cluster=true&events=sqlite%3A%2F%2F%2F%2Fvar%2Ftw%2Fevents.db")
    assert (encoded.events_url, encoded.prefix, encoded.cluster) == (
        "sqlite:////var/tw/events.db",
        "tokenward",
        True,
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/0", "needs events="),
        ("redis://h/0?events=memory://", "durable ledger URL"),
        ("redis://h/0?colour=red&events=sqlite:///e.db", "unknown parameters"),
        ("redis://h/0?prefix={x}&events=sqlite:///e.db", "braces"),
        ("redis://h/0?retention=soon&events=sqlite:///e.db", "duration"),
        ("redis://h/0?prefix=&events=sqlite:///e.db", "non-empty"),
        ("redis://h/0?timeout=-1&events=sqlite:///e.db", "positive number of seconds"),
        ("redis://h/0?timeout=0&events=sqlite:///e.db", "positive number of seconds"),
        ("redis://h/0?cluster=yes&events=sqlite:///e.db", "cluster must be true or false"),
        ("postgresql://h/db?schema=drop;table", "plain lower-case identifier"),
        ("postgresql://h/db?schema=Acme", "plain lower-case identifier"),
        ("postgresql://h/db?timeout=-1", "positive"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_ledger(url)


def test_postgres_url_keeps_libpq_parameters_and_takes_out_its_own() -> None:
    s = parse_pg_url("postgres://tw:secret@db:5433/ledger?sslmode=require&schema=acme&timeout=3&spool=/s.db")
    assert s.conninfo == "postgresql://tw:secret@db:5433/ledger?sslmode=require&connect_timeout=5"
    assert (s.schema, s.timeout, str(s.spool)) == ("acme", 3.0, "/s.db")
    assert parse_pg_url("postgresql://db/ledger").schema == "tokenward"


def test_logged_urls_have_no_password() -> None:
    assert redact("postgresql://tw:secret@db:5433/ledger?sslmode=require") == "postgresql://tw@db:5433/ledger"
    assert redact("redis://:secret@cache:6379/0") == "redis://cache:6379/0"


def test_the_serve_banner_masks_every_password_and_keeps_the_rest() -> None:
    url = "redis://:s3cret@cache:6379/0?prefix=tw&events=postgresql://tw:p%40ss@db/ledger?schema=x"
    assert masked(url) == "redis://:***@cache:6379/0?prefix=tw&events=postgresql://tw:***@db/ledger?schema=x"
    assert masked("sqlite:///tokenward.db") == "sqlite:///tokenward.db"
    assert masked("postgresql://tw@db/ledger") == "postgresql://tw@db/ledger"


# -- sub-units -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("amount", "units"),
    [
        ("0.0884", 88_400_000_000_000_000),
        ("4.752720", 4_752_720_000_000_000_000),
        ("0", 0),
        ("-3.5", -3_500_000_000_000_000_000),
        ("0.000000000000000001", 1),
        ("1E+3", 1_000 * 10**18),
        ("123456789012345678901234.5", 1234567890123456789012345 * 10**17),
    ],
)
def test_amounts_convert_to_sub_units_and_back_exactly(amount: str, units: int) -> None:
    assert to_units(Decimal(amount)) == units
    assert from_units(units) == Decimal(amount)


def test_amounts_finer_than_a_sub_unit_round_up_for_charges_and_down_for_limits() -> None:
    assert to_units(Decimal("1E-19")) == 1 and to_units(Decimal("1E-19"), up=False) == 0
    assert to_units(Decimal("-1E-19")) == 0 and to_units(Decimal("-1E-19"), up=False) == -1


def test_row_fields_are_unambiguous() -> None:
    assert field("a b", 'c"d', "") == '["a b","c\\"d",""]'
    assert unfield(field("x", "y ,z", "2025-06-02T00:00:00Z")) == ("x", "y ,z", "2025-06-02T00:00:00Z")


@pytest.mark.redis
def test_redis_is_exact_beyond_float_and_int64(tmp_path: Path) -> None:
    """A limit of 10^30 tokens plus 10^-18: holds up to it exactly fit, one sub-unit more does not."""
    require_available(BACKENDS["redis"])
    url = fresh_redis_url(tmp_path)
    ledger = open_ledger(url)
    try:
        limit = Decimal("1000000000000000000000000000000.000000000000000001")  # 49 digits
        ledger.put_budget(cost_budget("huge", "user", str(limit), "alice"))
        ledger.reserve(ALICE, {"cost_usd": Decimal("999999999999999999999999999999.5")})
        ledger.reserve(ALICE, {"cost_usd": Decimal("0.500000000000000001")})
        with pytest.raises(BudgetExceeded) as denied:
            ledger.reserve(ALICE, {"cost_usd": Decimal("1E-18")})
        assert denied.value.held == limit and denied.value.limit == limit
    finally:
        ledger.close()
        drop_redis_prefix(url)


# -- the spool -------------------------------------------------------------------------------------
def test_spool_entries_come_back_in_order_and_are_claimed_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", lease=0.3)
    ids = [spool.append("settle", {"n": n}) for n in range(5)]
    other = Spool(tmp_path / "spool.db", lease=0.3)  # another process on the same file
    first = spool.claim(3)
    assert [e.payload["n"] for e in first] == [0, 1, 2]
    assert [e.payload["n"] for e in other.claim(10)] == [3, 4]  # the others are leased
    assert other.claim(10) == []
    time.sleep(0.35)  # a replayer that died: its lease ends, the entries come back
    assert [e.id for e in other.claim(10)] == ids
    other.done(ids[:4])
    assert spool.pending() == 1


def test_a_failed_entry_waits_longer_each_time_and_is_never_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", lease=0.0)
    entry = spool.append("charge", {"x": 1})
    spool.set_kind(entry, "settle")
    for attempt in range(3):
        (claimed,) = spool.claim()
        assert (claimed.kind, claimed.attempts) == ("settle", attempt)
        spool.retry([entry], "store down")
        assert spool.claim() == []  # backing off
        time.sleep(0.1 * 2**attempt + 0.05)
    assert spool.errors() == [(entry, "settle", 3, "store down")]
    assert spool.pending() == 1


def test_entries_claimed_by_a_process_that_died_are_claimed_again_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    spool = Spool(tmp_path / "spool.db")  # a 30 s lease
    spool.append("settle", {"n": 1})
    code = (
        "import sys; from tokenward.ledger.spool import Spool; Spool(sys.argv[1]).claim(); print('claimed')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "spool.db")], capture_output=True, text=True
    )
    assert out.stdout.strip() == "claimed", out.stderr
    assert [e.payload["n"] for e in spool.claim()] == [1]  # its claimer is gone: no 30 s wait


@pytest.mark.redis
def test_cluster_true_against_a_plain_redis_is_a_config_error(tmp_path: Path) -> None:
    from tests.ledger.backends import BACKENDS, REDIS_URL, require_available

    require_available(BACKENDS["redis"])
    url = f"{REDIS_URL}?prefix=tw_cl&cluster=true&spool={tmp_path / 's.db'}&events=sqlite:///{tmp_path / 'e.db'}"
    with pytest.raises(ConfigError, match="not a cluster"):
        open_ledger(url)
