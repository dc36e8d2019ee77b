"""The admin API and the CLI's budget and key commands against a running gateway."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from tests.support.fixtures import KEY
from tokenward.cli.main import app
from tokenward.core.budgets import Subject

ADMIN = "tw-admin-root"
PROJECT_ADMIN = "tw-admin-demo"
MESSAGES = [{"role": "user", "content": "Say hello"}]
ADMIN_KEYS = [
    {"key": ADMIN, "name": "root"},
    {"key": PROJECT_ADMIN, "name": "demo-admin", "project": "demo"},
]


def admin(gateway, method: str, path: str, key: str = ADMIN, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{gateway.url}{path}", headers={"authorization": f"Bearer {key}"}, **kwargs)


def chat(gateway, key: str = KEY, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20},
        headers={"authorization": f"Bearer {key}", **headers},
    )


def test_admin_routes_need_an_admin_key(start_gateway) -> None:
    gateway = start_gateway(admin_keys=ADMIN_KEYS)
    assert httpx.get(f"{gateway.url}/admin/budgets").status_code == 401
    assert (
        admin(gateway, "GET", "/admin/budgets", key=KEY).status_code == 401
    )  # a virtual key is no admin key
    assert admin(gateway, "GET", "/admin/openapi.json").json()["openapi"].startswith("3.")


def test_a_budget_created_through_the_api_applies_at_once_and_is_audited(start_gateway) -> None:
    gateway = start_gateway(admin_keys=ADMIN_KEYS)
    assert chat(gateway, **{"x-tokenward-session": "s-a"}).status_code == 200
    created = admin(
        gateway,
        "POST",
        "/admin/budgets",
        json={"name": "tight", "scope": "session", "meter": "total_tokens", "limit": 30},
    )
    assert created.status_code == 201
    assert chat(gateway, **{"x-tokenward-session": "s-a"}).status_code == 200  # 26 of 30... the 2nd call
    denied = chat(gateway, **{"x-tokenward-session": "s-a"})
    assert denied.status_code == 402 and denied.json()["error"]["budget"]["budget"] == "tight"
    credit = admin(
        gateway,
        "POST",
        "/admin/adjustments",
        json={
            "budget": "tight",
            "subject_id": "demo/s-a",  # the session as the gateway stores it for project demo
            "amounts": {"total_tokens": "-26"},
            "reason": "goodwill",
        },
    )
    assert credit.status_code == 201
    assert chat(gateway, **{"x-tokenward-session": "s-a"}).status_code == 200  # the credit made room
    balances = admin(gateway, "GET", "/admin/balances", params={"project": "demo", "session": "s-a"}).json()[
        "balances"
    ]
    assert [b["spent"] for b in balances if b["name"] == "tight"] == ["26"]  # 26 + 26 - 26
    entries = admin(gateway, "GET", "/admin/audit").json()["entries"]
    assert [e["action"] for e in entries] == ["budget.put", "adjustment"]
    assert (
        entries[0]["actor"] == "root"
        and entries[0]["before"] is None
        and entries[0]["after"]["limit"] == "30"
    )
    assert admin(gateway, "DELETE", "/admin/budgets/tight").status_code == 204
    assert admin(gateway, "GET", "/admin/budgets/tight").status_code == 404


def test_keys_are_shown_once_work_at_once_and_revoke(start_gateway) -> None:
    gateway = start_gateway(admin_keys=ADMIN_KEYS)
    created = admin(
        gateway, "POST", "/admin/keys", json={"name": "ci-bot", "user": "robot", "project": "demo"}
    )
    assert created.status_code == 201
    secret, key_id = created.json()["key"], created.json()["id"]
    assert all(
        "key" not in k and "key_sha256" not in k for k in admin(gateway, "GET", "/admin/keys").json()["keys"]
    )
    assert chat(gateway, key=secret).status_code == 200
    assert gateway.observer().events()[-1].subject.user == "demo/robot"
    revoked = admin(gateway, "DELETE", f"/admin/keys/{key_id}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert chat(gateway, key=secret).status_code == 401
    audit = [e["action"] for e in admin(gateway, "GET", "/admin/audit").json()["entries"]]
    assert audit == ["key.create", "key.revoke"]
    assert secret not in json.dumps(admin(gateway, "GET", "/admin/audit").json())


def test_a_project_admin_sees_and_changes_only_its_project(start_gateway) -> None:
    gateway = start_gateway(admin_keys=ADMIN_KEYS)
    admin(
        gateway,
        "POST",
        "/admin/budgets",
        json={"name": "org-wide", "scope": "org", "id": "acme", "meter": "cost_usd", "limit": 100},
    )
    mine = {"name": "demo-usd", "scope": "project", "id": "demo", "meter": "cost_usd", "limit": 10}
    assert admin(gateway, "POST", "/admin/budgets", key=PROJECT_ADMIN, json=mine).status_code == 201
    other = {"name": "x", "scope": "user", "id": "alice", "meter": "cost_usd", "limit": 1}
    assert admin(gateway, "POST", "/admin/budgets", key=PROJECT_ADMIN, json=other).status_code == 403
    names = [b["name"] for b in admin(gateway, "GET", "/admin/budgets", key=PROJECT_ADMIN).json()["budgets"]]
    assert names == ["demo-usd"]
    assert admin(gateway, "DELETE", "/admin/budgets/org-wide", key=PROJECT_ADMIN).status_code == 404
    assert (
        admin(
            gateway, "POST", "/admin/keys", key=PROJECT_ADMIN, json={"name": "k", "project": "other"}
        ).status_code
        == 403
    )
    made = admin(gateway, "POST", "/admin/keys", key=PROJECT_ADMIN, json={"name": "k2"}).json()
    assert made["project"] == "demo"
    chat(gateway)  # alice, project demo
    chat(gateway, key="tw-admin-key")  # ops, no project
    events = admin(gateway, "GET", "/admin/events", key=PROJECT_ADMIN).json()["events"]
    assert [e["subject"].get("project") for e in events] == ["demo"]
    assert (
        admin(gateway, "GET", "/admin/events", key=PROJECT_ADMIN, params={"project": "other"}).status_code
        == 403
    )
    # Balances: the project's own budgets only, not the org's or a user's that also apply.
    seen = admin(
        gateway, "GET", "/admin/balances", key=PROJECT_ADMIN, params={"org": "acme", "user": "alice"}
    )
    assert [b["name"] for b in seen.json()["balances"]] == ["demo-usd"]
    # Adjustments: by the name of an owned budget; a subject would reach the org's budget too.
    credit = {"amounts": {"cost_usd": "-1"}, "reason": "goodwill"}
    by_subject = {**credit, "subject": {"project": "demo", "org": "acme"}}
    assert admin(gateway, "POST", "/admin/adjustments", key=PROJECT_ADMIN, json=by_subject).status_code == 403
    by_other_name = {**credit, "budget": "org-wide"}
    assert (
        admin(gateway, "POST", "/admin/adjustments", key=PROJECT_ADMIN, json=by_other_name).status_code == 404
    )
    by_name = {**credit, "budget": "demo-usd", "subject_id": "demo"}
    assert admin(gateway, "POST", "/admin/adjustments", key=PROJECT_ADMIN, json=by_name).status_code == 201


def test_malformed_admin_requests_get_400(start_gateway) -> None:
    gateway = start_gateway(admin_keys=ADMIN_KEYS)
    for body in (
        b"{nope",
        b"[]",
        json.dumps({"scope": "session"}).encode(),
        json.dumps({"scope": "galaxy", "meter": "x", "limit": 1}).encode(),
    ):
        response = admin(gateway, "POST", "/admin/budgets", content=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["message"]
    assert admin(gateway, "GET", "/admin/events", params={"limit": "lots"}).status_code == 400
    assert (
        admin(gateway, "POST", "/admin/adjustments", json={"amounts": {}, "reason": "x"}).status_code == 400
    )


def test_cli_budget_and_key_commands_through_the_api(start_gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = start_gateway(admin_keys=ADMIN_KEYS)
    monkeypatch.setenv("TOKENWARD_GATEWAY", gateway.url)
    monkeypatch.setenv("TOKENWARD_ADMIN_KEY", ADMIN)
    runner = CliRunner()
    result = runner.invoke(app, ["budgets", "set", "user=alice:total_tokens=30", "--name", "alice-cap"])
    assert result.exit_code == 0, result.output
    assert chat(gateway).status_code == 200
    assert chat(gateway).status_code == 402  # the gateway saw the CLI's budget at once
    listed = json.loads(runner.invoke(app, ["budgets", "list", "--json"]).stdout)
    assert [b["name"] for b in listed["budgets"]] == ["alice-cap"]
    made = json.loads(runner.invoke(app, ["keys", "create", "bot", "--user", "robot", "--json"]).stdout)
    assert chat(gateway, key=made["key"]).status_code == 200
    assert runner.invoke(app, ["keys", "revoke", made["id"]]).exit_code == 0
    assert chat(gateway, key=made["key"]).status_code == 401
    assert runner.invoke(app, ["budgets", "delete", "alice-cap"]).exit_code == 0
    bad = runner.invoke(app, ["budgets", "delete", "nope"])
    assert bad.exit_code == 2 and "404" in bad.output and "Traceback" not in bad.output


def test_the_config_file_owns_the_budgets_it_wrote(tmp_path, fake) -> None:
    """A budget removed from the file goes at the next reload (and restart); one created through
    the admin API stays, though the file never named it."""
    import yaml

    from tests.support.servers import serving
    from tokenward.gateway import GatewayConfig, create_app

    path = tmp_path / "tokenward.yaml"

    def write(budgets: list[dict]) -> None:
        path.write_text(
            yaml.safe_dump(
                {
                    "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
                    "upstreams": [
                        {
                            "name": "fake",
                            "provider": "fake",
                            "base_url": fake.url,
                            "api_key_env": "FAKE_UPSTREAM_KEY",
                        }
                    ],
                    "keys": [{"key": KEY, "name": "k", "user": "alice"}],
                    "admin_keys": [{"key": ADMIN, "name": "root"}],
                    "budgets": budgets,
                }
            )
        )

    tiny = {"name": "tiny", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 10}
    roomy = {"name": "roomy", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 100000}
    write([tiny, roomy])
    with serving(create_app(GatewayConfig.load(path), config_path=path)) as server:
        gateway = type("G", (), {"url": server.url})()
        assert chat(gateway).status_code == 402  # tiny
        made = {"name": "by-api", "scope": "org", "id": "acme", "meter": "cost_usd", "limit": 5}
        assert admin(gateway, "POST", "/admin/budgets", json=made).status_code == 201
        write([roomy])
        assert admin(gateway, "POST", "/admin/reload").status_code == 200
        assert chat(gateway).status_code == 200
        names = [b["name"] for b in admin(gateway, "GET", "/admin/budgets").json()["budgets"]]
        assert sorted(names) == ["by-api", "roomy"]
        entries = admin(gateway, "GET", "/admin/audit").json()["entries"]
        assert ("(config file)", "budget.delete", "tiny") in {
            (e["actor"], e["action"], e["target"]) for e in entries
        }
    write([])  # a restart on an emptied file: the file's budget goes, the API's stays
    with serving(create_app(GatewayConfig.load(path), config_path=path)) as server:
        gateway = type("G", (), {"url": server.url})()
        names = [b["name"] for b in admin(gateway, "GET", "/admin/budgets").json()["budgets"]]
        assert names == ["by-api"]


def test_instants_outside_utcs_range_are_a_400(start_gateway) -> None:
    """``0001-01-01T00:00:00+00:01`` is a valid ISO 8601 instant that falls before year 1 in UTC."""
    gateway = start_gateway(admin_keys=ADMIN_KEYS)
    for params in ({"since": "0001-01-01T00:00:00+00:01"}, {"until": "9999-12-31T23:59:59-00:01"}):
        answer = admin(gateway, "GET", "/admin/events", params=params)
        assert (
            answer.status_code == 400 and "cannot be represented in UTC" in answer.json()["error"]["message"]
        )
    assert admin(gateway, "GET", "/admin/events", params={"since": "yesterday"}).status_code == 400


def test_admin_inputs_are_checked_before_they_reach_the_ledger(start_gateway) -> None:
    """Amounts within range (at most 10^15, 12 decimal places), known meters, well-formed
    subjects, string ids, text without control characters: each a 400 naming the field (on the
    branch point each was accepted: ``1e999999`` stored as a lossy decimal, an integer id ignored so
    a retried request applied twice)."""
    cap = {"name": "cap", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 100}
    gateway = start_gateway(budgets=[cap], admin_keys=ADMIN_KEYS)

    def adjust(**body) -> httpx.Response:
        return admin(gateway, "POST", "/admin/adjustments", json={"reason": "test", **body})

    by_name = {"budget": "cap", "amounts": {"total_tokens": "10"}}
    refused = {
        "amounts.total_tokens": [
            {**by_name, "amounts": {"total_tokens": "1e999999"}},
            {**by_name, "amounts": {"total_tokens": "1000000000000001"}},  # 10^15 + 1
            {**by_name, "amounts": {"total_tokens": "0.0000000000001"}},  # 13 places
            {**by_name, "amounts": {"total_tokens": True}},
        ],
        "amounts": [
            {**by_name, "amounts": {"cost_usd": "-1"}},  # not the budget's meter
            {"subject": {"user": "alice"}, "amounts": {"tokens": "-1"}},  # no such meter
        ],
        "subject": [
            {"subject": {"usr": "alice"}, "amounts": {"total_tokens": "-1"}},
            {"subject": {"user": 5}, "amounts": {"total_tokens": "-1"}},
            {"subject": {}, "amounts": {"total_tokens": "-1"}},
            {"subject": "alice", "amounts": {"total_tokens": "-1"}},
        ],
        "id": [{**by_name, "id": 7}],
        "subject_id": [{**by_name, "subject_id": 7}],
        "reason": [{**by_name, "reason": "nul \x00 byte"}],
        "budget": [{**by_name, "budget": 7}],
    }
    for param, bodies in refused.items():
        for body in bodies:
            answer = adjust(**body)
            assert (answer.status_code, answer.json()["error"]["param"]) == (400, param), (body, answer.text)
    as_number = b'{"budget": "cap", "amounts": {"total_tokens": 1e999999}, "reason": "x"}'
    assert admin(gateway, "POST", "/admin/adjustments", content=as_number).status_code == 400
    huge = {**cap, "name": "huge", "limit": "1e999999"}
    assert admin(gateway, "POST", "/admin/budgets", json=huge).status_code == 400
    nul = {**cap, "name": "nul", "id": "al\x00ice"}
    assert admin(gateway, "POST", "/admin/budgets", json=nul).status_code == 400
    assert admin(gateway, "POST", "/admin/keys", json={"name": "k\x00"}).status_code == 400
    assert admin(gateway, "GET", "/admin/events", params={"user": "a\x00"}).status_code == 400
    # a retried request with a string id is applied once
    assert [adjust(**by_name, id="retry-1").status_code for _ in range(2)] == [201, 201]
    (balance,) = gateway.observer().balances(Subject(user="alice"))
    assert balance.spent == 10
    assert len(gateway.observer().adjustments()) == 1


@pytest.mark.postgres
def test_a_postgresql_ledger_error_is_never_answered(start_gateway, tmp_path) -> None:
    """On PostgreSQL an out-of-range amount or a NUL byte is a 400 before the store sees it (on
    the branch point: 503 with the raw database error and the ledger URL), and a real store
    failure is a 503 that names neither."""
    import psycopg

    from tests.ledger.backends import BACKENDS, POSTGRES_URL, require_available

    require_available(BACKENDS["postgres"])
    url = BACKENDS["postgres"].make_url(tmp_path)
    try:
        gateway = start_gateway(
            ledger=url,
            budgets=[{"name": "cap", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 100}],
            admin_keys=ADMIN_KEYS,
        )
        body = {"budget": "cap", "amounts": {"total_tokens": "1e999999"}, "reason": "x"}
        answers = [
            admin(gateway, "POST", "/admin/adjustments", json=body),
            admin(
                gateway,
                "POST",
                "/admin/adjustments",
                json={**body, "amounts": {"total_tokens": "1"}, "reason": "\x00"},
            ),
            admin(gateway, "POST", "/admin/keys", json={"name": "k\x00"}),
        ]
        assert [a.status_code for a in answers] == [400, 400, 400]
        schema = url.split("schema=")[1].split("&")[0]
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{schema}".adjustments CASCADE')  # this test's own schema
        failed = admin(gateway, "POST", "/admin/adjustments", json={**body, "amounts": {"total_tokens": "1"}})
        answers.append(failed)
        assert failed.status_code == 503 and failed.json()["error"]["code"] == "ledger_unavailable"
        for answer in answers:
            assert "postgresql://" not in answer.text and POSTGRES_URL not in answer.text
            assert "adjustments" not in answer.text and "numeric" not in answer.text
    finally:
        BACKENDS["postgres"].cleanup(url)


def test_whole_number_parameters_other_than_plain_digits_are_a_400(start_gateway) -> None:
    """``limit``, ``offset`` and ``after`` are whole numbers written in ASCII digits: ``²`` (which
    ``str.isdigit`` accepts and ``int`` refuses), 5,000 digits (past Python's int conversion limit)
    and 10^23 (past a 64-bit database integer) are each a 400 naming the field (on the branch point
    each was a 500)."""
    gateway = start_gateway(admin_keys=ADMIN_KEYS)
    huge = "1" * 5000
    cases = [
        ("/admin/events", "limit", "²"),
        ("/admin/events", "limit", huge),
        ("/admin/denials", "offset", "²"),
        ("/admin/denials", "offset", huge),
        ("/admin/denials", "offset", "1" + "0" * 23),
        ("/admin/audit", "after", "²"),
        ("/admin/audit", "after", huge),
        ("/admin/audit", "after", "1" + "0" * 23),
    ]
    for path, name, value in cases:
        answer = admin(gateway, "GET", path, params={name: value})
        assert answer.status_code == 400, (path, name, value[:10], answer.status_code)
        assert answer.json()["error"]["param"] == name
    assert admin(gateway, "GET", "/admin/denials", params={"offset": "5", "limit": "7"}).status_code == 200
    assert admin(gateway, "GET", "/admin/audit", params={"after": "0"}).status_code == 200
