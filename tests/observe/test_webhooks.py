"""Webhook delivery against a real HTTP receiver that fails on purpose: nothing lost, nothing
duplicated, every signature verifiable."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.observe.helpers import T0, event, memory_guard
from tests.support.servers import ThreadedServer, free_port
from tokenward.core.budgets import Budget
from tokenward.core.windows import Window
from tokenward.guard import Guard
from tokenward.observe import Alerts, Backoff, Webhook, sign, verify
from tokenward.observe.webhooks import alert_body

SECRET = "whsec_" + base64.b64encode(b"a shared secret of 32 bytes ok!!").decode()


class Receiver:
    """A webhook endpoint that fails the first ``fail_first`` attempts of every alert, answers 503
    to every ``flaky``-th request, and sleeps past the sender's timeout once."""

    def __init__(self, *, fail_first: int = 2, flaky: int = 3, slow_once: bool = True) -> None:
        self.fail_first = fail_first
        self.flaky = flaky
        self.slow_once = slow_once
        self.requests = 0
        self.attempts: Counter[str] = Counter()
        self.accepted: list[str] = []
        self.bad_signatures = 0
        self.bodies: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        if not verify(SECRET, dict(request.headers), body):
            with self.lock:
                self.bad_signatures += 1
            return Response(status_code=401)
        ident = request.headers["webhook-id"]
        with self.lock:
            self.requests += 1
            self.attempts[ident] += 1
            count, number = self.attempts[ident], self.requests
            slow = self.slow_once and count == self.fail_first + 1
            if slow:
                self.slow_once = False
        if count <= self.fail_first:
            return Response("not yet", status_code=500)
        if self.flaky and number % self.flaky == 0:
            return Response("busy", status_code=503)
        if slow:
            await asyncio.sleep(1.0)  # the sender gives up first: this attempt is not accepted
            return Response("too late", status_code=500)
        with self.lock:
            if ident in self.bodies:  # a receiver drops repeats by webhook-id
                return Response("already have it", status_code=200)
            self.accepted.append(ident)
            self.bodies[ident] = body
        return Response(status_code=204)


def _make_alerts(guard: Guard, users: int) -> None:
    """Three thresholds crossed by each of ``users`` users: 3 * users alerts."""
    for u in range(users):
        guard.ledger.put_budget(
            Budget(f"daily-{u}", "user", "cost_usd", Decimal(1), subject_id=f"user-{u}", window=Window("day"))
        )
    for step, cost in enumerate(("0.5", "0.3", "0.2")):
        for u in range(users):
            guard.charge(
                event(f"u{u}-{step}", T0 + timedelta(minutes=step), user=f"user-{u}", session=None, cost=cost)
            )


def test_signature_follows_standard_webhooks() -> None:
    body = b'{"a":1}'
    signature = sign(SECRET, "msg_1", 1700000000, body)
    assert signature.startswith("v1,")
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": signature}
    assert verify(SECRET, headers, body, now=1700000100)
    assert not verify(SECRET, headers, body + b" ", now=1700000100)  # tampered body
    assert not verify("whsec_" + base64.b64encode(b"other").decode(), headers, body, now=1700000100)
    assert not verify(SECRET, headers, body, now=1700000000 + 301)  # replayed later than 5 minutes
    assert not verify(SECRET, {"webhook-id": "msg_1"}, body, now=1700000000)
    rotated = {**headers, "webhook-signature": f"v1,bm90IHRoaXMgb25l {signature}"}
    assert verify(SECRET, rotated, body, now=1700000000)


def test_plain_string_secrets_sign_their_utf8_bytes() -> None:
    import hashlib
    import hmac

    digest = hmac.new(b"s3cret", b"id.5.body", hashlib.sha256).digest()
    assert sign("s3cret", "id", 5, b"body") == "v1," + base64.b64encode(digest).decode()


