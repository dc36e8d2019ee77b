"""The dashboard in-process (no browser): the standalone app's one-time sign-in, its refusal to
bind off loopback without a key, sessions that end when their admin key goes, the shared cookie
secret across two apps on one ledger, and the CSV export's formula quoting."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from typer.testing import CliRunner

from tokenward.cli.main import app as cli
from tokenward.core.budgets import Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.gateway.config import AdminKeyConfig
from tokenward.gateway.ui import standalone_app
from tokenward.ledger import open_async_ledger


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8787")


def test_the_one_time_sign_in_url_works_once_and_the_key_form_signs_in(tmp_path: Path) -> None:
    async def run() -> None:
        ledger = open_async_ledger(f"sqlite:///{tmp_path / 'l.db'}")
        app, token = standalone_app(ledger, admin_key="k" * 20, who="tester")
        async with _client(app) as first, _client(app) as second:
            assert (await first.get(f"/ui/signin?token={token}")).headers["location"] == "/ui"
            assert (await first.get("/ui")).status_code == 200
            again = await second.get(f"/ui/signin?token={token}")  # used: the form again
            assert again.status_code == 200 and 'id="signin-form"' in again.text
            assert (await second.get("/ui")).status_code == 303
            wrong = await second.post("/ui/signin", data={"key": "x" * 20})
            assert wrong.status_code == 401 and "not an admin key" in wrong.text
            right = await second.post("/ui/signin", data={"key": "k" * 20})
            assert right.status_code == 303 and "k" * 20 not in right.headers["set-cookie"]
            assert (await second.get("/ui")).status_code == 200
        await ledger.close()

    asyncio.run(run())


def test_a_session_ends_with_its_admin_key_and_a_cookie_works_on_another_app_of_the_ledger(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        url = f"sqlite:///{tmp_path / 'l.db'}"
        one, two = open_async_ledger(url), open_async_ledger(url)
        app, token = standalone_app(one, who="tester")
        other, _ = standalone_app(two, who="tester")  # another process on the same ledger
        async with _client(app) as client:
            await client.get(f"/ui/signin?token={token}")
            cookie = client.cookies["tw_ui"]
            async with _client(other) as elsewhere:
                elsewhere.cookies.set("tw_ui", cookie, domain="127.0.0.1", path="/ui")
                assert (await elsewhere.get("/ui/keys")).status_code == 200  # the ledger's secret
                gone = AdminKeyConfig("someone-else", hashlib.sha256(b"x").hexdigest())
                state = other.state.gateway
                state.config = dataclasses.replace(state.config, admin_keys=(gone,))
                other.state.ui_admins = (gone,)
                assert (await elsewhere.get("/ui/keys")).status_code == 303  # its admin is gone
            tampered = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
            client.cookies.set("tw_ui", tampered, domain="127.0.0.1", path="/ui")
            assert (await client.get("/ui/keys")).status_code == 303
        await one.close()
        await two.close()

    asyncio.run(run())


def test_the_csv_export_quotes_what_a_spreadsheet_would_run(tmp_path: Path) -> None:
    async def run() -> None:
        ledger = open_async_ledger(f"sqlite:///{tmp_path / 'l.db'}")
        await ledger.settle(
            None,
            UsageEvent(
                request_id="r1",
                at=datetime.now(UTC),
                subject=Subject(user="=HYPERLINK(1)", session="s"),
                usage=Usage(input_tokens=1, output_tokens=2),
                model="m",
                cost_usd=Decimal("0.5"),
            ),
        )
        app, token = standalone_app(ledger, who="tester")
        async with _client(app) as client:
            await client.get(f"/ui/signin?token={token}")
            csv = (await client.get("/ui/events.csv")).text
            assert "'=HYPERLINK(1)" in csv and ",0.5," in csv and re.search(r"^at,project,user", csv)
        await ledger.close()

    asyncio.run(run())


def test_the_standalone_dashboard_refuses_other_addresses_without_a_key() -> None:
    result = CliRunner().invoke(cli, ["dashboard", "--ledger", "memory://", "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "--admin-key" in result.output
    assert "Traceback" not in result.output


def test_a_cookie_copied_before_sign_out_is_refused_after_it_on_every_app_of_the_ledger(
    tmp_path: Path,
) -> None:
    """Sign-out closes the session id in the ledger, not just in the browser: a copy of the
    cookie (taken before) no longer opens a page, here or on another app over the same ledger."""

    async def run() -> None:
        url = f"sqlite:///{tmp_path / 'l.db'}"
        one, two = open_async_ledger(url), open_async_ledger(url)
        app, token = standalone_app(one, who="tester")
        other, _ = standalone_app(two, who="tester")  # another worker/replica on the same ledger
        async with _client(app) as client, _client(other) as elsewhere:
            await client.get(f"/ui/signin?token={token}")
            cookie = client.cookies["tw_ui"]
            elsewhere.cookies.set("tw_ui", cookie, domain="127.0.0.1", path="/ui")
            page = await elsewhere.get("/ui/keys")
            assert page.status_code == 200  # the copy works before sign-out
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            out = await client.post("/ui/signout", data={"csrf": csrf.group(1)})
            assert out.status_code == 303 and out.headers["location"] == "/ui/signin"
            assert (await elsewhere.get("/ui/keys")).status_code == 303  # the copy is refused
            copied = httpx.Cookies()
            copied.set("tw_ui", cookie, domain="127.0.0.1", path="/ui")
            client.cookies = copied  # and on the app that signed it out
            assert (await client.get("/ui/keys")).status_code == 303
            refused = await elsewhere.post("/ui/signout", data={"csrf": csrf.group(1)})
            assert refused.status_code == 403
        await one.close()
        await two.close()

    asyncio.run(run())


def test_the_overview_lists_the_latest_anomalies_a_detector_recorded_in_the_ledger(tmp_path: Path) -> None:
    """A runaway loop found by the detectors of one process (three calls of session ``s-<b>``
    with one request fingerprint: the loop rule's default of 3 repeats) is kept in the ledger and
    listed, escaped, under the overview's latest anomalies of a dashboard in another process; a
    project admin sees only their project's findings."""
    from tokenward.gateway.ui import data
    from tokenward.ledger import open_ledger
    from tokenward.observe import Anomalies

    url = f"sqlite:///{tmp_path / 'l.db'}"
    writer = open_ledger(url)
    detectors = Anomalies(writer, background=False)
    for project, session in (("acme", "s-<b>"), ("other", "s-other")):
        for i in range(3):
            event = UsageEvent(
                request_id=f"{session}-{i}",
                at=datetime.now(UTC),
                subject=Subject(project=project, user="u", session=session),
                usage=Usage(input_tokens=100, output_tokens=10),
                model="m",
                cost_usd=Decimal("0.01"),
                metadata={"request_fingerprint": "same-call"},
            )
            detectors.on_settle(writer.settle(None, event))
    loops = [f for f in detectors.findings if f.kind == "loop"]
    assert len(loops) == 2  # one per session, found by this process's detectors

    async def run() -> None:
        ledger = open_async_ledger(url)  # another process: it sees the findings in the ledger only
        app, token = standalone_app(ledger, who="tester")
        async with _client(app) as client:
            await client.get(f"/ui/signin?token={token}")
            page = (await client.get("/ui/live/overview")).text
            table = page[page.index('id="anomalies"') : page.index("</table>", page.index('id="anomalies"'))]
            assert table.count("<tr>") == 3  # the header and the two loops
            assert "<td>loop</td>" in table and "s-&lt;b&gt;" in table and "<b>" not in table
            assert "s-other" in table
        scoped = AdminKeyConfig("acme-admin", "0" * 64, project="acme")
        mine = await data.latest_anomalies(ledger, scoped, datetime.now(UTC))
        assert [a.after["kind"] for a in mine] == ["loop"] and "s-other" not in str(mine[0].after)
        await ledger.close()

    asyncio.run(run())
    writer.close()


def test_a_session_the_sdk_closed_shows_as_ended_and_one_still_open_does_not(tmp_path: Path) -> None:
    """Two sessions with a call a moment ago (active by time): the one whose ``guard.session``
    block has ended (its lease released) is ``ended`` on the sessions page of a dashboard in
    another process; the one still inside its block stays ``active``."""
    import tokenward
    from tokenward.gateway.ui import data

    url = f"sqlite:///{tmp_path / 'l.db'}"
    guard = tokenward.Guard(url)

    def call(session: str) -> None:
        event = UsageEvent(
            request_id=f"{session}-1",
            at=datetime.now(UTC),
            subject=Subject(user="u", session=session),
            usage=Usage(input_tokens=10, output_tokens=2),
            model="m",
            cost_usd=Decimal("0.01"),
        )
        guard.ledger.settle(None, event)

    async def statuses() -> dict[str, str]:
        ledger = open_async_ledger(url)  # another process: it reads the ledger only
        root = AdminKeyConfig("root", "0" * 64)
        now = datetime.now(UTC)
        rows = await data.session_rows(ledger, root, now, now - timedelta(days=1))
        app, token = standalone_app(ledger, who="tester")
        async with _client(app) as client:
            await client.get(f"/ui/signin?token={token}")
            page = (await client.get("/ui/sessions")).text
        await ledger.close()
        assert all(r.session in page for r in rows)
        return {r.session: r.status for r in rows}

    with guard.session("s-open"):
        with guard.session("s-closed"):
            call("s-closed")
        call("s-open")
        found = asyncio.run(statuses())
    assert found == {"s-closed": "ended", "s-open": "active"}
    guard.close()


def test_page_and_day_numbers_other_than_plain_digits_show_the_first_page(tmp_path: Path) -> None:
    """``page`` and ``days`` that are not plain ASCII digits (``²``, which ``str.isdigit``
    accepts and ``int`` refuses; 5,000 digits, past Python's int conversion limit) fall back to
    the first page and one day, as any other malformed value does (on the branch point: a 500)."""

    async def run() -> None:
        ledger = open_async_ledger(f"sqlite:///{tmp_path / 'l.db'}")
        app, token = standalone_app(ledger, who="tester")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8787") as client:
            await client.get(f"/ui/signin?token={token}")
            for path, name in (("/ui/events", "page"), ("/ui/denials", "page"), ("/ui/sessions", "days")):
                for value in ("²", "1" * 5000):
                    answer = await client.get(path, params={name: value})
                    assert answer.status_code == 200, (path, value[:5], answer.status_code)
        await ledger.close()

    asyncio.run(run())


def test_a_cookie_or_csrf_token_with_other_than_ascii_characters_is_refused_not_a_500(
    tmp_path: Path,
) -> None:
    """A ``tw_ui`` cookie, or a CSRF token (form field or header), holding ``é``: refused like any
    other wrong one (the sign-in page; a 403 that changes nothing). On the branch point each was a
    500: ``hmac.compare_digest`` raises TypeError on non-ASCII text."""

    async def run() -> None:
        ledger = open_async_ledger(f"sqlite:///{tmp_path / 'l.db'}")
        app, token = standalone_app(ledger, who="tester")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8787") as client:
            stranger = await client.get("/ui/keys", headers=[(b"cookie", "tw_ui=é.é".encode())])
            assert stranger.status_code == 303 and stranger.headers["location"] == "/ui/signin"
            await client.get(f"/ui/signin?token={token}")
            form = await client.post("/ui/keys", data={"csrf": "é", "name": "k1"})
            assert form.status_code == 403 and "CSRF" in form.text
            header = await client.post(
                "/ui/keys", data={"name": "k2"}, headers=[(b"x-csrf-token", "é".encode())]
            )
            assert header.status_code == 403 and "CSRF" in header.text
            assert await ledger.keys() == []  # nothing was changed
        await ledger.close()

    asyncio.run(run())


def test_rotating_an_admin_key_ends_the_dashboard_sessions_signed_in_with_the_old_one(
    tmp_path: Path, fake
) -> None:
    """A leaked admin key is replaced in the config file (same name, new key) and the gateway
    reloaded: the browser signed in with the old key is signed out, one signed in with the new key
    stays in. On the branch point a session was matched by the key's name and project only, so
    the old key's session went on working after the rotation."""
    import yaml

    from tests.support.servers import serving
    from tokenward.gateway import GatewayConfig, create_app

    path = tmp_path / "tokenward.yaml"

    def write(admin_key: str) -> None:
        upstream = {
            "name": "fake",
            "provider": "fake",
            "base_url": fake.url,
            "api_key_env": "FAKE_UPSTREAM_KEY",
        }
        config = {
            "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
            "upstreams": [upstream],
            "keys": [{"key": "tw-user-key-000000", "name": "k", "user": "alice"}],
            "admin_keys": [{"key": admin_key, "name": "root"}],
        }
        path.write_text(yaml.safe_dump(config))

    old, new = "tw-admin-leaked-0000", "tw-admin-rotated-111"
    write(old)
    with (
        serving(create_app(GatewayConfig.load(path), config_path=path)) as server,
        httpx.Client() as leaked,
        httpx.Client() as fresh,
    ):
        leaked.base_url = fresh.base_url = server.url
        assert leaked.post("/ui/signin", data={"key": old}).status_code == 303
        assert leaked.get("/ui/keys").status_code == 200
        write(new)
        reload = httpx.post(f"{server.url}/admin/reload", headers={"authorization": f"Bearer {old}"})
        assert reload.status_code == 200, reload.text
        assert fresh.post("/ui/signin", data={"key": new}).status_code == 303
        assert fresh.get("/ui/keys").status_code == 200
        gone = leaked.get("/ui/keys")
        assert gone.status_code == 303 and gone.headers["location"] == "/ui/signin"


def test_a_project_admin_never_sees_the_alerts_another_project_crossed_under_a_reused_budget_name(
    tmp_path: Path,
) -> None:
    """A full administrator's per-user template ``per-user`` alerts on demo's ``alice`` and is
    deleted; shop's administrator then names a budget of its own ``per-user``. Shop's overview lists
    no alert of demo's (on the branch point the alerts were picked by budget name only, so
    ``demo/alice`` crossing 50 % showed on shop's dashboard); the full administrator still sees it."""
    from tokenward.gateway.app import create_app
    from tokenward.gateway.config import GatewayConfig

    config = GatewayConfig.from_mapping(
        {
            "ledger": f"sqlite:///{tmp_path / 'l.db'}",
            "upstreams": [{"name": "fake", "provider": "fake"}],
            "keys": [{"key": "tw-demo-key-0000", "name": "demo-key", "user": "alice", "project": "demo"}],
            "admin_keys": [
                {"key": "tw-admin-root-000", "name": "root"},
                {"key": "tw-admin-shop-000", "name": "shop-admin", "project": "shop"},
            ],
        }
    )
    root = {"authorization": "Bearer tw-admin-root-000"}
    shop = {"authorization": "Bearer tw-admin-shop-000"}
    template = {"name": "per-user", "scope": "user", "meter": "total_tokens", "limit": 40}
    mine = {"name": "per-user", "scope": "project", "id": "shop", "meter": "total_tokens", "limit": 1000}
    call = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}

    async def alerts(client: httpx.AsyncClient, key: str) -> str:
        client.cookies.clear()
        assert (await client.post("/ui/signin", data={"key": key})).status_code == 303
        page = (await client.get("/ui/live/overview")).text
        start = page.index('id="alerts"')
        return page[start : page.index("</table>", start)]

    async def run() -> None:
        app = create_app(config)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
                assert (await client.post("/admin/budgets", headers=root, json=template)).status_code == 201
                answer = await client.post(
                    "/v1/chat/completions", headers={"authorization": "Bearer tw-demo-key-0000"}, json=call
                )
                assert answer.status_code == 200
                assert (await client.delete("/admin/budgets/per-user", headers=root)).status_code == 204
                assert (await client.post("/admin/budgets", headers=shop, json=mine)).status_code == 201
                assert "demo/alice" in await alerts(client, "tw-admin-root-000")
                assert "demo" not in await alerts(client, "tw-admin-shop-000")

    asyncio.run(run())


def test_signing_in_while_the_ledger_fails_is_a_503_that_names_no_store(tmp_path: Path) -> None:
    """Signing in writes the session to the ledger; when the store fails (here its ``leases`` table
    is gone), the sign-in form and the one-time URL answer 503 "the ledger is unavailable", as
    every other page does, naming neither the store nor its error (on the branch point: a bare 500,
    the traceback in the log)."""
    import sqlite3

    async def run() -> None:
        path = tmp_path / "l.db"
        ledger = open_async_ledger(f"sqlite:///{path}")
        app, token = standalone_app(ledger, admin_key="k" * 20, who="tester")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8787") as client:
            assert (await client.get("/ui/signin")).status_code == 200
            with sqlite3.connect(path) as db:
                db.execute("DROP TABLE leases")
            for answer in (
                await client.post("/ui/signin", data={"key": "k" * 20}),
                await client.get(f"/ui/signin?token={token}"),
            ):
                assert answer.status_code == 503, answer.status_code
                assert "the ledger is unavailable" in answer.text
                assert "leases" not in answer.text and str(path) not in answer.text
                assert "tw_ui" not in answer.headers.get("set-cookie", "")
        await ledger.close()

    asyncio.run(run())
