"""Tag budgets at the gateway (issue 15 item 4): keys carry ``tags``; clients of keys with
``allow_client_tags`` add tags with ``x-tokenward-tags``; header tags add to the key's own and
never replace one; tag values of a project's key are ``<project>/<value>``.

Every call is ``gpt-4o-mini`` with ``max_tokens: 20`` against the fake: "Say hello" is 6 prompt
tokens in the fake's count, so a call charges 26 total tokens, and a second call cannot fit a
30-token budget (4 left, below 6 + the default 16-token minimum output).
"""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.fixtures import KEY
from tokenward.errors import ConfigError
from tokenward.gateway.config import GatewayConfig

MESSAGES = [{"role": "user", "content": "Say hello"}]
ROOT = "tw-admin-root"


def client(gateway, key: str = KEY, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{gateway.url}/v1", max_retries=0, default_headers=headers)


def call(c: openai.OpenAI) -> None:
    c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)


def test_a_keys_own_tag_is_charged_by_a_tag_budget(start_gateway) -> None:
    keys = [
        {"key": KEY, "name": "test-key", "user": "alice", "project": "demo", "tags": {"cost_center": "cc-42"}}
    ]
    budget = {"name": "cc", "scope": "tag:cost_center", "id": "cc-42", "meter": "total_tokens", "limit": 30}
    gateway = start_gateway(budgets=[budget], keys=keys)
    c = client(gateway)
    call(c)
    with pytest.raises(openai.APIStatusError) as denied:
        call(c)
    assert denied.value.status_code == 402
    assert denied.value.body["budget"]["budget"] == "cc"  # type: ignore[index]
    (event,) = gateway.observer().events()
    assert event.subject.tags == (("cost_center", "demo/cc-42"),)  # the project's namespace
    (balance,) = gateway.observer().budget_balances("cc")
    assert (balance.subject_id, balance.spent) == ("cc-42", 26)  # id: cc-42 names it in any project


def test_header_tags_add_to_an_admin_created_keys_tags(start_gateway) -> None:
    """An admin-API key with tags and allow_client_tags; each arm (a template over tag:arm) may
    spend 30 tokens; the header's arm adds to the key's cost centre."""
    arms = {"name": "each-arm", "scope": "tag:arm", "meter": "total_tokens", "limit": 30}
    gateway = start_gateway(budgets=[arms], admin_keys=[{"key": ROOT, "name": "root"}])
    made = httpx.post(
        f"{gateway.url}/admin/keys",
        json={"name": "exp", "project": "lab", "tags": {"cost_center": "cc-9"}, "allow_client_tags": True},
        headers={"authorization": f"Bearer {ROOT}"},
    )
    assert made.status_code == 201, made.text
    assert made.json()["subject"]["tags"] == {"cost_center": "lab/cc-9"}
    secret = made.json()["key"]
    arm_b = client(gateway, secret, **{"x-tokenward-tags": "arm=b, cost_center=cc-9"})
    call(arm_b)
    with pytest.raises(openai.APIStatusError) as denied:
        call(arm_b)
    assert denied.value.status_code == 402
    call(client(gateway, secret, **{"x-tokenward-tags": "arm=a"}))  # another arm has its own 30
    events = gateway.observer().events()
    assert [dict(e.subject.tags) for e in events] == [
        {"arm": "lab/b", "cost_center": "lab/cc-9"},
        {"arm": "lab/a", "cost_center": "lab/cc-9"},
    ]