@pytest.mark.slow
def test_delivery_to_a_failing_receiver_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    receiver = Receiver()
    server = ThreadedServer(receiver.app)
    server.start()
    try:
        guard, _ = memory_guard()
        alerts = Alerts(
            guard.ledger,
            tmp_path / "alerts.db",
            webhooks=[Webhook(f"{server.url}/hook", secret=SECRET, name="ops", timeout=0.3)],
            log=False,
            forecast=False,
            backoff=Backoff(base=0.01, cap=0.2, max_attempts=30),
        )
        guard.observers.add(alerts)
        alerts.start(interval=0.05)
        _make_alerts(guard, users=10)
        alerts.flush()
        deadline = time.monotonic() + 60
        while alerts.outbox.counts()["pending"] and time.monotonic() < deadline:
            time.sleep(0.05)
        counts = alerts.outbox.counts()
        stored = {a.id for a in alerts.outbox.alerts()}
        alerts.close()
    finally:
        server.stop()
    assert counts == {"pending": 0, "delivered": 30, "dead": 0}
    assert len(stored) == 30
    assert sorted(receiver.accepted) == sorted(stored)  # every alert, once
    assert len(receiver.accepted) == len(set(receiver.accepted))
    assert receiver.bad_signatures == 0
    assert all(n >= 3 for n in receiver.attempts.values())  # each went through failures first
    # what was accepted is byte for byte the alert's JSON
    sample = next(iter(receiver.bodies.values()))
    assert sample.startswith(b'{"at":"2025-05-15T12:0')


@pytest.mark.slow
def test_a_restart_delivers_what_the_last_process_could_not(tmp_path: Path) -> None:
    port = free_port()  # nobody listens yet: every attempt is refused
    url = f"http://127.0.0.1:{port}/hook"
    guard, _ = memory_guard()
    first = Alerts(
        guard.ledger,
        tmp_path / "alerts.db",
        webhooks=[Webhook(url, secret=SECRET, name="ops", timeout=1)],
        log=False,
        forecast=False,
        background=False,
        backoff=Backoff(base=0.01, cap=0.05),
    )
    guard.observers.add(first)
    _make_alerts(guard, users=4)
    for _ in range(3):
        first.deliver()
        time.sleep(0.06)
    assert first.outbox.counts() == {"pending": 12, "delivered": 0, "dead": 0}
    assert all(d.attempts >= 2 and "ConnectError" in (d.last_error or "") for d in first.outbox.deliveries())
    first.close()  # the process stops with 12 alerts undelivered

    receiver = Receiver(fail_first=1, flaky=0, slow_once=False)
    server = ThreadedServer(receiver.app, port=port)
    server.start()
    try:
        # a new process: the same outbox file and the same webhook, no new alert raised
        second = Alerts(
            guard.ledger,
            tmp_path / "alerts.db",
            webhooks=[Webhook(url, secret=SECRET, name="ops")],
            log=False,
            background=False,
            backoff=Backoff(base=0.01, cap=0.05),
        )
        assert second.dispatcher.drain(timeout=30)
        counts = second.outbox.counts()
        ids = {a.id for a in second.outbox.alerts()}
        second.close()
    finally:
        server.stop()
    assert counts == {"pending": 0, "delivered": 12, "dead": 0}
    assert sorted(receiver.accepted) == sorted(ids) and len(ids) == 12


def test_a_delivery_claimed_by_a_dead_process_is_retried_after_its_lease(tmp_path: Path) -> None:
    now = [100.0]
    sent: list[str] = []
    guard, _ = memory_guard()
    a = Alerts(
        guard.ledger,
        tmp_path / "o.db",
        callbacks=[lambda al: sent.append(al.id)],
        log=False,
        background=False,
        forecast=False,
        time_source=lambda: now[0],
    )
    guard.observers.add(a)
    _make_alerts(guard, users=1)
    claimed = a.outbox.claim(now=now[0], lease=60, sinks=[s.name for s in a.sinks])  # then the process dies
    assert len(claimed) == 3
    assert a.deliver() == 0  # leased: nobody else takes them
    now[0] += 61
    assert a.deliver() == 3 and len(sent) == 3
    a.close()


def test_the_posted_body_is_the_alerts_canonical_json(tmp_path: Path) -> None:
    guard, _ = memory_guard()
    a = Alerts(guard.ledger, tmp_path / "o.db", log=False, background=False, forecast=False)
    guard.observers.add(a)
    _make_alerts(guard, users=1)
    alert = a.outbox.alerts()[0]
    assert alert_body(alert).decode().startswith('{"at":"2025-05-15T12:00:00Z","budget":"daily-0"')
    a.close()
