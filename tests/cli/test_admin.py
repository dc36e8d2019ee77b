"""``tokenward keys ...`` and ``tokenward budgets ...`` against a running gateway."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from tokenward.cli.main import app
from tokenward.core.budgets import models_suffix

runner = CliRunner()
ADMIN = "tw-admin-secret"


@pytest.fixture
def gateway(start_gateway: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """A gateway whose admin key is given in plain (``key:``), found through the environment."""
    started = start_gateway(admin_keys=[{"key": ADMIN, "name": "ops"}])
    monkeypatch.setenv("TOKENWARD_GATEWAY", started.url)
    monkeypatch.setenv("TOKENWARD_ADMIN_KEY", ADMIN)
    return started


def test_keys_list_shows_whole_ids(gateway: Any) -> None:
    made = runner.invoke(app, ["keys", "create", "a-bot-with-a-long-name", "--user", "robot", "--json"])
    assert made.exit_code == 0, made.output
    key_id = json.loads(made.stdout)["id"]
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0, listed.output
    assert key_id in listed.output and "a-bot-with-a-long-name" in listed.output
    assert "…" not in listed.output
    assert "keys defined in the config file are not listed" in listed.output
    # The id as listed is what revoke takes.
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0


def test_budgets_list_shows_whole_names(gateway: Any) -> None:
    name = "a-budget-name-that-is-long-enough-to-be-cut-at-eighty-columns"
    made = runner.invoke(app, ["budgets", "set", "user=alice:total_tokens=30/day", "--name", name])
    assert made.exit_code == 0, made.output
    listed = runner.invoke(app, ["budgets", "list"])
    assert name in listed.output and "…" not in listed.output


def test_a_wrong_admin_key_is_named(gateway: Any) -> None:
    result = runner.invoke(app, ["keys", "list", "--admin-key", "not-the-key"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "the admin key was refused" in text and "TOKENWARD_ADMIN_KEY / --admin-key" in text
    assert "is required" not in text


def test_no_admin_key_at_all(gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENWARD_ADMIN_KEY")
    result = runner.invoke(app, ["keys", "list"])
    assert result.exit_code == 2 and "no admin key" in result.output


def test_a_paused_session_is_resumed_with_budgets_delete(gateway: Any) -> None:
    from tokenward.observe.actions import control_budget_name, is_paused, pause_session

    store = gateway.observer()
    try:
        pause_session(store, "run/s-1")
        name = control_budget_name("run/s-1")
        listed = runner.invoke(app, ["budgets", "list"])
        assert name in listed.output, listed.output
        deleted = runner.invoke(app, ["budgets", "delete", name])
        assert deleted.exit_code == 0, deleted.output
        assert is_paused(store, "run/s-1") is None
    finally:
        store.close()


def test_budgets_and_keys_work_offline_on_a_ledger(tmp_path: Any) -> None:
    """Issue 15 item 10: no gateway needed; the changes are audited as ``cli:<user>``."""
    import getpass

    from tokenward.ledger import open_ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    made = runner.invoke(
        app, ["budgets", "set", "user=alice:total_tokens=30/day", "--name", "cap", "--ledger", url]
    )
    assert made.exit_code == 0, made.output
    assert "budget cap set: user=alice total_tokens limit 30" in made.output
    listed = runner.invoke(app, ["budgets", "list", "--ledger", url, "--json"])
    assert [b["name"] for b in json.loads(listed.stdout)["budgets"]] == ["cap"]
    key = runner.invoke(app, ["keys", "create", "bot", "--user", "robot", "--ledger", url, "--json"])
    assert key.exit_code == 0, key.output
    key_id = json.loads(key.stdout)["id"]
    assert json.loads(key.stdout)["key"].startswith("tw-")
    assert runner.invoke(app, ["keys", "revoke", key_id, "--ledger", url]).exit_code == 0
    assert runner.invoke(app, ["budgets", "delete", "cap", "--ledger", url]).exit_code == 0
    refused = runner.invoke(app, ["budgets", "set", "user:total_token=3", "--ledger", url])
    assert refused.exit_code == 2 and "did you mean 'total_tokens'" in refused.output
    store = open_ledger(url)
    try:
        entries = store.audit_log()
        assert {e.actor for e in entries} == {f"cli:{getpass.getuser()}"}
        assert [e.action for e in entries] == ["budget.put", "key.create", "key.revoke", "budget.delete"]
        assert store.budgets() == [] and store.get_key(key_id).revoked_at is not None
    finally:
        store.close()
    missing = runner.invoke(app, ["budgets", "list", "--ledger", f"sqlite:///{tmp_path / 'nope.db'}"])
    assert missing.exit_code == 2 and "no such ledger file" in missing.output


def test_changing_a_budget_the_config_file_owns_warns(start_gateway: Callable[..., Any]) -> None:
    gateway = start_gateway(
        budgets=[{"name": "from-file", "scope": "user", "meter": "total_tokens", "limit": 500}]
    )
    changed = runner.invoke(
        app,
        ["budgets", "set", "user:total_tokens=900", "--name", "from-file", "--ledger", gateway.ledger_url],
    )
    assert changed.exit_code == 0, changed.output
    text = " ".join(changed.output.split())
    assert "warning: budget 'from-file' was written by the gateway's config file" in text
    again = runner.invoke(
        app,
        ["budgets", "set", "user:total_tokens=800", "--name", "from-file", "--ledger", gateway.ledger_url],
    )
    assert "warning" not in again.output  # the CLI's own budget now (until the next reload)
    other = runner.invoke(
        app, ["budgets", "set", "user:total_tokens=5", "--name", "mine", "--ledger", gateway.ledger_url]
    )
    assert other.exit_code == 0 and "config file" not in other.output  # not the file's budget
    assert "warning: budget 'from-file' limits the same total_tokens" in other.output  # but alike


def test_model_budgets_and_tagged_keys_from_the_cli(tmp_path: Any) -> None:
    """Issue 15 items 3-5 offline: ``budgets set --models``, ``keys create --tag ... --allow-client-*``."""
    from tokenward.ledger import open_ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    made = runner.invoke(
        app,
        [
            "budgets",
            "set",
            "team=search:cost_usd=50/day",
            "--models",
            "gpt-5, Google/Gemini-*",
            "--ledger",
            url,
        ],
    )
    assert made.exit_code == 0, made.output
    spec = runner.invoke(app, ["budgets", "set", "user:total_tokens=9;models=claude-*", "--ledger", url])
    assert spec.exit_code == 0, spec.output
    key = runner.invoke(
        app,
        ["keys", "create", "exp", "--project", "lab", "--tag", "cost_center=cc-9", "--tag", "arm=a",
         "--allow-client-tags", "--allow-client-budgets", "--ledger", url, "--json"],
    )  # fmt: skip
    assert key.exit_code == 0, key.output
    bad = runner.invoke(app, ["keys", "create", "x", "--tag", "cost_center", "--ledger", url])
    assert bad.exit_code == 2 and "expected NAME=VALUE" in bad.output
    store = open_ledger(url)
    try:
        by_name = {b.name: b for b in store.budgets()}
        gpt5_gemini = models_suffix(["gpt-5", "gemini-*"])
        assert by_name[f"team=search:cost_usd=50/day{gpt5_gemini}"].models == ("gpt-5", "gemini-*")
        assert by_name["user:total_tokens=9" + models_suffix(["claude-*"])].models == ("claude-*",)
        (record,) = store.keys()
        assert dict(record.subject.tags) == {"cost_center": "lab/cc-9", "arm": "lab/a"}
        assert record.allow_client_tags and record.allow_client_budgets and not record.allow_user_override
    finally:
        store.close()


def test_a_model_budget_naming_an_unknown_model_is_warned_about(tmp_path) -> None:
    """``--models gpt-4o-mni`` (misspelt) made a budget that applies to no call, in silence."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    typo = runner.invoke(
        app, ["budgets", "set", "user:cost_usd=5", "--models", "gpt-4o-mni", "--ledger", url]
    )
    assert typo.exit_code == 0, typo.output
    assert (
        "warning: budget 'user:cost_usd=5:models=gpt-4o-mni' counts calls to model 'gpt-4o-mni'"
        in typo.output
    )
    fine = runner.invoke(
        app, ["budgets", "set", "user:cost_usd=5;models=gpt-4o-mini,claude-*", "--ledger", url]
    )
    assert fine.exit_code == 0 and "warning" not in fine.output


