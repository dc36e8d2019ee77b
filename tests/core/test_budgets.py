"""Subjects, budgets, budget specs and what a call charges to each meter."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from tokenward.core.budgets import (
    METERS,
    SCOPES,
    Budget,
    Subject,
    applicable,
    meter_amounts,
    parse_budget_spec,
    parse_short_spec,
)
from tokenward.core.pricing import Cost
from tokenward.core.usage import Usage
from tokenward.core.windows import NO_WINDOW, Window
from tokenward.errors import ConfigError

D = Decimal


# --- parse_budget_spec --------------------------------------------------------------------------


def test_spec_each_session_total_tokens() -> None:
    budget = parse_budget_spec("session:total_tokens=50000")
    assert (budget.scope, budget.meter, budget.limit, budget.subject_id) == (
        "session",
        "total_tokens",
        D(50000),
        None,
    )
    assert budget.window == NO_WINDOW
    assert budget.mode == "hard"
    assert budget.name == "session:total_tokens=50000"


def test_spec_cost_limit_is_exact_decimal() -> None:
    budget = parse_budget_spec("session:cost_usd=0.50")
    assert budget.limit == D("0.5")
    assert isinstance(budget.limit, Decimal)


def test_spec_with_window() -> None:
    budget = parse_budget_spec("task:cost_usd=1/day")
    assert (budget.scope, budget.meter, budget.limit) == ("task", "cost_usd", D(1))
    assert budget.window == Window(unit="day", time_zone="UTC")


def test_spec_fixed_subject_with_zoned_window() -> None:
    budget = parse_budget_spec("user=alice:cost_usd=5/month@Europe/Paris")
    assert (budget.scope, budget.subject_id, budget.meter, budget.limit) == (
        "user",
        "alice",
        "cost_usd",
        D(5),
    )
    assert budget.window == Window(unit="month", time_zone="Europe/Paris")
    assert str(budget.window) == "month@Europe/Paris"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "expected SCOPE"),
        ("session", "expected SCOPE"),
        ("session:cost_usd", "expected SCOPE"),
        ("session=cost_usd:5", "expected SCOPE"),
        ("galaxy:cost_usd=1", "unknown scope 'galaxy'"),
        ("session:tokens=50000", "unknown meter 'tokens'"),
        ("session:Cost_USD=1", "expected SCOPE"),
        ("session:cost_usd=-1", "non-negative"),
        ("session:cost_usd=abc", "not a number"),
        ("session:cost_usd=inf", "non-negative"),
        ("session:cost_usd=1/fortnight", "unknown window"),
        ("session:cost_usd=1/day@Mars/Olympus_Mons", "unknown time zone"),
    ],
)
def test_bad_specs_are_clear_config_errors(spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_budget_spec(spec)


def test_unknown_meter_error_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_budget_spec("session:tokens=50000")
    for meter in METERS:
        assert meter in str(info.value)


# --- Budget -------------------------------------------------------------------------------------


def test_budget_from_dict_and_back() -> None:
    budget = Budget.from_dict(
        {"scope": "user", "id": "alice", "meter": "cost_usd", "limit": "5.00", "window": "month@Europe/Paris"}
    )
    assert budget.name == "user=alice:cost_usd"
    assert budget.subject_id == "alice"
    again = Budget.from_dict(budget.to_dict())
    assert again == budget


def test_custom_meters_are_allowed_in_config_when_declared() -> None:
    budget = Budget.from_dict(
        {"name": "tool-calls", "scope": "agent", "meter": "tool_calls", "limit": 100, "custom": True}
    )
    assert (budget.meter, budget.custom) == ("tool_calls", True)
    assert Budget.from_dict(budget.to_dict()) == budget


# Issue 15 item 1: a mistyped meter used to become a custom meter that nothing charges, so
# `meter: total_token` let 125 tokens through a "30" budget. Every way of building a budget now
# refuses an undeclared custom meter, with the fix in the message.
@pytest.mark.parametrize(
    "build",
    [
        lambda: Budget("b", "user", "total_token", D(30)),
        lambda: Budget.from_dict({"scope": "user", "meter": "total_token", "limit": 30}),
        lambda: parse_budget_spec("user:total_token=30"),
        lambda: parse_short_spec("total_token=30", scope="session", subject_id="s-1"),
    ],
    ids=["constructor", "yaml-or-admin-api", "spec", "session-short-form"],
)
def test_a_mistyped_meter_is_refused_with_the_fix(build) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown meter 'total_token'; did you mean 'total_tokens'\?"
    ) as err:
        build()
    assert "custom" in str(err.value)  # how to declare a real custom meter


def test_custom_is_refused_on_a_built_in_meter_and_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="built-in meter; drop custom"):
        Budget.from_dict({"scope": "user", "meter": "total_tokens", "limit": 30, "custom": True})
    with pytest.raises(ConfigError, match="custom must be true or false"):
        Budget.from_dict({"scope": "user", "meter": "gpu_seconds", "limit": 30, "custom": "yes"})


def test_the_session_short_form_takes_the_spec_options() -> None:
    """Issue 15 item 14: ``;action=deny`` used to be read as part of the limit ("is not a number")."""
    budget = parse_short_spec("total_tokens=30;action=deny", scope="session", subject_id="s-1")
    assert (budget.name, budget.scope, budget.subject_id) == ("session=s-1:total_tokens", "session", "s-1")
    assert (budget.limit, budget.action) == (D(30), "deny")
    daily = parse_short_spec("cost_usd=0.50/day;mode=soft;name=mine", scope="task", subject_id="t")
    assert (daily.name, daily.limit, str(daily.window), daily.mode) == ("mine", D("0.50"), "day", "soft")
    gpu = parse_short_spec("gpu_seconds=60;custom", scope="task", subject_id="t")
    assert (gpu.meter, gpu.custom) == ("gpu_seconds", True)
    with pytest.raises(ConfigError, match="unknown option"):
        parse_short_spec("total_tokens=30;colour=red", scope="task", subject_id="t")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"scope": "user", "meter": "cost_usd"}, "'limit' is required"),
        ({"scope": "user", "limit": 1}, "'meter' is required"),
        ({"scope": "user", "meter": "cost_usd", "limit": 1, "colour": "red"}, "unknown keys"),
        ({"scope": "user", "meter": "cost_usd", "limit": 1, "mode": "loud"}, "mode"),
        ({"scope": "user", "meter": "cost_usd", "limit": 1, "unpriced": "maybe"}, "unpriced"),
        ({"scope": "user", "meter": "Cost", "limit": 1}, "lower-case"),
        ({"name": "has space", "scope": "user", "meter": "cost_usd", "limit": 1}, "budget name"),
        ({"scope": "user", "meter": "cost_usd", "limit": True}, "expected a number"),
    ],
)
def test_bad_budgets_are_config_errors(data: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Budget.from_dict(data)


def test_limit_must_be_a_finite_decimal() -> None:
    with pytest.raises(ConfigError):
        Budget(name="b", scope="user", meter="cost_usd", limit=D("-0.01"))
    with pytest.raises(ConfigError):
        Budget(name="b", scope="user", meter="cost_usd", limit=D("NaN"))
    with pytest.raises(ConfigError):
        Budget(name="b", scope="user", meter="cost_usd", limit=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [False, True, ["alice"], {"user": "alice"}, 1.5])
def test_an_id_that_is_no_string_is_refused(value: object) -> None:
    """YAML reads ``id: no`` as false: the budget was made for the id ``"False"``, which no call
    carries (and ``id: [alice, bob]`` for ``"['alice', 'bob']"``)."""
    with pytest.raises(ConfigError, match="id must be a string"):
        Budget.from_dict({"scope": "org", "id": value, "meter": "cost_usd", "limit": 5})
    assert Budget.from_dict({"scope": "org", "id": 42, "meter": "cost_usd", "limit": 5}).subject_id == "42"


def test_a_comma_is_only_a_thousands_separator() -> None:
    """A decimal comma (``0,50`` for fifty cents) used to lose its comma: the YAML ``limit: 0,50``
    made a $50 budget and ``5,5`` one of $55, without a word. Grouped thousands still read."""

    def limit(value: object) -> Decimal:
        return Budget.from_dict({"scope": "user", "meter": "cost_usd", "limit": value}).limit

    assert limit("1,000") == D(1000)
    assert limit("1,000,000.50") == D("1000000.50")
    assert limit("$1,000") == D(1000)
    assert limit("5_000") == D(5000)
    for decimal_comma in ("0,50", "5,5", "1,00", "1,0000", ",5", "1,000,00"):
        with pytest.raises(ConfigError, match="thousands separator"):
            limit(decimal_comma)
    with pytest.raises(ConfigError, match="thousands separator"):
        parse_budget_spec("user=alice:cost_usd=0,50/day;name=eu")
    assert parse_budget_spec("user:total_tokens=9;max_input_tokens=8,000").max_input_tokens == 8000
    with pytest.raises(ConfigError, match="thousands separator"):
        parse_budget_spec("user:total_tokens=9;max_input_tokens=8,0")


# --- subjects and templates ---------------------------------------------------------------------


def test_template_applies_to_every_value_of_its_scope() -> None:
    each_session = parse_budget_spec("session:total_tokens=50000")
    assert each_session.applies_to(Subject(session="s-1")) == "s-1"
    assert each_session.applies_to(Subject(session="s-2")) == "s-2"
    assert each_session.applies_to(Subject(user="alice")) is None
    assert each_session.applies_to(Subject(session="")) is None


def test_fixed_budget_applies_only_to_its_subject() -> None:
    alice = parse_budget_spec("user=alice:cost_usd=5")
    assert alice.applies_to(Subject(user="alice")) == "alice"
    assert alice.applies_to(Subject(user="bob")) is None


def test_applicable_checks_every_scope() -> None:
    # C41: key, user and team all apply to one call.
    budgets = [
        parse_budget_spec("user=user-fx41:cost_usd=1.00"),
        parse_budget_spec("team=team-fx41:cost_usd=100.00"),
        parse_budget_spec("team=other:cost_usd=1"),
        parse_budget_spec("key:requests=10"),
    ]
    subject = Subject(key="key-fx41", user="user-fx41", team="team-fx41")
    found = [(b.name, value) for b, value in applicable(budgets, subject)]
    assert found == [
        ("user=user-fx41:cost_usd=1.00", "user-fx41"),
        ("team=team-fx41:cost_usd=100.00", "team-fx41"),
        ("key:requests=10", "key-fx41"),
    ]


def test_a_projects_values_are_namespaced_by_it() -> None:
    """Tenancy: the user, agent, session and task of a subject with a project are
    ``<project>/<value>``, and so are tag values (issue 15 item 4); org, team and key are not;
        applying it twice changes nothing."""
    subject = Subject(
        org="acme",
        project="demo",
        team="t",
        user="alice",
        key="k",
        agent="a",
        session="s-1",
        task="x",
        tags=(("cc", "42"),),
    )
    spaced = subject.namespaced()
    assert spaced.to_dict() == {
        "org": "acme", "project": "demo", "team": "t", "user": "demo/alice", "key": "k",
        "agent": "demo/a", "session": "demo/s-1", "task": "demo/x", "tags": {"cc": "demo/42"},
    }  # fmt: skip
    assert spaced.namespaced() == spaced
    assert Subject(project="demo", session="demo/s-1").namespaced().session == "demo/s-1"
    assert Subject(project="shop", session="demo/s-1").namespaced().session == "shop/demo/s-1"
    assert Subject(user="alice", session="s-1").namespaced() == Subject(user="alice", session="s-1")


def test_a_fixed_id_without_a_project_matches_the_value_in_every_project() -> None:
    """``id: alice`` (no project named) applies to ``alice`` and to ``<project>/alice``;
    ``id: demo/alice`` only to demo's alice. Both charge the one row of the fixed budget."""
    anywhere = parse_budget_spec("user=alice:cost_usd=5")
    demo_only = parse_budget_spec("user=demo/alice:cost_usd=5")
    demo_alice = Subject(project="demo", user="alice").namespaced()
    shop_alice = Subject(project="shop", user="alice").namespaced()
    assert anywhere.applies_to(Subject(user="alice")) == "alice"
    assert anywhere.applies_to(demo_alice) == "alice" and anywhere.applies_to(shop_alice) == "alice"
    assert demo_only.applies_to(demo_alice) == "demo/alice"
    assert demo_only.applies_to(shop_alice) is None
    assert demo_only.applies_to(Subject(project="shop", user="demo/alice").namespaced()) is None
    assert anywhere.applies_to(Subject(project="shop", user="demo/alice").namespaced()) is None
    # a value that only looks namespaced, without the subject's project, is matched as written
    assert anywhere.applies_to(Subject(user="demo/alice")) is None
    # org, team and key values are never namespaced: their ids match as written
    acme = parse_budget_spec("org=acme:cost_usd=5")
    assert acme.applies_to(Subject(project="demo", org="acme").namespaced()) == "acme"


