"""Per-model budgets in the core (issue 15 item 5): ``models`` on any budget, matched (fnmatch)
on the canonical model name the price resolution uses."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tokenward.core.budgets import (
    Budget,
    Subject,
    applicable,
    parse_budget_spec,
    parse_short_spec,
    short_spec,
)
from tokenward.errors import ConfigError

TEAM = Subject(team="search")


def test_models_match_the_canonical_name_with_patterns() -> None:
    budget = Budget.from_dict(
        {"name": "gemini-and-claude", "scope": "team", "meter": "cost_usd", "limit": 50, "window": "day",
         "models": ["Google/Gemini-3-Pro-Preview", "claude-*"]}
    )  # fmt: skip
    assert budget.models == ("gemini-3-pro-preview", "claude-*")  # written canonically
    for model in ("gemini-3-pro-preview", "google/gemini-3-pro-preview", "@google/GEMINI-3-pro-preview",
                  "claude-sonnet-4-5", "anthropic/claude-opus-4-1"):  # fmt: skip
        assert budget.applies_to(TEAM.with_model(model)) == "search", model
    for model in ("gemini-3-pro", "gpt-5", "my-claude-3"):
        assert budget.applies_to(TEAM.with_model(model)) is None, model
    assert budget.applies_to(TEAM) is None  # a charge that is no model call


def test_gpt5_at_most_50_dollars_a_day_for_a_team_is_one_budget() -> None:
    budget = parse_budget_spec("team=search:cost_usd=50/day;models=gpt-5")
    everything = parse_budget_spec("team=search:cost_usd=500/day")
    assert [b.name for b, _ in applicable([budget, everything], TEAM.with_model("gpt-5"))] == [
        budget.name,
        everything.name,
    ]
    assert [b.name for b, _ in applicable([budget, everything], TEAM.with_model("gpt-5-mini"))] == [
        everything.name
    ]


def test_models_in_every_form_and_back() -> None:
    from_yaml = Budget.from_dict({"scope": "session", "id": "s-1", "meter": "total_tokens", "limit": 100,
                                  "models": "gpt-5, claude-*"})  # fmt: skip
    short = parse_short_spec("total_tokens=100;models=gpt-5,claude-*", scope="session", subject_id="s-1")
    assert short.models == ("gpt-5", "claude-*") and short.name.startswith("session=s-1:total_tokens:models=")
    assert from_yaml == replace(short, name=from_yaml.name)  # a short form's name tells its models
    assert short_spec(short) == "total_tokens=100;models=gpt-5,claude-*"
    assert parse_short_spec(short_spec(short), scope="session", subject_id="s-1") == short
    assert Budget.from_dict(short.to_dict()) == short
    assert "models" not in parse_budget_spec("user:total_tokens=5").to_dict()  # unchanged when unset


@pytest.mark.parametrize("models", [[""], ["gpt 5"], [3], "", {"gpt-5": 1}])
def test_a_bad_models_list_is_refused(models) -> None:
    with pytest.raises(ConfigError, match="model"):
        Budget.from_dict({"name": "b", "scope": "user", "meter": "requests", "limit": 1, "models": models})


def test_the_subject_keeps_its_model_through_storage() -> None:
    subject = Subject(user="alice", session="s-1").with_model("openai/GPT-5")
    assert subject.model == "gpt-5"
    assert Subject.from_dict(subject.to_dict()) == subject


def test_a_dated_snapshot_counts_as_its_model() -> None:
    """Price resolution prices ``gpt-4o-2024-08-06`` as ``gpt-4o`` (a trailing date is dropped,
    ``pricebook.model_candidates``), and OpenAI serves ``gpt-4o`` as a dated snapshot: a ``gpt-4o``
    budget must count a call sent to the snapshot, or naming the date escapes it. A pattern that
    names a snapshot counts that snapshot only."""
    budget = parse_budget_spec("team=search:cost_usd=50/day;models=gpt-4o,claude-sonnet-4-5")
    for model in ("gpt-4o-2024-08-06", "openai/GPT-4o-2024-08-06", "claude-sonnet-4-5-20250929",
                  "claude-sonnet-4-5@20250929"):  # fmt: skip
        assert budget.applies_to(TEAM.with_model(model)) == "search", model
    assert budget.applies_to(TEAM.with_model("gpt-4o-mini-2024-07-18")) is None  # another model
    snapshot = parse_budget_spec("team=search:cost_usd=50/day;models=gpt-4o-2024-05-13")
    assert snapshot.applies_to(TEAM.with_model("gpt-4o-2024-05-13")) == "search"
    assert snapshot.applies_to(TEAM.with_model("gpt-4o")) is None
    assert snapshot.applies_to(TEAM.with_model("gpt-4o-2024-08-06")) is None