def test_setting_a_new_limit_under_a_new_name_warns_that_the_old_budget_still_applies(tmp_path) -> None:
    """The default name holds the limit: ``user=alice:cost_usd=10/day`` after ``...=5/day`` is a
    second budget, and the first (tighter) one still decides, which the user meant to raise."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = runner.invoke(app, ["budgets", "set", "user=alice:cost_usd=5/day", "--ledger", url])
    assert first.exit_code == 0 and "warning" not in first.output, first.output
    raised = runner.invoke(app, ["budgets", "set", "user=alice:cost_usd=10/day", "--ledger", url])
    assert raised.exit_code == 0, raised.output
    assert "warning: budget 'user=alice:cost_usd=5/day' limits the same cost_usd (limit 5)" in raised.output
    again = runner.invoke(  # set under its own name: the limit changes, nothing to warn about
        app,
        [
            "budgets",
            "set",
            "user=alice:cost_usd=10/day",
            "--name",
            "user=alice:cost_usd=5/day",
            "--ledger",
            url,
        ],
    )
    assert "'user=alice:cost_usd=5/day' limits" not in again.output
    other = runner.invoke(app, ["budgets", "set", "user=bob:cost_usd=10/day", "--ledger", url])
    assert "warning" not in other.output  # another user's budget is not alike


def test_two_model_budgets_of_one_spec_are_two_budgets(tmp_path) -> None:
    """ "gpt-5 at most $50 a day" and "claude at most $50 a day" for one team: the second used to
    take the first's name (the spec without options) and silently replace it."""
    from tokenward.ledger import open_ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    for args in (
        ["team=search:cost_usd=50/day;models=gpt-5"],
        ["team=search:cost_usd=50/day", "--models", "claude-*"],
    ):
        made = runner.invoke(app, ["budgets", "set", *args, "--ledger", url])
        assert made.exit_code == 0, made.output
    store = open_ledger(url)
    try:
        assert sorted(b.models for b in store.budgets()) == [("claude-*",), ("gpt-5",)]
        assert {b.name for b in store.budgets()} == {
            "team=search:cost_usd=50/day:models=gpt-5",
            # claude-* cannot be in a name: 16 hex digits of its SHA-256 stand for it
            "team=search:cost_usd=50/day:models=sha256-" + hashlib.sha256(b"claude-*").hexdigest()[:16],
        }
    finally:
        store.close()