def test_an_override_replaces_the_template_instance_of_a_namespaced_value() -> None:
    each_user = Budget.from_dict({"name": "each-user", "scope": "user", "meter": "total_tokens", "limit": 10})
    alice = Budget.from_dict(
        {"name": "alice-big", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 99,
         "overrides": "each-user"}
    )  # fmt: skip
    found = applicable([each_user, alice], Subject(project="demo", user="alice").namespaced())
    assert [(b.name, value) for b, value in found] == [("alice-big", "alice")]
    bob = applicable([each_user, alice], Subject(project="demo", user="bob").namespaced())
    assert [(b.name, value) for b, value in bob] == [("each-user", "demo/bob")]


def test_subject_dict_round_trip() -> None:
    subject = Subject(org="acme", user="alice", session="s-1", tags=(("arm", "b"), ("cc", "42")))
    assert subject.to_dict() == {
        "org": "acme",
        "user": "alice",
        "session": "s-1",
        "tags": {"arm": "b", "cc": "42"},
    }
    assert Subject.from_dict(subject.to_dict()) == subject
    assert subject.value("team") is None
    assert subject.value("nonsense") is None
    assert set(SCOPES) == {"org", "project", "team", "user", "key", "agent", "session", "task"}


# --- meter_amounts ------------------------------------------------------------------------------