def test_header_tags_are_refused_where_the_key_does_not_allow_them(start_gateway) -> None:
    keys = [
        {"key": KEY, "name": "test-key", "project": "demo", "tags": {"cost_center": "cc-42"}},
        {"key": "tw-open", "name": "open", "project": "demo", "tags": {"cost_center": "cc-42"}, "allow_client_tags": True},
    ]  # fmt: skip
    gateway = start_gateway(keys=keys)
    with pytest.raises(openai.BadRequestError) as refused:
        call(client(gateway, **{"x-tokenward-tags": "arm=b"}))
    assert refused.value.code == "client_tags_forbidden"
    assert "allow_client_tags" in refused.value.message
    with pytest.raises(openai.BadRequestError) as replaced:  # header tags never replace the key's
        call(client(gateway, "tw-open", **{"x-tokenward-tags": "cost_center=cc-1"}))
    assert "never replace" in replaced.value.message
    with pytest.raises(openai.BadRequestError) as malformed:
        call(client(gateway, "tw-open", **{"x-tokenward-tags": "arm"}))
    assert "NAME=VALUE" in malformed.value.message
    many = ", ".join(f"t{i}=v" for i in range(17))  # one more than a call may add
    with pytest.raises(openai.BadRequestError) as too_many:
        call(client(gateway, "tw-open", **{"x-tokenward-tags": many}))
    assert "at most 16" in too_many.value.message
    call(client(gateway, "tw-open", **{"x-tokenward-tags": ", ".join(f"t{i}=v" for i in range(16))}))
    (event,) = gateway.observer().events()  # only the call within the cap was forwarded
    assert len(event.subject.tags) == 17  # the key's cost_center and the header's 16


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tags", "cost_center=cc-42", "tags must be a mapping"),
        ("tags", {"cost center": "x"}, "tag name"),
        ("allow_client_tags", "yes", "allow_client_tags must be true or false"),
        ("allow_client_budgets", 1, "allow_client_budgets must be true or false"),
    ],
)
def test_a_keys_tags_and_flags_are_checked_at_start(field, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        GatewayConfig.from_mapping(
            {
                "upstreams": [{"name": "f", "provider": "fake"}],
                "keys": [{"key": "k", "name": "k", field: value}],
            }
        )


def raw_call(gateway, headers: list[tuple[str, str]]) -> httpx.Response:
    """A call whose headers may repeat (a proxy or middleware adding a line), which the official
    clients' header mappings cannot send."""
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20}
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers=[("authorization", f"Bearer {KEY}"), *headers],
    )


def test_a_tags_header_sent_on_two_lines_keeps_both(start_gateway) -> None:
    """HTTP reads a comma-separated header sent twice as one list (RFC 9110, 5.3): the second
    line's tag is charged too, never dropped, so its tag budget applies (26 of 30, then 402)."""
    keys = [{"key": KEY, "name": "test-key", "project": "demo", "allow_client_tags": True}]
    arm = {"name": "arm-b", "scope": "tag:arm", "id": "b", "meter": "total_tokens", "limit": 30}
    gateway = start_gateway(budgets=[arm], keys=keys)
    lines = [("x-tokenward-tags", "exp=1"), ("x-tokenward-tags", "arm=b")]
    assert raw_call(gateway, lines).status_code == 200
    denied = raw_call(gateway, lines)
    assert denied.status_code == 402, denied.text
    assert denied.json()["error"]["budget"]["budget"] == "arm-b"
    (event,) = gateway.observer().events()
    assert dict(event.subject.tags) == {"exp": "demo/1", "arm": "demo/b"}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([("x-tokenward-tags", "arm=a, arm=b")], "tag arm given twice"),
        ([("x-tokenward-tags", "arm=a"), ("x-tokenward-tags", "arm=b")], "tag arm given twice"),
        ([("x-tokenward-session", "s-1"), ("x-tokenward-session", "s-2")], "different values"),
        ([("x-tokenward-user", "alice"), ("x-tokenward-user", "bob")], "different values"),
    ],
)
def test_one_attribution_given_two_values_is_refused(start_gateway, lines, message) -> None:
    """Which of two values would be charged is a guess; a 400 says so instead of dropping one."""
    keys = [{"key": KEY, "name": "test-key", "project": "demo", "allow_client_tags": True,
             "allow_user_override": True}]  # fmt: skip
    gateway = start_gateway(keys=keys)
    refused = raw_call(gateway, lines)
    assert refused.status_code == 400, refused.text
    assert message in refused.json()["error"]["message"]
    assert gateway.observer().events() == []
