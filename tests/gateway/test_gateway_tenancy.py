"""Tenancy: one project's keys, headers and administrators cannot spend, stop or lift another
project's budgets. The values a project's key brings (its user, and the session, agent, task and
user its requests name) are stored as ``<project>/<value>``; a project administrator makes keys
only inside its project and cannot lift a cap a full administrator set.

Every call here is ``gpt-4o-mini`` with ``max_tokens: 20`` against the fake (20 output tokens):
"Say hello" is 6 prompt tokens in the fake's count, so a call charges 26 total tokens and a
clamped call needs at least 6 + 16 (the default minimum output) = 22.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
from typer.testing import CliRunner

from tests.support.fixtures import KEY
from tokenward.cli.main import app
from tokenward.core.budgets import Subject

MESSAGES = [{"role": "user", "content": "Say hello"}]
SHOP_KEY = "tw-shop-key"
ROOT, SHOP_ADMIN = "tw-admin-root", "tw-admin-shop"
KEYS = [
    {"key": KEY, "name": "test-key", "user": "alice", "project": "demo"},
    {"key": SHOP_KEY, "name": "shop-key", "user": "bob", "project": "shop"},
]
ADMIN_KEYS = [{"key": ROOT, "name": "root"}, {"key": SHOP_ADMIN, "name": "shop-admin", "project": "shop"}]


def chat(gateway, key: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20},
        headers={"authorization": f"Bearer {key}", **headers},
    )


def admin(gateway, method: str, path: str, key: str = ROOT, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{gateway.url}{path}", headers={"authorization": f"Bearer {key}"}, **kwargs)


def test_two_projects_sessions_of_one_name_are_two_sessions(start_gateway) -> None:
    """Shop spends and stops its session ``main``; demo's session ``main`` is another one (on the
    branch point it was the same: shop's calls stopped demo's session)."""
    per_session = {"name": "per-session", "scope": "session", "meter": "total_tokens", "limit": 30}
    gateway = start_gateway(budgets=[{**per_session, "action": "stop"}], keys=KEYS)
    main = {"x-tokenward-session": "main"}
    assert chat(gateway, SHOP_KEY, **main).status_code == 200  # 26 of 30
    assert chat(gateway, SHOP_KEY, **main).status_code == 402  # 22 cannot fit in 4: shop's main ends
    assert chat(gateway, SHOP_KEY, **main).status_code == 402  # stopped for good
    assert chat(gateway, KEY, **main).status_code == 200
    observer = gateway.observer()
    assert [(m.scope, m.subject_id) for m in observer.stops()] == [("session", "shop/main")]
    assert [e.subject.session for e in observer.events()] == ["shop/main", "demo/main"]
    assert [e.subject.user for e in observer.events()] == ["shop/bob", "demo/alice"]


def test_allow_user_override_names_users_of_its_own_project_only(start_gateway) -> None:
    """A shop key that may charge its end users charges ``shop/alice`` for ``alice``: demo's
    alice keeps her own allowance of the per-user template (on the branch point shop's call spent
    it, and demo's next call was refused)."""
    each_user = {"name": "each-user", "scope": "user", "meter": "total_tokens", "limit": 30}
    gateway = start_gateway(budgets=[each_user], keys=KEYS, admin_keys=ADMIN_KEYS)
    made = admin(
        gateway, "POST", "/admin/keys", SHOP_ADMIN, json={"name": "shop-web", "allow_user_override": True}
    )
    assert made.status_code == 201, made.text
    override = made.json()["key"]
    assert chat(gateway, override, **{"x-tokenward-user": "alice"}).status_code == 200
    assert chat(gateway, override, **{"x-tokenward-user": "demo/alice"}).status_code == 200
    assert chat(gateway, KEY).status_code == 200  # demo's alice: 26 of her own 30
    users = [e.subject.user for e in gateway.observer().events()]
    assert users == ["shop/alice", "shop/demo/alice", "demo/alice"]
    (alice,) = gateway.observer().balances(Subject(project="demo", user="alice").namespaced())
    assert (alice.subject_id, alice.spent) == ("demo/alice", 26)


def test_a_project_admin_makes_keys_inside_its_project_only(start_gateway) -> None:
    """No org or team, and neither the name nor the user of another tenant's key (on the branch
    point each was created, and its calls charged demo's user and key budgets)."""
    alice_cap = {"name": "alice-cap", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 30}
    gateway = start_gateway(budgets=[alice_cap], keys=KEYS, admin_keys=ADMIN_KEYS)
    refused = {
        "user": {"name": "k1", "user": "alice"},  # demo's user
        "name": {"name": "test-key"},  # demo's key
        "org": {"name": "k2", "org": "acme"},
        "team": {"name": "k3", "team": "core"},
    }
    for param, body in refused.items():
        answer = admin(gateway, "POST", "/admin/keys", SHOP_ADMIN, json=body)
        assert (answer.status_code, answer.json()["error"]["param"]) == (403, param), answer.text
    made = admin(gateway, "POST", "/admin/keys", SHOP_ADMIN, json={"name": "k4", "user": "carol"})
    assert made.status_code == 201 and made.json()["subject"] == {"project": "shop", "user": "shop/carol"}
    assert chat(gateway, made.json()["key"]).status_code == 200
    assert gateway.observer().events()[-1].subject.user == "shop/carol"
    # a full administrator gives org and team; its key's user is namespaced by its project too
    full = admin(gateway, "POST", "/admin/keys", json={"name": "k5", "org": "acme", "project": "shop"})
    assert full.status_code == 201 and full.json()["subject"]["org"] == "acme"
    slash = admin(gateway, "POST", "/admin/keys", json={"name": "k6", "project": "a/b"})
    assert slash.status_code == 400 and slash.json()["error"]["param"] == "project"
    assert [b.spent for b in gateway.observer().balances(Subject(user="alice"))] == [0]


def test_a_project_admin_cannot_lift_a_cap_a_full_admin_set(start_gateway) -> None:
    """A cap over the project set by the config file or a full administrator: the project's
    administrator may not raise, replace, delete or credit it (on the branch point each
    succeeded); a debit, and its own budgets, are still its to change."""
    cap = {"name": "shop-cap", "scope": "project", "id": "shop", "meter": "total_tokens", "limit": 100}
    gateway = start_gateway(budgets=[cap], keys=KEYS, admin_keys=ADMIN_KEYS)
    ops = {"name": "shop-ops", "scope": "project", "id": "shop", "meter": "requests", "limit": 50}
    assert admin(gateway, "POST", "/admin/budgets", json=ops).status_code == 201  # a full admin's
    for name in ("shop-cap", "shop-ops"):
        raised = admin(
            gateway, "POST", "/admin/budgets", SHOP_ADMIN, json={**cap, "name": name, "limit": 10**6}
        )
        assert raised.status_code == 403, raised.text
        assert admin(gateway, "DELETE", f"/admin/budgets/{name}", SHOP_ADMIN).status_code == 403
    meter = {"shop-cap": "total_tokens", "shop-ops": "requests"}
    for name, amount, status in (("shop-cap", "-50", 403), ("shop-ops", "-5", 403), ("shop-cap", "5", 201)):
        body = {"budget": name, "amounts": {meter[name]: amount}, "reason": "goodwill"}
        assert admin(gateway, "POST", "/admin/adjustments", SHOP_ADMIN, json=body).status_code == status
    mine = {"name": "shop-mine", "scope": "project", "id": "shop", "meter": "total_tokens", "limit": 60}
    assert admin(gateway, "POST", "/admin/budgets", SHOP_ADMIN, json=mine).status_code == 201
    assert admin(gateway, "POST", "/admin/budgets", SHOP_ADMIN, json={**mine, "limit": 80}).status_code == 200
    credit = {"budget": "shop-mine", "amounts": {"total_tokens": "-1"}, "reason": "mine"}
    assert admin(gateway, "POST", "/admin/adjustments", SHOP_ADMIN, json=credit).status_code == 201
    assert admin(gateway, "DELETE", "/admin/budgets/shop-mine", SHOP_ADMIN).status_code == 204
    limits = {b.name: b.limit for b in gateway.observer().budgets()}
    assert limits == {"shop-cap": 100, "shop-ops": 50}
    (balance,) = [
        b for b in gateway.observer().balances(Subject(project="shop")) if b.budget.name == "shop-cap"
    ]
    assert balance.spent == 5  # the debit alone


def test_queries_name_values_as_the_gateway_stores_them(start_gateway) -> None:
    """The admin API (and the CLI) take a project's bare values in that project's namespace: a
    project admin's ``?session=main`` is ``shop/main``; a full admin writes the project or the
    stored value."""
    per_session = {"name": "per-session", "scope": "session", "meter": "total_tokens", "limit": 1000}
    gateway = start_gateway(budgets=[per_session], keys=KEYS, admin_keys=ADMIN_KEYS)
    chat(gateway, SHOP_KEY, **{"x-tokenward-session": "main"})
    chat(gateway, KEY, **{"x-tokenward-session": "main"})

    def seen(key: str, **params: str) -> tuple[list[str], list[str]]:
        events = admin(gateway, "GET", "/admin/events", key, params=params).json()["events"]
        balances = admin(gateway, "GET", "/admin/balances", key, params=params).json()["balances"]
        return [e["subject"]["session"] for e in events], [
            f"{b['subject_id']}={b['spent']}" for b in balances
        ]

    assert seen(SHOP_ADMIN, session="main") == (["shop/main"], [])  # the project sees its own events
    assert seen(ROOT, project="shop", session="main") == (["shop/main"], ["shop/main=26"])
    assert seen(ROOT, session="demo/main") == (["demo/main"], ["demo/main=26"])
    assert seen(ROOT, session="main") == ([], ["main=0"])  # no key without a project used "main"


def test_the_example_config_works_unchanged(tmp_path: Path) -> None:
    """``examples/tokenward.yaml`` as shipped: its ``alice-daily-usd`` (``id: alice``, no project
    named) still caps the demo key's alice, stored as ``demo/alice``; the per-session template
    counts ``demo/<session>``; ``tokenward balances --project demo`` shows both."""
    from tests.support.servers import serving
    from tokenward.gateway import GatewayConfig, create_app
    from tokenward.ledger.sqlite import SQLiteLedger

    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "examples" / "tokenward.yaml", tmp_path / "tokenward.yaml")
    config = GatewayConfig.load(tmp_path / "tokenward.yaml")  # its ledger: tmp_path/tokenward.db
    with serving(create_app(config)) as gateway:
        answer = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20},
            headers={"authorization": "Bearer tw-demo-key", "x-tokenward-session": "my-first-session"},
        )
        assert answer.status_code == 200, answer.text
    ledger = f"sqlite:///{tmp_path / 'tokenward.db'}"
    (event,) = SQLiteLedger(ledger).events()
    assert (event.subject.user, event.subject.session) == ("demo/alice", "demo/my-first-session")
    shown = CliRunner().invoke(
        app,
        ["balances", "--ledger", ledger, "--project", "demo", "--user", "alice",
         "--session", "my-first-session", "--json"],
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    rows = {row["budget"]: row for row in json.loads(shown.stdout)}
    assert rows["alice-daily-usd"]["spent"] == str(event.cost_usd) and event.cost_usd > 0
    assert rows["per-session-tokens"]["subject_id"] == "demo/my-first-session"
    assert rows["per-session-tokens"]["spent"] == str(event.charged["total_tokens"])