def test_meter_amounts_of_a_complete_call() -> None:
    # C04: 50,050 prompt tokens (10,000 written), 800 out; cost 0.06165.
    usage = Usage(input_tokens=50050, cache_read_tokens=40000, cache_write_tokens=10000, output_tokens=800)
    amounts = meter_amounts(usage, Cost(total_usd=D("0.06165")))
    assert amounts == {
        "requests": D(1),
        "input_tokens": D(50050),
        "output_tokens": D(800),
        "total_tokens": D(50850),
        "cache_write_tokens": D(10000),
        "cost_usd": D("0.06165"),
    }


def test_meter_amounts_with_unknowns() -> None:
    usage = Usage(output_tokens=42, input_source="none")
    amounts = meter_amounts(usage, Cost.unknown())
    assert "input_tokens" not in amounts  # unknown charges nothing, it is not a zero
    assert "cost_usd" not in amounts
    assert amounts["output_tokens"] == D(42)
    assert amounts["total_tokens"] == D(42)
    assert meter_amounts(Usage(input_source="none", output_source="none"))["requests"] == D(1)
    assert "total_tokens" not in meter_amounts(Usage(input_source="none", output_source="none"))


def test_meter_amounts_of_a_filled_call() -> None:
    # C12: 42 reported out, 1,500 estimated in -> 1,542 for token budgets.
    usage = Usage(output_tokens=42, input_source="none").filled(input_estimate=1500)
    amounts = meter_amounts(usage, Cost(total_usd=D("0.0001542"), estimated=True))
    assert (amounts["input_tokens"], amounts["total_tokens"], amounts["cost_usd"]) == (
        D(1500),
        D(1542),
        D("0.0001542"),
    )


