"""The gateway's ``observe:`` section: ``/metrics`` parsed by the Prometheus client's parser, and
budget alerts delivered as signed webhooks to a real local receiver."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.fixtures import KEY
from tests.support.servers import serving
from tokenward.observe import verify

MESSAGES = [{"role": "user", "content": "Say hello"}]


def test_metrics_are_served_and_parse(start_gateway) -> None:
    gateway = start_gateway(
        budgets=[{"name": "sess", "scope": "session", "meter": "total_tokens", "limit": 100}]
    )
    headers = {"authorization": f"Bearer {KEY}", "x-tokenward-session": "m"}
    for _ in range(5):
        httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20},
            headers=headers,
        )
    text = httpx.get(f"{gateway.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    calls = sum(s.value for s in families["tokenward_calls"].samples if s.name.endswith("_total"))
    assert calls == 3  # 26 + 26 + 26 of 100; the 4th and 5th are refused
    denials = sum(s.value for s in families["tokenward_denials"].samples if s.name.endswith("_total"))
    assert denials == 2


def test_threshold_alerts_reach_a_webhook_signed(start_gateway, tmp_path, monkeypatch) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: Request) -> Response:
        received.append((dict(request.headers), await request.body()))
        return Response(status_code=204)

    monkeypatch.setenv("HOOK_SECRET", "whsec_dGVzdC1zZWNyZXQtZm9yLXRva2Vud2FyZA==")
    with serving(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as receiver:
        gateway = start_gateway(
            budgets=[{"name": "sess", "scope": "session", "meter": "total_tokens", "limit": 100}],
            observe={
                "alerts": {
                    "outbox": str(tmp_path / "alerts.db"),
                    "webhooks": [{"url": f"{receiver.url}/hook", "secret_env": "HOOK_SECRET"}],
                }
            },
        )
        headers = {"authorization": f"Bearer {KEY}", "x-tokenward-session": "w"}
        for _ in range(2):  # 26 then 52 of 100: the 50 % threshold is crossed once
            httpx.post(
                f"{gateway.url}/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20},
                headers=headers,
            )
        deadline = time.monotonic() + 15
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
    assert received, "no alert was delivered"
    headers, body = received[0]
    alert = json.loads(body)
    assert alert["budget"] == "sess" and "0.5" in json.dumps(alert)
    assert verify("whsec_dGVzdC1zZWNyZXQtZm9yLXRva2Vud2FyZA==", headers, body)


def test_metrics_need_a_full_admin_key_while_admin_keys_are_set(start_gateway) -> None:
    """``/metrics`` lists every subject's spend: with ``admin_keys`` it answers a full
    administrator only (on the branch point anyone); ``observe.prometheus.public`` opens it."""
    admin_keys = [{"key": "tw-root", "name": "root"}, {"key": "tw-shop", "name": "shop", "project": "shop"}]
    gateway = start_gateway(admin_keys=admin_keys)
    metrics = f"{gateway.url}/metrics"
    assert httpx.get(metrics).status_code == 401
    assert httpx.get(metrics, headers={"authorization": f"Bearer {KEY}"}).status_code == 401  # a virtual key
    assert httpx.get(metrics, headers={"authorization": "Bearer tw-shop"}).status_code == 403  # one project's
    served = httpx.get(metrics, headers={"authorization": "Bearer tw-root"})
    assert served.status_code == 200 and "tokenward_" in served.text
    assert httpx.get(metrics, headers={"x-admin-key": "tw-root"}).status_code == 200
    public = start_gateway(admin_keys=admin_keys, observe={"prometheus": {"public": True}})
    assert httpx.get(f"{public.url}/metrics").status_code == 200


def test_a_disputed_call_raises_an_alert_when_asked(start_gateway, tmp_path) -> None:
    """``observe.alerts.on_disputed: true``: an upstream reporting zero usage for a 20-token reply
    is charged the 20 tokens, and an alert names the call."""
    outbox = tmp_path / "alerts.db"
    gateway = start_gateway(observe={"alerts": {"outbox": str(outbox), "on_disputed": True, "log": False}})
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "fake": {"usage": "zero"}}
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
    )
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 0
    (event,) = gateway.observer().events()
    assert event.disputed and event.charged["output_tokens"] == 20
    from tokenward.observe.outbox import Outbox

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alerts = [a for a in Outbox(outbox).alerts() if a.kind == "disputed"]
        if alerts:
            break
        time.sleep(0.1)
    (alert,) = alerts
    assert alert.subject_id == event.request_id and alert.to_dict()["type"] == "usage.disputed"
    assert alert.details["disputed"]["output_tokens"] == {
        "reported": 0,
        "counted": 20,
        "charged": 20,
        "ratio": "1",
    }


def test_on_disputed_needs_an_outbox_and_a_boolean() -> None:
    from tokenward.errors import ConfigError
    from tokenward.gateway.observing import parse_observe

    assert parse_observe({"alerts": {"outbox": "a.db", "on_disputed": True}}, None).on_disputed
    assert not parse_observe({"alerts": {"outbox": "a.db"}}, None).on_disputed
    with pytest.raises(ConfigError, match=r"on_disputed needs observe\.alerts\.outbox"):
        parse_observe({"alerts": {"on_disputed": True}}, None)
    with pytest.raises(ConfigError, match="true or false"):
        parse_observe({"alerts": {"outbox": "a.db", "on_disputed": "yes"}}, None)
