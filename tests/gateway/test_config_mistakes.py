"""Config-file mistakes that used to be accepted, and left a key or an upstream silently not the
one the file meant: each is now refused with a message naming the entry (docs/gateway.md: "an
invalid file is refused with a message naming the field")."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support.fixtures import KEY
from tokenward.errors import ConfigError
from tokenward.gateway import GatewayConfig

FAKE = {"name": "fake", "provider": "fake"}


def load(**data: Any) -> GatewayConfig:
    return GatewayConfig.from_mapping({"upstreams": [FAKE], **data})


def test_the_same_key_twice_is_refused() -> None:
    """A copied entry whose key was left unchanged: every call with it was charged to the first
    entry's user, and the second entry's user (and its budgets) never saw a call."""
    with pytest.raises(ConfigError, match=r"keys\[1\]: the same key as keys\[0\]"):
        load(
            keys=[{"key": "tw-1", "name": "a", "user": "alice"}, {"key": "tw-1", "name": "b", "user": "bob"}]
        )
    digest = "0" * 64
    with pytest.raises(ConfigError, match=r"keys\[1\]: the same key as keys\[0\]"):
        load(keys=[{"key_sha256": digest}, {"key_sha256": digest.upper()}])
    # one name for two keys stays allowed: rotating a key under the same name keeps its budgets
    two = load(keys=[{"key": "tw-old", "name": "agent"}, {"key": "tw-new", "name": "agent"}])
    assert [k.name for k in two.keys] == ["agent", "agent"]


def test_an_admin_key_that_is_also_a_virtual_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"admin_keys\[0\]: the same key as a virtual key"):
        load(keys=[{"key": "tw-1", "user": "alice"}], admin_keys=[{"key": "tw-1", "name": "ops"}])
    with pytest.raises(ConfigError, match=r"admin_keys\[1\]: the same key as admin_keys\[0\]"):
        load(keys=[{"key": "tw-1"}], admin_keys=[{"key": "adm", "name": "a"}, {"key": "adm", "name": "b"}])


@pytest.mark.parametrize("value", [["alice", "bob"], {"name": "alice"}, True, "  "])
def test_a_keys_subject_values_are_strings(value: Any) -> None:
    """``user: [alice, bob]`` charged the user ``"['alice', 'bob']"``, whom no budget names."""
    with pytest.raises(ConfigError, match=r"keys\[0\]\.user must be a non-empty string"):
        load(keys=[{"key": "tw-1", "user": value}])


def test_a_number_is_a_subject_value_too() -> None:
    """``team: 0`` was dropped (a falsy value): the key charged no team at all."""
    config = load(keys=[{"key": "tw-1", "team": 0, "user": 42}])
    assert dict(config.keys[0].subject) == {"team": "0", "user": "42"}


def test_two_upstreams_of_one_name_are_refused() -> None:
    """Upstream clients are kept by name: the second took the first's place, so calls routed to
    the first upstream were sent to the second's base URL."""
    with pytest.raises(ConfigError, match=r"upstreams\[1\]: the same name as upstreams\[0\]"):
        GatewayConfig.from_mapping(
            {
                "upstreams": [FAKE, {**FAKE, "base_url": "http://127.0.0.1:9"}],
                "keys": [{"key": "tw-1"}],
            }
        )


def test_degrade_below_takes_a_percent_and_refuses_what_is_no_share() -> None:
    """``degrade: {below: "20%"}`` stopped ``tokenward serve`` with a traceback
    (``decimal.InvalidOperation``); it is 20 %, as thresholds read ``"80%"``."""
    keys = [{"key": "tw-1"}]
    assert load(keys=keys, degrade={"below": "20%"}).degrade.below == Decimal("0.2")
    assert load(keys=keys, degrade={"below": 0.25}).degrade.below == Decimal("0.25")
    with pytest.raises(ConfigError, match=r"degrade\.below must be a share \(0\.2\) or a percent"):
        load(keys=keys, degrade={"below": "a fifth"})
    with pytest.raises(ConfigError, match=r"degrade\.below must be a share between 0 and 1"):
        load(keys=keys, degrade={"below": "150%"})
    with pytest.raises(ConfigError, match=r"degrade\.thinking_budget_tokens must be a whole number"):
        load(keys=keys, degrade={"thinking_budget_tokens": "1k"})


