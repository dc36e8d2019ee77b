"""Admission decisions: clamp to the tightest budget, deny with the budget named, never overspend.

Expected bounds are worked out by hand: a total_tokens budget leaves ``limit - spent - held -
input`` for output; a cost budget leaves ``(remaining * 1e6 - input_rate * input) / output_rate``,
rounded down. Enforcement cases C41, C42, C43 and C39 give the rest.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenward.core.budgets import METERS, Budget
from tokenward.core.decide import (
    Balance,
    CallPlan,
    admission_check,
    decide,
    hold_amounts,
    shadow_check,
    tightest,
)
from tokenward.core.windows import Window
from tokenward.errors import BudgetExceeded, UnpricedCall

D = Decimal


def balance(
    name: str,
    meter: str,
    limit: str | int,
    spent: str | int = 0,
    held: str | int = 0,
    *,
    scope: str = "user",
    subject_id: str = "alice",
    mode: str = "hard",
    unpriced: str = "deny",
    reset_at: datetime | None = None,
    action: str = "clamp",
) -> Balance:
    budget = Budget(
        name=name,
        scope=scope,
        meter=meter,
        limit=D(limit),
        mode=mode,  # type: ignore[arg-type]
        unpriced=unpriced,  # type: ignore[arg-type]
        action=action,  # type: ignore[arg-type]
        custom=meter not in METERS,
    )
    return Balance(budget, subject_id, "", D(spent), D(held), reset_at)


def plan(
    input_tokens: int = 1000,
    max_output: int = 4000,
    *,
    min_output: int = 1,
    rates: tuple[str, str] | None = ("3", "15"),
    model: str = "fixture-model",
) -> CallPlan:
    return CallPlan(
        model=model,
        input_tokens=input_tokens,
        max_output_tokens=max_output,
        min_output_tokens=min_output,
        input_rate=None if rates is None else D(rates[0]),
        output_rate=None if rates is None else D(rates[1]),
    )


def test_admits_unchanged_when_every_budget_has_room() -> None:
    decision = decide(plan(), [balance("big", "total_tokens", 1_000_000)])
    assert decision.output_tokens == 4000
    assert decision.clamped_by is None
    assert decision.amounts == {
        "input_tokens": D(1000),
        "output_tokens": D(4000),
        "total_tokens": D(5000),
        "requests": D(1),
        "cost_usd": D("0.063"),  # 1000*3 + 4000*15 = 63000 per 1M
    }


def test_clamps_to_the_tightest_total_tokens_budget() -> None:
    balances = [
        balance("loose", "total_tokens", 100_000, spent=1000),
        balance("tight", "total_tokens", 50_000, spent=45_000, held=1000),
    ]
    decision = decide(plan(input_tokens=2000, max_output=4000), balances)
    assert decision.output_tokens == 2000  # 50,000 - 45,000 - 1,000 - 2,000
    assert decision.clamped_by == "tight"
    assert decision.amounts["total_tokens"] == D(4000)


def test_clamps_to_an_output_tokens_budget() -> None:
    decision = decide(plan(max_output=4000), [balance("out", "output_tokens", 1000, spent=700, held=50)])
    assert decision.output_tokens == 250
    assert decision.clamped_by == "out"


def test_cost_clamp_is_the_output_bound_that_fits_exactly() -> None:
    # $0.01 left; input 1000 at $3/M costs $0.003; $0.007 buys 466.67 tokens at $15/M -> 466.
    decision = decide(plan(input_tokens=1000, max_output=4000), [balance("usd", "cost_usd", "0.01")])
    assert decision.output_tokens == 466
    assert decision.amounts["cost_usd"] == D("0.00999")  # 3000 + 466*15 = 9990 per 1M
    assert decision.amounts["cost_usd"] <= D("0.01")
    assert (1000 * D(3) + 467 * D(15)) / 1_000_000 > D("0.01")  # one more token would not fit


def test_cost_clamp_exact_fit_keeps_the_boundary() -> None:
    # $0.0105 = 1000*3 + 500*15 per 1M exactly: the full 500 fits.
    decision = decide(plan(input_tokens=1000, max_output=500), [balance("usd", "cost_usd", "0.0105")])
    assert decision.output_tokens == 500
    assert decision.clamped_by is None


def test_denies_below_min_output_naming_the_budget() -> None:
    reset = datetime(2025, 6, 3, tzinfo=UTC)
    tight = balance(
        "tight", "total_tokens", 50_000, spent=48_000, held=1_500, scope="session", reset_at=reset
    )
    with pytest.raises(BudgetExceeded) as info:
        decide(plan(input_tokens=400, max_output=4000, min_output=200), [tight])
    exc = info.value
    # 50,000 - 48,000 - 1,500 - 400 = 100 output tokens left, below the 200 minimum
    assert (exc.budget, exc.scope, exc.subject_id, exc.meter) == ("tight", "session", "alice", "total_tokens")
    assert (exc.limit, exc.used, exc.held) == (D(50_000), D(48_000), D(1_500))
    assert exc.requested == D(600)  # input 400 + the minimum output 200
    assert exc.reset_at == reset
    assert exc.remaining == D(500)
    assert "tight" in str(exc) and "2025-06-03T00:00:00Z" in str(exc)


def test_input_tokens_and_requests_budgets_deny_without_clamping() -> None:
    decision = decide(plan(input_tokens=1000), [balance("in", "input_tokens", 1000)])
    assert decision.output_tokens == 4000
    with pytest.raises(BudgetExceeded) as info:
        decide(plan(input_tokens=1001), [balance("in", "input_tokens", 1000)])
    assert info.value.requested == D(1001)
    with pytest.raises(BudgetExceeded) as info:
        decide(plan(), [balance("calls", "requests", 10, spent=9, held=1)])
    assert info.value.requested == D(1)


def test_input_alone_over_the_cost_budget_denies() -> None:
    with pytest.raises(BudgetExceeded) as info:
        decide(plan(input_tokens=10_000), [balance("usd", "cost_usd", "0.02")])  # input alone is $0.03
    assert info.value.requested == D("0.030015")  # 10000*3 + 1*15 per 1M


def test_unpriced_model_with_hard_cost_budget_raises() -> None:
    with pytest.raises(UnpricedCall) as info:
        decide(plan(rates=None, model="fixture-unknown"), [balance("usd", "cost_usd", 5)])
    assert (info.value.model, info.value.budget) == ("fixture-unknown", "usd")


def test_unpriced_model_allowed_by_policy_holds_no_cost() -> None:
    decision = decide(plan(rates=None), [balance("usd", "cost_usd", 5, unpriced="allow")])
    assert decision.output_tokens == 4000
    assert "cost_usd" not in decision.amounts


def test_unpriced_model_under_soft_or_shadow_cost_budget_is_admitted() -> None:
    for mode in ("soft", "shadow"):
        decision = decide(plan(rates=None), [balance("usd", "cost_usd", 5, mode=mode)])
        assert decision.output_tokens == 4000


def test_unpriced_model_and_token_budgets() -> None:
    decision = decide(plan(rates=None, input_tokens=100), [balance("tok", "total_tokens", 600)])
    assert decision.output_tokens == 500


def test_soft_budget_never_denies_or_clamps() -> None:
    decision = decide(plan(), [balance("soft", "total_tokens", 10, spent=1_000_000, mode="soft")])
    assert decision.output_tokens == 4000
    assert decision.would_deny == ()


def test_shadow_budget_reports_would_deny_without_enforcing() -> None:
    balances = [
        balance("shadow-deny", "total_tokens", 100, spent=100, mode="shadow"),
        balance("shadow-clamp", "total_tokens", 3000, mode="shadow"),
    ]
    decision = decide(plan(input_tokens=1000, max_output=4000), balances)
    assert decision.output_tokens == 4000  # a shadow budget neither denies nor clamps
    assert decision.would_deny == ("shadow-deny",)
    assert decision.clamped_by is None


def test_c41_overspent_user_budget_denies_though_the_team_has_room() -> None:
    # Reservation of $0.01: 500 in at $10/M + 500 out at $10/M.
    request = plan(input_tokens=500, max_output=500, rates=("10", "10"))
    assert hold_amounts(request, 500)["cost_usd"] == D("0.01")
    user = balance("user-fx41", "cost_usd", "1.00", spent="1.20", scope="user", subject_id="user-fx41")
    team = balance("team-fx41", "cost_usd", "100.00", spent="5.00", scope="team", subject_id="team-fx41")
    for balances in ([user, team], [team, user]):
        with pytest.raises(BudgetExceeded) as info:
            decide(request, balances)
        assert (info.value.scope, info.value.budget) == ("user", "user-fx41")
        denial = admission_check(balances, {"cost_usd": D("0.01")})
        assert denial is not None and denial.scope == "user"


def test_c42_budget_from_a_template_denies_at_its_limit() -> None:
    window = Window(unit="day", time_zone="UTC")
    now = datetime(2025, 6, 2, 15, tzinfo=UTC)
    budget = Budget(name="tmpl-daily-30", scope="key", meter="cost_usd", limit=D(30), window=window)
    reset = window.reset_at(now)
    assert reset == datetime(2025, 6, 3, tzinfo=UTC)
    spent = Balance(budget, "key-fx42", window.key(now), D("30.00"), D(0), reset)
    assert admission_check([spent], {"cost_usd": D("0.01")}) is not None
    request = plan(input_tokens=500, max_output=500, rates=("10", "10"))  # $0.01
    with pytest.raises(BudgetExceeded) as info:
        decide(request, [spent])
    assert info.value.reset_at == reset
    # control: $29 spent and a $0.50 reservation fits
    control = Balance(budget, "key-fx42", window.key(now), D("29.00"), D(0), reset)
    assert admission_check([control], {"cost_usd": D("0.50")}) is None


def test_c43_free_primary_admitted_paid_fallback_denied() -> None:
    key = balance("key-fx43", "cost_usd", "1.00", spent="1.20", scope="key", subject_id="key-fx43")
    free = plan(input_tokens=1000, max_output=500, rates=("0", "0"), model="fixture-free-primary")
    decision = decide(free, [key])
    assert decision.output_tokens == 500
    assert decision.amounts["cost_usd"] == D(0)
    assert admission_check([key], decision.amounts) is None
    paid = plan(input_tokens=1000, max_output=500, rates=("3", "15"), model="fixture-paid-fallback")
    assert hold_amounts(paid, 500)["cost_usd"] == D("0.0105")
    with pytest.raises(BudgetExceeded) as info:
        decide(paid, [key])
    assert (info.value.scope, info.value.budget) == ("key", "key-fx43")
    assert admission_check([key], hold_amounts(paid, 500)) is not None


def test_free_output_with_paid_input_still_needs_room_for_the_input() -> None:
    request = plan(input_tokens=1000, max_output=500, rates=("3", "0"))
    assert decide(request, [balance("usd", "cost_usd", "0.003")]).output_tokens == 500
    with pytest.raises(BudgetExceeded):
        decide(request, [balance("usd", "cost_usd", "0.0029")])


def test_c39_admission_check_counts_what_is_held() -> None:
    # $5 hard budget, $4.752720 spent; four $0.0884 reservations arrive together.
    budget = Budget(name="usd", scope="user", meter="cost_usd", limit=D("5.00"))
    held = D(0)
    admitted = 0
    for _ in range(4):
        snapshot = Balance(budget, "alice", "", D("4.752720"), held, None)
        if admission_check([snapshot], {"cost_usd": D("0.0884")}) is None:
            held += D("0.0884")
            admitted += 1
    assert admitted == 2
    assert D("4.752720") + held == D("4.92952")


def test_admission_check_skips_soft_shadow_and_uncharged_meters() -> None:
    balances = [
        balance("soft", "cost_usd", 0, spent=1, mode="soft"),
        balance("shadow", "cost_usd", 0, spent=1, mode="shadow"),
        balance("gpu", "gpu_seconds", 0, spent=1),
    ]
    assert admission_check(balances, {"cost_usd": D(1)}) is None


def test_boundary_exactly_at_limit_is_admitted() -> None:
    assert (
        admission_check([balance("b", "total_tokens", 100, spent=60, held=20)], {"total_tokens": D(20)})
        is None
    )
    denial = admission_check([balance("b", "total_tokens", 100, spent=60, held=20)], {"total_tokens": D(21)})
    assert denial is not None and denial.requested == D(21)


@settings(deadline=None)  # shared, noisy machines: no per-example time limit
@given(
    limit=st.integers(0, 10**6),
    spent=st.integers(0, 10**6),
    held=st.integers(0, 10**5),
    input_tokens=st.integers(0, 10**5),
    max_output=st.integers(1, 10**5),
    in_rate=st.decimals(min_value=0, max_value=50, places=3),
    out_rate=st.decimals(min_value=0, max_value=100, places=3),
    meter=st.sampled_from(["total_tokens", "output_tokens", "input_tokens", "cost_usd"]),
)
def test_an_admitted_hold_always_passes_the_ledger_check(
    limit: int,
    spent: int,
    held: int,
    input_tokens: int,
    max_output: int,
    in_rate: Decimal,
    out_rate: Decimal,
    meter: str,
) -> None:
    # Promise 1: whatever decide admits, spent + held + hold stays within the hard limit.
    scale = D("0.0001") if meter == "cost_usd" else D(1)
    b = balance("b", meter, D(limit) * scale, spent=D(spent) * scale, held=D(held) * scale)  # type: ignore[arg-type]
    request = CallPlan("m", input_tokens, max_output, 1, in_rate, out_rate)
    try:
        decision = decide(request, [b])
    except BudgetExceeded:
        return
    assert 1 <= decision.output_tokens <= max_output
    assert admission_check([b], decision.amounts) is None


# --- actions, meters a call cannot hold, shadow details, the tightest budget ----------------------


def test_action_deny_refuses_instead_of_clamping() -> None:
    # 5000 - 1000 input = 4000 output left; the call asks for 4500: a clamp budget lowers it to 4000,
    # a deny budget refuses it, naming the 5500 tokens the call needs.
    clamp = decide(plan(1000, 4500), [balance("b", "total_tokens", 5000)])
    assert (clamp.output_tokens, clamp.clamped_by) == (4000, "b")
    with pytest.raises(BudgetExceeded) as denied:
        decide(plan(1000, 4500), [balance("b", "total_tokens", 5000, action="deny")])
    assert (denied.value.budget, denied.value.requested) == ("b", D(5500))


def test_a_deny_budget_is_checked_against_the_bound_other_budgets_left() -> None:
    # "tight" (clamp) leaves 2000 output tokens; "strict" (deny) can pay for 3000: the clamped call
    # fits it, whatever order the budgets come in.
    tight = balance("tight", "output_tokens", 2000)
    strict = balance("strict", "total_tokens", 4000, action="deny")
    for balances in ([tight, strict], [strict, tight]):
        decision = decide(plan(1000, 4000), balances)
        assert (decision.output_tokens, decision.clamped_by) == (2000, "tight")
    with pytest.raises(BudgetExceeded) as denied:
        decide(plan(1000, 4000), [balance("strict", "total_tokens", 2500, action="deny"), tight])
    assert (denied.value.budget, denied.value.requested) == ("strict", D(3000))


@pytest.mark.parametrize("action", ["stop", "degrade"])
def test_stop_and_degrade_clamp_like_clamp(action: str) -> None:
    decision = decide(plan(1000, 4500), [balance("b", "total_tokens", 5000, action=action)])
    assert (decision.output_tokens, decision.clamped_by) == (4000, "b")


@pytest.mark.parametrize("meter", ["gpu_seconds", "tool_calls", "cache_write_tokens"])
def test_a_meter_a_call_cannot_hold_refuses_it_once_exhausted(meter: str) -> None:
    # Room left (3600 - 3599.5 = 0.5): admitted, nothing held on it.
    decision = decide(plan(), [balance("compute", meter, 3600, spent="3599.5")])
    assert decision.output_tokens == 4000 and meter not in decision.amounts
    # Exhausted (spent + held = limit): refused, asking for nothing of it.
    with pytest.raises(BudgetExceeded) as denied:
        decide(plan(), [balance("compute", meter, 3600, spent=3000, held=600)])
    assert (denied.value.budget, denied.value.meter, denied.value.requested) == ("compute", meter, D(0))
    # Soft: never; shadow: reported.
    decide(plan(), [balance("compute", meter, 3600, spent=3600, mode="soft")])
    shadow = decide(plan(), [balance("compute", meter, 3600, spent=3600, mode="shadow")])
    assert shadow.would_deny == ("compute",)


def test_shadow_details_carry_the_figures_of_the_would_be_denial() -> None:
    # limit 100 total tokens, 100 spent; the minimum call is 1000 input + 1 output = 1001 tokens.
    decision = decide(
        plan(1000, 4000), [balance("shadow-deny", "total_tokens", 100, spent=100, mode="shadow")]
    )
    (would,) = decision.shadow
    assert (would.budget, would.limit, would.used, would.held, would.requested, would.mode) == (
        "shadow-deny",
        D(100),
        D(100),
        D(0),
        D(1001),
        "shadow",
    )


def test_shadow_check_on_raw_holds() -> None:
    balances = [
        balance("s", "cost_usd", "1.00", spent="0.90", mode="shadow"),
        balance("h", "cost_usd", "5.00", spent="0.90"),
    ]
    (would,) = shadow_check(balances, {"cost_usd": D("0.20")})  # 0.90 + 0.20 > 1.00
    assert (would.budget, would.requested) == ("s", D("0.20"))
    assert shadow_check(balances, {"cost_usd": D("0.10")}) == []  # exactly 1.00 fits
    assert admission_check(balances, {"cost_usd": D("0.20")}) is None  # shadow never denies


def test_the_tightest_budget_is_the_smallest_share_left_after_the_hold() -> None:
    # "sess": (100 - 0 - 26) / 100 = 74 % left; "day": (1000 - 0 - 26) / 1000 = 97.4 %.
    sess = balance("sess", "total_tokens", 100)
    day = balance("day", "total_tokens", 1000)
    decision = decide(plan(6, 20, rates=None), [day, sess])
    assert decision.tightest is sess
    assert tightest([balance("soft", "total_tokens", 1, mode="soft")], {"total_tokens": D(1)}) is None


def test_which_budgets_degrade_a_call() -> None:
    """The share left that the degrade policy compares with ``below``: hard budgets, and soft ones
    whose action is degrade; with ``marked_only`` (the SDK's default policy) only the latter."""
    from tokenward.guard.wire.degrade import remaining_share

    hard = balance("hard", "total_tokens", 100, spent=90)  # 10 % left
    soft = balance("soft-degrade", "total_tokens", 100, spent=70, mode="soft", action="degrade")  # 30 %
    marked = balance("marked", "total_tokens", 100, spent=85, action="degrade")  # 15 %
    shadow = balance("shadow", "total_tokens", 100, spent=99, mode="shadow", action="degrade")
    assert remaining_share([hard, soft]) == D("0.1")
    assert remaining_share([soft, shadow]) == D("0.3")
    assert remaining_share([hard, soft, marked], marked_only=True) == D("0.15")
    assert remaining_share([hard], marked_only=True) is None


def test_a_rolling_denial_says_when_its_hold_fits() -> None:
    """Issue 15 item 6: ``retry_at`` is the first drop after which spend + holds + the request
    fit; holds count as if they settled in their bucket."""
    budget = Budget("rm", "user", "total_tokens", D(100), window=Window.parse("rolling:1m"))
    t = datetime(2026, 1, 1, 12, 1, 1, tzinfo=UTC)
    drops = (
        (t, D(26), D(0)),
        (t + timedelta(seconds=10), D(26), D(0)),
        (t + timedelta(seconds=20), D(0), D(30)),
    )
    balance = Balance(budget, "alice", "k", D(52), D(30), t, drops)  # 82 counted
    assert balance.fits_at(D(18)) is None  # fits now: not a denial
    assert balance.fits_at(D(19)) == t  # 101 - 100 = 1 must go: the first drop
    assert balance.fits_at(D(45)) == t + timedelta(seconds=10)  # 27 must go: 26 is not enough
    assert balance.fits_at(D(100)) == t + timedelta(seconds=20)  # everything must go
    assert balance.fits_at(D(101)) is None  # never fits
    error = balance.exceeded(D(45))
    assert (error.retry_at, error.window) == (t + timedelta(seconds=10), "rolling:1m")
    assert error.to_dict()["retry_at"] == "2026-01-01T12:01:11Z"
    daily = Balance(
        Budget("d", "user", "total_tokens", D(100), window=Window.parse("day")), "a", "", D(99), D(0), t
    )
    assert daily.exceeded(D(2)).retry_at is None  # calendar windows: reset_at says it


# -- a call without a bound of its own, and per-call fees -------------------------------------


def test_a_call_without_a_bound_takes_everything_when_nothing_else_is_in_flight() -> None:
    plan = CallPlan("m", 100, 4096, min_output_tokens=16, bound_requested=False)
    decision = decide(plan, [balance("b", "total_tokens", 1000)])
    assert decision.output_tokens == 1000 - 100  # the sequential case is unchanged


def test_a_call_without_a_bound_takes_half_while_others_hold_amounts() -> None:
    plan = CallPlan("m", 100, 4096, min_output_tokens=16, bound_requested=False)
    decision = decide(plan, [balance("b", "total_tokens", 1000, held=300)])
    assert decision.output_tokens == (1000 - 300 - 100) // 2  # 300: half of what is left
    waited = CallPlan("m", 100, 4096, min_output_tokens=16, bound_requested=False, contended=True)
    assert decide(waited, [balance("b", "total_tokens", 1000)]).output_tokens == 450


def test_half_never_goes_below_the_minimum_output() -> None:
    plan = CallPlan("m", 100, 4096, min_output_tokens=16, bound_requested=False)
    assert decide(plan, [balance("b", "total_tokens", 1000, held=880)]).output_tokens == 16  # 20 // 2 < 16
    asked = CallPlan("m", 100, 4096, min_output_tokens=16)  # the request set its own bound
    assert decide(asked, [balance("b", "total_tokens", 1000, held=300)]).output_tokens == 600


def test_fees_are_held_on_cost_and_leave_less_room_for_output() -> None:
    # $1/1M in, $2/1M out, a $0.01 fee: (0.02 - 0.01) x 1e6 - 100 x 1 = 9,900 / 2 = 4,950 output
    plan = CallPlan("m", 100, 10_000, input_rate=D(1), output_rate=D(2), fixed_cost_usd=D("0.01"))
    decision = decide(plan, [balance("b", "cost_usd", "0.02")])
    assert decision.output_tokens == 4950
    assert decision.amounts["cost_usd"] == (100 * D(1) + 4950 * D(2)) / 1_000_000 + D("0.01")
    assert hold_amounts(plan, 0)["cost_usd"] == D("0.0101")