# --- tags, templates, thresholds, actions, options ------------------------------------------------


def test_a_tag_scope_applies_to_the_subjects_tag() -> None:
    each_cc = Budget.from_dict({"scope": "tag:cost_center", "meter": "cost_usd", "limit": "100"})
    assert each_cc.name == "tag:cost_center:cost_usd"
    subject = Subject(user="alice", tags=(("cost_center", "cc-42"), ("env", "prod")))
    assert subject.value("tag:cost_center") == "cc-42"
    assert subject.value("tag:missing") is None
    assert each_cc.applies_to(subject) == "cc-42"
    assert each_cc.applies_to(Subject(user="alice")) is None
    fixed = parse_budget_spec("tag:cost_center=cc-7:cost_usd=5/month")
    assert (fixed.scope, fixed.subject_id) == ("tag:cost_center", "cc-7")
    assert fixed.applies_to(subject) is None
    with pytest.raises(ConfigError, match="unknown scope"):
        Budget.from_dict({"scope": "tag:", "meter": "cost_usd", "limit": 1})


def test_template_and_instance_names() -> None:
    each_user = parse_budget_spec("user:total_tokens=200000/day")
    assert each_user.is_template
    assert each_user.instance_name("alice") == "user:total_tokens=200000/day[alice]"
    alice = parse_budget_spec("user=alice:total_tokens=500000/day")
    assert not alice.is_template and alice.instance_name("alice") == alice.name


