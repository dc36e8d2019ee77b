"""Issue 15 item 9: a call refused at the gateway (402/429) or in the SDK (``BudgetExceeded``) is
recorded in the ledger, listed by ``GET /admin/denials`` (a project admin sees its project only)
and by ``tokenward events --denials``.

The fake provider answers ``Say hello`` with ``max_tokens`` words: ``max_tokens: 20`` costs the
prompt plus 20 output tokens. A session budget of 30 tokens takes one such call; the second is
refused outright because even its prompt does not fit beside the 26 spent."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import openai
import pytest
from typer.testing import CliRunner

import tokenward
from tests.support.fixtures import KEY
from tokenward.cli.main import app
from tokenward.core.budgets import Budget, Subject
from tokenward.ledger import open_ledger

ADMIN = "tw-admin-root"
PROJECT_ADMIN = "tw-admin-demo"
OTHER_ADMIN = "tw-admin-other"
ADMIN_KEYS = [
    {"key": ADMIN, "name": "root"},
    {"key": PROJECT_ADMIN, "name": "demo-admin", "project": "demo"},
    {"key": OTHER_ADMIN, "name": "other-admin", "project": "other"},
]
MESSAGES = [{"role": "user", "content": "Say hello"}]
TIGHT = {"name": "tight", "scope": "session", "meter": "total_tokens", "limit": 30}


def _admin(gateway, path: str, key: str = ADMIN, **params: str) -> httpx.Response:
    return httpx.get(f"{gateway.url}{path}", headers={"authorization": f"Bearer {key}"}, params=params)


def test_a_gateway_refusal_is_recorded_with_its_budget_estimate_model_request_and_key(start_gateway) -> None:
    gateway = start_gateway(budgets=[TIGHT], admin_keys=ADMIN_KEYS)
    client = openai.OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=KEY,
        max_retries=0,
        default_headers={"x-tokenward-session": "s1"},
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # type: ignore[arg-type]
    assert refused.value.status_code == 402
    body = refused.value.response.json()["error"]["budget"]
    request_id = refused.value.response.headers["x-tokenward-request-id"]

    ledger = open_ledger(gateway.ledger_url)
    try:
        (denial,) = ledger.denials()
        assert denial.request_id == request_id
        assert (denial.budget, denial.scope, denial.meter, denial.window) == (
            "tight",
            "session",
            "total_tokens",
            "none",
        )
        assert denial.subject.key == denial.key == "test-key"
        assert denial.subject.project == "demo" and denial.subject.session is not None
        assert (denial.model, denial.reason, denial.endpoint) == (
            "gpt-4o-mini",
            "budget_exceeded",
            "openai-chat",
        )
        # the figures of the 402 body, and the estimate it was refused on: its prompt and the
        # 20 output tokens it asked for
        assert (str(denial.limit), str(denial.used), str(denial.requested)) == (
            body["limit"],
            body["used"],
            body["requested"],
        )
        assert denial.used == 26 and denial.limit == 30
        assert denial.estimate["output_tokens"] == 20
        assert denial.estimate["total_tokens"] == denial.estimate["input_tokens"] + 20
        assert denial.estimate["input_tokens"] > 4  # why it could not be clamped into the 4 left
    finally:
        ledger.close()

    listed = _admin(gateway, "/admin/denials").json()
    assert [d["request_id"] for d in listed["denials"]] == [request_id] and listed["refusals"] == 1
    mine = _admin(gateway, "/admin/denials", key=PROJECT_ADMIN).json()["denials"]
    assert [d["request_id"] for d in mine] == [request_id]
    assert _admin(gateway, "/admin/denials", key=OTHER_ADMIN).json()["denials"] == []
    assert _admin(gateway, "/admin/denials", key=OTHER_ADMIN, project="demo").status_code == 403
    assert _admin(gateway, "/admin/denials", budget="other").json()["denials"] == []
    assert _admin(gateway, "/admin/denials", offset="-1").status_code == 400
    assert _admin(gateway, "/admin/denials", since="yesterday").status_code == 400
    assert _admin(gateway, "/admin/denials", key=KEY).status_code == 401

    shown = CliRunner().invoke(app, ["events", "--denials", "--ledger", gateway.ledger_url])
    assert shown.exit_code == 0, shown.output
    assert request_id in shown.output and "tight" in shown.output and "gpt-4o-mini" in shown.output
    as_json = CliRunner().invoke(app, ["events", "--denials", "--json", "--ledger", gateway.ledger_url])
    assert as_json.exit_code == 0, as_json.output
    assert request_id in as_json.output

    # the reports count them beside the calls: one call and one refusal in session s1
    sessions = CliRunner().invoke(app, ["report", "sessions", "--ledger", gateway.ledger_url, "-f", "json"])
    assert sessions.exit_code == 0, sessions.output
    (session,) = json.loads(sessions.output)["rows"]
    assert (session["calls"], session["denials"]) == (1, 1)
    by_key = CliRunner().invoke(
        app, ["report", "chargeback", "--by", "key", "--ledger", gateway.ledger_url, "-f", "json"]
    )
    (line,) = json.loads(by_key.output)["rows"]
    assert (line["key"], line["calls"], line["denials"]) == ("test-key", 1, 1)


def test_an_sdk_refusal_is_recorded(fake, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sdk.db'}"
    guard = tokenward.Guard(url)
    guard.ledger.put_budget(Budget("bob-cap", "user", "total_tokens", Decimal(10)))
    client = guard.wrap(openai.OpenAI(base_url=f"{fake.url}/v1", api_key="sk-upstream-secret", max_retries=0))
    try:
        with guard.session("s-bob", user="bob"), pytest.raises(tokenward.BudgetExceeded):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # type: ignore[arg-type]
        (denial,) = guard.ledger.denials(subject=Subject(user="bob"))
        assert (denial.budget, denial.model, denial.key, denial.subject.user) == (
            "bob-cap",
            "gpt-4o-mini",
            None,
            "bob",
        )
        assert denial.request_id is not None and denial.estimate["output_tokens"] == 20
    finally:
        guard.close()


def test_a_call_rescued_by_degrading_is_no_denial(start_gateway) -> None:
    # as tests/gateway/test_gateway_policies.py: gpt-4o does not fit $0.0001, gpt-4o-mini does
    gateway = start_gateway(
        budgets=[{"name": "usd", "scope": "session", "meter": "cost_usd", "limit": "0.0001"}],
        degrade={"models": {"gpt-4o": "gpt-4o-mini"}},
    )
    reply = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 20},
        headers={"authorization": f"Bearer {KEY}", "x-tokenward-session": "r"},
    )
    assert reply.status_code == 200 and reply.json()["model"] == "gpt-4o-mini"
    ledger = open_ledger(gateway.ledger_url)
    try:
        assert ledger.denials() == []
    finally:
        ledger.close()
