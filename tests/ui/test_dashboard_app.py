"""The dashboard in-process (no browser): the standalone app's one-time sign-in, its refusal to
bind off loopback without a key, sessions that end when their admin key goes, the shared cookie
secret across two apps on one ledger, and the CSV export's formula quoting."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
from datetime import UTC, datetime
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
