"""A config reload that changes an upstream must not break the calls already running on it
(issue 17: "a config reload reloads every worker in place, no stream dropped")."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port, serve_gateway
from tokenward.core.budgets import Subject
from tokenward.ledger.sqlite import SQLiteLedger

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, fake_url: str, models: list[str]) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        json.dumps(
            {
                "ledger": "sqlite:///ledger.db",
                "upstreams": [
                    {
                        "name": "fake",
                        "provider": "fake",
                        "base_url": fake_url,
                        "models": models,
                        "api_key_env": "FAKE_UPSTREAM_KEY",
                    }
                ],
                "keys": [{"key": "tw-one", "name": "one", "user": "alice"}],
                "budgets": [{"name": "sess", "scope": "session", "meter": "total_tokens", "limit": 100000}],
            }
        )
    )
    return path


@pytest.mark.parametrize("stream", [True, False])
def test_reload_changing_an_upstream_keeps_its_open_calls(tmp_path: Path, fake, stream: bool) -> None:
    config = _config(tmp_path, fake.url, ["*"])
    port, log = free_port(), tmp_path / "gateway.log"
    proc = serve_gateway(config, port, log)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": stream,
        "fake": {"reply_tokens": 60, "chunk_tokens": 5, "chunk_delay_ms": 150},
    }
    received: list[str] = []
    failed: list[BaseException] = []

    def read() -> None:
        headers = {"authorization": "Bearer tw-one", "x-tokenward-session": "s-reload"}
        try:
            with httpx.stream("POST", url, json=body, headers=headers, timeout=15) as response:
                received.append(str(response.status_code))
                received.extend(response.iter_lines())
        except httpx.HTTPError as exc:
            failed.append(exc)

    try:
        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.8)  # the call is running upstream
        _config(tmp_path, fake.url, ["*", "gpt-*"])  # the upstream changed: a new client for it
        proc.send_signal(signal.SIGHUP)
        reader.join(timeout=30)
        time.sleep(0.5)  # the settle lag
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except Exception:
            proc.kill()
    assert not failed, f"the open call failed across the reload: {failed!r}"
    assert received[0] == "200"
    if stream:
        assert "data: [DONE]" in received
    else:
        assert json.loads("".join(received[1:]))["usage"]["completion_tokens"] == 60
    events = SQLiteLedger(f"sqlite:///{tmp_path / 'ledger.db'}").events(subject=Subject(session="s-reload"))
    assert [(e.status, e.usage.output_tokens) for e in events] == [("ok", 60)]