def test_a_key_digest_that_no_key_can_match_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"keys\[0\]\.key_sha256 must be 64 hex digits"):
        load(keys=[{"key_sha256": "abc"}])


def test_budgets_no_call_can_reach_are_warned_about_at_start(start_gateway, caplog) -> None:
    """A fixed ``key`` budget whose id is the key itself rather than its name, a ``project``
    budget naming a project no key carries, a ``tag:`` budget no key can carry, an ``overrides``
    naming no template, and a misspelt model in ``models`` were accepted in silence, and never
    limited a call."""
    budgets = [
        {"name": "by-secret", "scope": "key", "id": KEY, "meter": "total_tokens", "limit": 10},
        {"name": "by-name", "scope": "key", "id": "test-key", "meter": "total_tokens", "limit": 100000},
        {"name": "typo-project", "scope": "project", "id": "dem0", "meter": "total_tokens", "limit": 10},
        {"name": "cc", "scope": "tag:cost_centre", "meter": "cost_usd", "limit": 1},
        {"name": "each-user", "scope": "user", "meter": "total_tokens", "limit": 100000},
        {
            "name": "alice-more",
            "scope": "user",
            "id": "alice",
            "meter": "total_tokens",
            "limit": 200000,
            "overrides": "each-users",
        },
        {"name": "mini", "scope": "user", "meter": "cost_usd", "limit": 1, "models": ["gpt-4o-mni"]},
        {"name": "known", "scope": "user", "meter": "cost_usd", "limit": 1, "models": ["gpt-4o-mini", "o*"]},
    ]
    with caplog.at_level(logging.WARNING, logger="tokenward.gateway"):
        gateway = start_gateway(budgets=budgets)
    warned = [r.getMessage() for r in caplog.records if r.name == "tokenward.gateway"]
    assert [m.split(" (")[0] for m in warned] == [
        "budget 'by-secret'",
        "budget 'typo-project'",
        "budget 'cc'",
        "budget 'alice-more'",
        "budget 'mini' counts calls to model 'gpt-4o-mni', which the price table does not know and no "
        "upstream names: if it is misspelt, the budget applies to no call",
    ]
    assert "its id is a key itself: a key budget's id is the key's name ('test-key')" in warned[0]
    assert "no virtual key carries project 'dem0' (the keys carry: demo)" in warned[1]
    assert "no virtual key carries tag 'cost_centre'" in warned[2]
    assert "overrides 'each-users', which is no template of scope user" in warned[3]
    # as warned: the 10-token budgets never see the key's calls
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Say hello"}],
            "max_tokens": 20,
        },
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert answer.status_code == 200


def test_zero_padded_numbers_in_the_file_are_not_octal(tmp_path) -> None:
    """YAML 1.1 reads ``0100`` as octal: ``limit: 0100`` made a budget of 64 tokens and ``id: 0042``
    one for team ``"34"``, which no key carries. They read as written now."""
    path = tmp_path / "tokenward.yaml"
    path.write_text(
        "upstreams: [{name: fake, provider: fake}]\n"
        "keys: [{key: tw-1, team: 0042}]\n"
        "budgets:\n"
        "  - {name: padded, scope: team, id: 0042, meter: total_tokens, limit: 0100}\n"
        "  - {name: plain, scope: team, id: 42, meter: total_tokens, limit: 1_000}\n"
    )
    config = GatewayConfig.load(path)
    assert [(b.subject_id, b.limit) for b in config.budgets] == [
        ("0042", Decimal(100)),
        ("42", Decimal(1000)),
    ]
    assert dict(config.keys[0].subject) == {"team": "0042"}
    path.write_text(
        "upstreams: [{name: fake, provider: fake}]\nkeys: [{key: tw-1}]\ndefaults: {max_output_tokens: 01024}\n"
    )
    with pytest.raises(
        ConfigError, match=r"defaults\.max_output_tokens must be a positive whole number, got '01024'"
    ):
        GatewayConfig.load(path)


