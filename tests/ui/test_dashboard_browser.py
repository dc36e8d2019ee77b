"""The dashboard driven in a real headless Chromium (Debian's ``chromium`` through Playwright for
Python, never a downloaded browser), against ``tokenward serve --workers 2`` on a SQLite ledger,
with calls made by the official ``openai`` client. Assertions are on the DOM.

Skipped when /usr/bin/chromium is absent, required under TOKENWARD_REQUIRE_SERVICES=1 (.ci/run
installs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.servers import free_port
from tokenward.core.budgets import Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.ledger import open_ledger

CHROMIUM = Path("/usr/bin/chromium")
ROOT_KEY = "tw-admin-root-0123456789abcdef"
ALPHA_ADMIN = "tw-admin-alpha-0123456789abcdef"
ALPHA_KEY, BETA_KEY = "tw-alpha-client", "tw-beta-client"

pytestmark = pytest.mark.slow


def expect(locator: Any) -> Any:
    # (the pages' Content-Security-Policy forbids eval, so waits are Playwright's own polling)
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _need_browser() -> None:
    if not CHROMIUM.exists():
        if os.environ.get("TOKENWARD_REQUIRE_SERVICES") == "1":
            pytest.fail(
                "TOKENWARD_REQUIRE_SERVICES=1 but /usr/bin/chromium is not installed (apt-get install chromium)"
            )
        pytest.skip("no /usr/bin/chromium (apt-get install chromium) for the dashboard's browser tests")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


class Gateway:
    def __init__(self, url: str, ledger: str) -> None:
        self.url, self.ledger = url, ledger

    def chat(self, key: str, session: str, *, max_tokens: int = 20) -> Any:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)
        return client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=max_tokens,
            extra_headers={"x-tokenward-session": session},
        )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    _need_browser()
    folder = tmp_path_factory.mktemp("dashboard")
    ledger = f"sqlite:///{folder / 'ledger.db'}"
    config = folder / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "ledger": ledger,
                "upstreams": [{"name": "fake", "provider": "fake"}],
                "keys": [
                    {"key": ALPHA_KEY, "name": "alpha-client", "user": "alice", "project": "alpha"},
                    {"key": BETA_KEY, "name": "beta-client", "user": "bob", "project": "beta"},
                ],
                "admin_keys": [
                    {"key": ROOT_KEY, "name": "root"},
                    {"key": ALPHA_ADMIN, "name": "alpha-admin", "project": "alpha"},
                ],
            }
        )
    )
    port = free_port()
    log = folder / "gateway.log"
    args = [sys.executable, "-m", "tokenward.cli", "serve", "--config", str(config), "--port", str(port)]
    proc = subprocess.Popen([*args, "--workers", "2"], stdout=log.open("a"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (
                f"gateway did not start: {log.read_text()}"
            )
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield Gateway(url, ledger)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _sign_in(browser: Any, gateway: Gateway, key: str) -> Any:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{gateway.url}/ui")
    assert page.url.endswith("/ui/signin")  # not signed in: sent to the sign-in page
    page.fill("#key", key)
    page.click("#signin")
    page.wait_for_selector("#period-today")
    return page


def test_sign_in_and_a_call_shows_up_live_on_the_overview_and_the_session(
    browser: Any, gateway: Gateway
) -> None:
    page = _sign_in(browser, gateway, ROOT_KEY)
    assert page.inner_text("#who").startswith("root")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "tw_ui"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert ROOT_KEY not in cookie["value"] and ROOT_KEY not in page.content()

    answer = gateway.chat(ALPHA_KEY, "live-1")  # served by either worker
    usage = answer.usage
    # no reload: the live part refreshes from the ledger
    page.wait_for_selector("#latest >> text=alpha/live-1", timeout=10_000)
    assert "alpha/live-1" in page.inner_text("#latest")
    expect(page.locator("#period-today .calls")).not_to_have_text("0", timeout=10_000)

    page.click("#latest >> text=alpha/live-1")
    page.wait_for_selector("#steps tr.step")
    step = page.inner_text("#steps tr.step")
    assert str(usage.prompt_tokens) in step and str(usage.completion_tokens) in step
    gateway.chat(ALPHA_KEY, "live-1")  # a second step appears without a reload
    expect(page.locator("#steps tr.step")).to_have_count(2, timeout=10_000)

    page.click("#signout")
    page.wait_for_url("**/ui/signin")
    page.goto(f"{gateway.url}/ui/events")
    assert page.url.endswith("/ui/signin")
    page.context.close()


def test_a_budget_created_in_the_page_refuses_the_next_call(browser: Any, gateway: Gateway) -> None:
    page = _sign_in(browser, gateway, ALPHA_ADMIN)
    page.click("#nav-budgets")
    page.fill("#budget-name", "alpha-tiny")
    page.fill("#budget-limit", "1")
    page.select_option("#budget-meter", "total_tokens")
    page.click("#budget-save")
    page.wait_for_selector("tr.budget-row[data-budget='alpha-tiny']")
    # written through the admin API's code: validated, audited as the dashboard
    ledger = open_ledger(gateway.ledger)
    try:
        budget = ledger.get_budget("alpha-tiny")
        assert budget is not None and budget.scope == "project" and budget.subject_id == "alpha"
        (entry,) = [a for a in ledger.audit_log() if a.target == "alpha-tiny"]
        assert (entry.actor, entry.action, entry.project) == ("dashboard:alpha-admin", "budget.put", "alpha")
    finally:
        ledger.close()

    with pytest.raises(openai.APIStatusError) as refused:
        gateway.chat(ALPHA_KEY, "after-budget")
    assert refused.value.status_code == 402 and "alpha-tiny" in str(refused.value)

    # a bad budget is refused with the admin API's message, nothing written
    page.fill("#budget-name", "bad")
    page.fill("#budget-limit", "lots")
    page.click("#budget-save")
    assert "limit" in page.inner_text("#error")
    assert page.locator("tr.budget-row[data-budget='bad']").count() == 0

    page.click("#nav-denials")
    page.wait_for_selector("#denials td.budget >> text=alpha-tiny", timeout=10_000)

    page.click("#nav-budgets")
    page.click("tr.budget-row[data-budget='alpha-tiny'] button.danger")
    page.wait_for_selector("#budgets")
    assert page.locator("tr.budget-row[data-budget='alpha-tiny']").count() == 0
    page.context.close()


def test_a_project_admin_sees_only_its_project(browser: Any, gateway: Gateway) -> None:
    gateway.chat(BETA_KEY, "beta-secret")
    gateway.chat(ALPHA_KEY, "alpha-own")
    page = _sign_in(browser, gateway, ALPHA_ADMIN)
    page.goto(f"{gateway.url}/ui/events")
    events = page.inner_text("#events")
    assert "alpha/alpha-own" in events and "beta" not in events
    page.goto(f"{gateway.url}/ui/sessions")
    assert "beta" not in page.inner_text("#sessions")
    # editing the URL reaches nothing of another project
    response = page.goto(f"{gateway.url}/ui/session?id=beta/beta-secret")
    assert response is not None and response.status == 404
    assert "beta-secret" not in page.content().replace("no such session", "")
    response = page.goto(f"{gateway.url}/ui/events?project=beta")
    assert "beta/" not in page.inner_text("#events")
    csv = page.request.get(f"{gateway.url}/ui/events.csv?project=beta&user=bob").text()
    assert "beta" not in csv
    page.goto(f"{gateway.url}/ui/keys")
    assert "beta-client" not in page.inner_text("#keys")
    page.context.close()


def test_a_hostile_session_id_shows_as_text_and_no_dialog_fires(browser: Any, gateway: Gateway) -> None:
    hostile = "<script>alert(1)</script>"
    ledger = open_ledger(gateway.ledger)  # as an SDK process would write it
    try:
        ledger.settle(
            None,
            UsageEvent(
                request_id="req-hostile",
                at=datetime.now(UTC),
                subject=Subject(user="mallory", session=hostile),
                usage=Usage(input_tokens=3, output_tokens=2),
                model='"><img src=x onerror=alert(2)>',
                cost_usd=Decimal("0.000001"),
            ),
        )
    finally:
        ledger.close()
    page = _sign_in(browser, gateway, ROOT_KEY)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.wait_for_selector(f"#latest >> text={hostile}", timeout=10_000)
    page.goto(f"{gateway.url}/ui/sessions")
    page.click(f"#sessions >> text={hostile}")
    page.wait_for_selector("#session-id")
    assert page.inner_text("#session-id") == hostile
    page.goto(f"{gateway.url}/ui/events")
    assert hostile in page.inner_text("#events")
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.locator("main script:not([type='application/json'])").count() == 0
    page.context.close()


def test_a_cross_origin_post_without_the_token_is_refused_and_changes_nothing(
    browser: Any, gateway: Gateway
) -> None:
    page = _sign_in(browser, gateway, ROOT_KEY)
    ledger = open_ledger(gateway.ledger)
    try:
        before = [b.to_dict() for b in ledger.budgets()]
        # another origin on the same host (so the SameSite cookie is sent): a page with a form
        evil = f"http://127.0.0.1:{free_port()}/"
        page.route(
            evil,
            lambda route: route.fulfill(
                content_type="text/html",
                body=f'<form method="post" action="{gateway.url}/ui/budgets">'
                '<input name="name" value="evil"><input name="scope" value="user">'
                '<input name="meter" value="total_tokens"><input name="limit" value="0">'
                '<button id="go">go</button></form>',
            ),
        )
        page.goto(evil)
        with page.expect_response(f"{gateway.url}/ui/budgets") as answer:
            page.click("#go")
        assert answer.value.status == 403
        # the cookie alone (no token), even from this origin, is refused too
        cookie = next(c for c in page.context.cookies() if c["name"] == "tw_ui")
        forged = httpx.post(
            f"{gateway.url}/ui/keys",
            data={"name": "forged"},
            cookies={"tw_ui": cookie["value"]},
        )
        assert forged.status_code == 403
        assert [b.to_dict() for b in ledger.budgets()] == before
        assert all(k.name != "forged" for k in ledger.keys())  # noqa: SIM118 (virtual keys)
    finally:
        ledger.close()
    page.context.close()


def test_keys_are_created_once_shown_and_revoked(browser: Any, gateway: Gateway) -> None:
    page = _sign_in(browser, gateway, ROOT_KEY)
    page.click("#nav-keys")
    page.fill("#key-name", "made-in-page")
    page.fill("#key-user", "carol")
    page.fill("#key-project", "alpha")
    page.click("#key-save")
    secret = page.inner_text("#new-key")
    assert secret.startswith("tw-")
    assert gateway.chat(secret, "carol-1").usage.total_tokens > 0  # the new key works
    page.goto(f"{gateway.url}/ui/keys")
    assert secret not in page.content()  # shown once only
    row = page.locator("#keys tr", has_text="made-in-page")
    row.locator("button.danger").click()
    page.wait_for_selector("#keys")
    assert page.locator("#keys tr", has_text="made-in-page").locator(".state").inner_text() == "revoked"
    with pytest.raises(openai.AuthenticationError):
        gateway.chat(secret, "carol-2")
    page.context.close()
