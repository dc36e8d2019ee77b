"""The gateway's ``observe:`` section: ``/metrics`` parsed by the Prometheus client's parser, and
budget alerts delivered as signed webhooks to a real local receiver."""

from __future__ import annotations

import json
import time

import httpx
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