@pytest.mark.parametrize("value", ["sk-proj-abc123def456", "sk_live_abc123", "AIzaSyA1b2c3d4e5f6", 123])
def test_api_key_env_names_a_variable_never_holds_the_key(value: Any) -> None:
    """The provider key pasted into ``api_key_env`` was written to the log by the missing-key
    warning ("the environment variable sk-proj-... is not set"); a number stopped the gateway
    with a TypeError. Refused, without repeating the value."""
    upstream = {"name": "openai", "provider": "openai", "api_key_env": value}
    with pytest.raises(
        ConfigError, match=r"upstreams\[0\]\.api_key_env must name the environment variable"
    ) as e:
        GatewayConfig.from_mapping({"upstreams": [upstream], "keys": [{"key": "tw-1"}]})
    assert str(value) not in str(e.value)
    ok = {"name": "openai", "provider": "openai", "api_key_env": "OPENAI_API_KEY"}
    assert load_upstream(ok).api_key_env == "OPENAI_API_KEY"


def load_upstream(upstream: dict[str, Any]) -> Any:
    return GatewayConfig.from_mapping({"upstreams": [upstream], "keys": [{"key": "tw-1"}]}).upstreams[0]


def test_sigv4_secret_env_names_a_variable_never_holds_the_secret() -> None:
    """The secret pasted into ``sigv4_secret_env`` was repeated in the start-up error."""
    key = {"key": "tw-1", "name": "team-key", "sigv4_secret_env": "wJalrXUtnFEMI/K7MDENG+bPxRfiCY"}
    with pytest.raises(ConfigError, match=r"keys\[0\]\.sigv4_secret_env must name the environment") as e:
        load(keys=[key])
    assert "wJalrXUtnFEMI" not in str(e.value)


def test_relative_spool_and_events_paths_are_taken_from_the_config_folder(tmp_path, monkeypatch) -> None:
    """Every relative path in the file is taken from its folder; the ledger's ``spool=`` and a
    ``redis://`` ledger's ``events=sqlite:///`` were taken from the working directory, so a
    gateway started from elsewhere never replayed its spool (those charges were lost) and wrote
    its events to another file."""
    from tokenward.ledger.redis.state import parse_redis_url
    from tokenward.ledger.sqlite.ledger import parse_sqlite_url

    folder = tmp_path / "conf"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)  # not the config's folder
    upstream = "upstreams: [{name: f, provider: fake}]\nkeys: [{key: k, name: k}]\n"
    (folder / "a.yaml").write_text(upstream + "ledger: sqlite:///ledger.db?spool=held.spool&timeout=5\n")
    settings = parse_sqlite_url(GatewayConfig.load(folder / "a.yaml").ledger)
    assert (settings.path, settings.spool, settings.timeout) == (
        folder / "ledger.db",
        folder / "held.spool",
        5,
    )
    (folder / "b.yaml").write_text(
        upstream + "ledger: redis://127.0.0.1:6379/0?spool=r.spool&events=sqlite:///events.db?spool=e.spool\n"
    )
    redis = parse_redis_url(GatewayConfig.load(folder / "b.yaml").ledger)
    assert redis.spool == folder / "r.spool"
    events = parse_sqlite_url(redis.events_url)
    assert (events.path, events.spool) == (folder / "events.db", folder / "e.spool")
    (folder / "c.yaml").write_text(
        upstream + f"ledger: sqlite:///{tmp_path}/abs.db?spool={tmp_path}/abs.spool\n"
    )
    settings = parse_sqlite_url(GatewayConfig.load(folder / "c.yaml").ledger)
    assert (settings.path, settings.spool) == (tmp_path / "abs.db", tmp_path / "abs.spool")  # absolute: kept
