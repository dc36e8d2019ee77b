"""Screenshots of every dashboard page for docs/dashboard.md (run by hand, not by CI).

Fills a fresh SQLite ledger with a small, made-up team's week (budgets charged through the
ledger's reserve and settle, a session that was clamped and cut, another refused), serves the
standalone dashboard over it on a loopback port, signs in with the one-time URL in Debian's
chromium (Playwright) and saves one PNG per page under docs/dashboard/.

    .venv/bin/python scripts/dashboard_screenshots.py
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import uvicorn

from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget, Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.errors import BudgetExceeded
from tokenward.gateway.ui import standalone_app
from tokenward.ledger import open_async_ledger, open_ledger
from tokenward.ledger.records import Denial

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "dashboard"
MODELS = {
    "gpt-4o-mini": (Decimal("0.00000015"), Decimal("0.0000006")),
    "claude-sonnet-4": (Decimal("0.000003"), Decimal("0.000015")),
}


def fill(url: str) -> str:
    """A week of calls; returns a session id worth opening."""
    now = datetime.now(UTC)
    clock = ManualClock(now)
    ledger = open_ledger(url, clock=clock)
    rng = random.Random(4)
    budgets = [
        {
            "name": "team-red-month",
            "scope": "team",
            "id": "red",
            "meter": "cost_usd",
            "limit": 40,
            "window": "month",
        },
        {
            "name": "each-user-daily",
            "scope": "user",
            "meter": "total_tokens",
            "limit": 400000,
            "window": "day",
        },
        {
            "name": "shop-tokens",
            "scope": "project",
            "id": "shop",
            "meter": "total_tokens",
            "limit": 5000000,
            "window": "week",
        },
        {"name": "per-session", "scope": "session", "meter": "total_tokens", "limit": 60000, "mode": "soft"},
    ]
    for spec in budgets:
        ledger.put_budget(Budget.from_dict(spec))
    shown = ""
    moments = sorted(now - timedelta(minutes=rng.randrange(0, 7 * 24 * 60)) for _ in range(400))
    for n, at in enumerate(moments):
        clock.set(at)
        user = rng.choice(["alice", "bob", "carol", "dave"])
        model = rng.choice(list(MODELS))
        session = f"{user}-{at.strftime('%m%d')}-{rng.randrange(3)}"
        tokens_in, tokens_out = rng.randrange(800, 9000), rng.randrange(50, 900)
        rate_in, rate_out = MODELS[model]
        cost = rate_in * tokens_in + rate_out * tokens_out
        subject = Subject(
            project="shop",
            team="red" if user in ("alice", "bob") else "blue",
            user=user,
            agent=rng.choice(["planner", "coder"]),
            session=session,
            tags=(("env", rng.choice(["prod", "staging"])),),
        ).namespaced()
        amounts = {
            "total_tokens": Decimal(tokens_in + tokens_out),
            "cost_usd": cost,
            "input_tokens": Decimal(tokens_in),
            "output_tokens": Decimal(tokens_out),
            "requests": Decimal(1),
        }
        try:
            reservation = ledger.reserve(subject, amounts, idempotency_key=f"shot-{n}")
        except BudgetExceeded as refused:  # recorded as the guard records a refused call
            ledger.record_denial(
                Denial.of(refused, subject, at, model=model, request_id=f"shot-{n}", estimate=amounts)
            )
            continue
        ledger.settle(
            reservation.id,
            UsageEvent(
                request_id=f"shot-{n}",
                at=at,
                subject=subject,
                usage=Usage(input_tokens=tokens_in, output_tokens=tokens_out),
                model=model,
                provider="fake",
                endpoint="openai-chat",
                cost_usd=cost,
                charged=amounts,
            ),
        )
    # one session opened step by step: the context grows, a budget clamps, the stream is cut
    subject = Subject(
        project="shop", team="red", user="alice", agent="coder", session="fix-login-bug"
    ).namespaced()
    context = 1200
    for step in range(8):
        at = now - timedelta(minutes=30 - step * 3)
        clock.set(at)
        out = 400 if step < 6 else 180
        metadata = (
            {"clamped_by": "per-session", "max_output_tokens": 180, "requested_output_tokens": 1024}
            if step >= 6
            else {}
        )
        ledger.settle(
            None,
            UsageEvent(
                request_id=f"step-{step}",
                at=at,
                subject=subject,
                usage=Usage(
                    input_tokens=context, output_tokens=out, cache_read_tokens=max(0, context - 1500)
                ),
                model="claude-sonnet-4",
                cost_usd=Decimal("0.000003") * context + Decimal("0.000015") * out,
                status="cut_off" if step == 7 else "ok",
                metadata=metadata,
            ),
        )
        context += out + 900
        shown = subject.session or ""
    # a session refused by a hard per-session cap: its calls are listed under denials
    ledger.put_budget(
        Budget.from_dict(
            {
                "name": "bob-cap",
                "scope": "session",
                "id": "shop/bob-late",
                "meter": "total_tokens",
                "limit": 5000,
            }
        )
    )
    subject = Subject(
        project="shop", team="red", user="bob", agent="planner", session="bob-late"
    ).namespaced()
    for n in range(3):
        at = now - timedelta(minutes=10 - n * 4)
        clock.set(at)
        amounts = {"total_tokens": Decimal(6000 + 500 * n), "requests": Decimal(1)}
        try:
            ledger.reserve(subject, amounts, idempotency_key=f"late-{n}")
        except BudgetExceeded as refused:
            ledger.record_denial(
                Denial.of(refused, subject, at, model="gpt-4o-mini", request_id=f"late-{n}", estimate=amounts)
            )
    clock.set(now)
    ledger.close()
    return shown


def main() -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/ledger.db"
        session = fill(url)
        app, token = standalone_app(open_async_ledger(url), who="docs")
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=8799, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = "http://127.0.0.1:8799"
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{base}/ui/signin")
                page.screenshot(path=str(OUT / "signin.png"))
                page.goto(f"{base}/ui/signin?token={token}")
                for name, path in [
                    ("overview", "/ui?by=user"),
                    ("budgets", "/ui/budgets"),
                    ("sessions", "/ui/sessions?days=7"),
                    ("session", f"/ui/session?id={session}"),
                    ("events", "/ui/events?days=7"),
                    ("denials", "/ui/denials"),
                    ("keys", "/ui/keys"),
                ]:
                    page.goto(base + path)
                    page.wait_for_timeout(800)  # charts drawn
                    page.screenshot(path=str(OUT / f"{name}.png"), full_page=name in ("overview", "session"))
                    print("saved", OUT / f"{name}.png")
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)


if __name__ == "__main__":
    main()