def test_thresholds_default_and_configured() -> None:
    budget = Budget.from_dict({"scope": "user", "meter": "cost_usd", "limit": "10"})
    assert budget.thresholds == (D("0.5"), D("0.8"), D("1"))
    assert Budget.from_dict(
        {"scope": "user", "meter": "cost_usd", "limit": 1, "thresholds": ["90%", "25%"]}
    ).thresholds == (
        D("0.25"),
        D("0.9"),
    )
    assert Budget.from_dict(
        {"scope": "user", "meter": "cost_usd", "limit": 1, "thresholds": [0.75, "1.2"]}
    ).thresholds == (
        D("0.75"),
        D("1.2"),
    )
    assert (
        Budget.from_dict({"scope": "user", "meter": "cost_usd", "limit": 1, "thresholds": []}).thresholds
        == ()
    )
    with pytest.raises(ConfigError, match="write '80%'"):
        Budget.from_dict({"scope": "user", "meter": "cost_usd", "limit": 1, "thresholds": [80]})
    with pytest.raises(ConfigError, match="threshold"):
        Budget.from_dict({"scope": "user", "meter": "cost_usd", "limit": 1, "thresholds": ["-5%"]})


def test_action_week_start_and_rolling_in_from_dict() -> None:
    budget = Budget.from_dict(
        {
            "scope": "session",
            "meter": "total_tokens",
            "limit": 50000,
            "action": "stop",
            "window": "week",
            "week_start": "sunday",
        }
    )
    assert (budget.action, budget.window) == ("stop", Window("week", week_start=6))
    assert Budget.from_dict(budget.to_dict()) == budget
    assert budget.to_dict()["window"] == "week:sunday"
    rolling = Budget.from_dict(
        {"scope": "key", "meter": "cost_usd", "limit": 2, "window": {"type": "rolling", "duration": "5h"}}
    )
    assert str(rolling.window) == "rolling:5h"
    assert Budget.from_dict(rolling.to_dict()) == rolling
    with pytest.raises(ConfigError, match="action"):
        Budget.from_dict({"scope": "user", "meter": "cost_usd", "limit": 1, "action": "explode"})
    with pytest.raises(ConfigError, match="week windows only"):
        Budget.from_dict(
            {"scope": "user", "meter": "cost_usd", "limit": 1, "window": "day", "week_start": "sunday"}
        )


def test_spec_options() -> None:
    budget = parse_budget_spec(
        "user:total_tokens=200000/day@Europe/Berlin;action=deny;thresholds=50%,90%;mode=soft"
    )
    assert budget.name == "user:total_tokens=200000/day@Europe/Berlin"
    assert (budget.action, budget.mode, budget.thresholds) == ("deny", "soft", (D("0.5"), D("0.9")))
    assert budget.window == Window("day", "Europe/Berlin")
    named = parse_budget_spec("key:cost_usd=2/rolling:5h;name=key-5h")
    assert (named.name, str(named.window)) == ("key-5h", "rolling:5h")
    gpu = parse_budget_spec("agent:gpu_seconds=3600;custom")
    assert (gpu.meter, gpu.limit, gpu.subject_id) == ("gpu_seconds", D(3600), None)
    with pytest.raises(ConfigError, match="mark a custom meter with ;custom"):
        parse_budget_spec("agent:gpu_seconds=3600")
    with pytest.raises(ConfigError, match="unknown option"):
        parse_budget_spec("agent:total_tokens=1;colour=red")


@pytest.mark.parametrize(
    "spec",
    [
        "user:total_tokens=1e31",
        "user:total_tokens=1e1000000",
        "user:cost_usd=1e-19",
        "user:cost_usd=0E-1000000",
        "user:total_tokens=5/rolling:36501d",
        "user:total_tokens=5;thresholds=NaN%",
        "user:total_tokens=5;thresholds=1e-1000000",
    ],
)
def test_limits_windows_and_thresholds_the_ledger_cannot_work_with_are_refused(spec) -> None:
    """Past these a limit overflows the decimal context or fills a 402 message with zeros, a
    rolling window overflows ``timedelta``, and ``NaN%`` raised ``decimal.InvalidOperation``."""
    with pytest.raises(ConfigError):
        parse_budget_spec(spec)


def test_the_largest_and_finest_limits_and_windows_are_kept() -> None:
    assert parse_budget_spec("user:total_tokens=9999999999999999999999999999999").limit == Decimal(10**31 - 1)
    assert parse_budget_spec("user:cost_usd=0.000000000000000001").limit == Decimal("1e-18")
    assert parse_budget_spec("user:total_tokens=5/rolling:36500d").window.duration == timedelta(days=36500)