def test_budgets_set_keeps_the_specs_mode(tmp_path) -> None:
    """``;mode=shadow`` in the spec used to be overwritten by ``--mode``'s default, hard: a budget
    meant to be watched started refusing calls."""
    from tokenward.ledger import open_ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert (
        runner.invoke(app, ["budgets", "set", "user=bob:cost_usd=5;mode=shadow", "--ledger", url]).exit_code
        == 0
    )
    assert (
        runner.invoke(
            app, ["budgets", "set", "user=eve:cost_usd=5", "--mode", "soft", "--ledger", url]
        ).exit_code
        == 0
    )
    store = open_ledger(url)
    try:
        assert {b.name: b.mode for b in store.budgets()} == {
            "user=bob:cost_usd=5": "shadow",
            "user=eve:cost_usd=5": "soft",
        }
    finally:
        store.close()


def test_a_limit_written_with_a_dollar_or_thousands_commas_gets_a_name_it_can_have(tmp_path) -> None:
    """``cost_usd=$5`` and ``total_tokens=1,000`` are limits tokenward reads, but their default
    names (the spec) held characters no name may have, so the budget could not be set at all,
    not even with ``--name``."""
    from tokenward.ledger import open_ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    for args in (
        ["user=alice:cost_usd=$5"],
        ["user=bob:total_tokens=1,000"],
        ["user=carol:cost_usd=$5", "--name", "carol-usd"],
    ):
        made = runner.invoke(app, ["budgets", "set", *args, "--ledger", url])
        assert made.exit_code == 0, made.output
    store = open_ledger(url)
    try:
        assert sorted((b.name, b.limit) for b in store.budgets()) == [
            ("carol-usd", 5),
            ("user=alice:cost_usd=5", 5),
            ("user=bob:total_tokens=1000", 1000),
        ]
    finally:
        store.close()


def test_ids_with_colons_are_printed_as_written_not_as_emoji(tmp_path) -> None:
    """Rich turned ``:b:`` in an echoed spec into an emoji, so the error showed another spec
    than the one typed."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    bad = runner.invoke(app, ["budgets", "set", "user=b:b:total_tokens=x", "--ledger", url])
    assert bad.exit_code != 0
    assert "'user=b:b:total_tokens=x'" in bad.output
