"""``tokenward serve`` as a real process: SIGHUP reloads the config, SIGTERM lets open streams
finish and settles them before the process exits, and the log lines are JSON with request ids."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port, serve_gateway
from tokenward.core.budgets import Subject
from tokenward.ledger.sqlite import SQLiteLedger

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, fake_url: str, keys: list[dict]) -> Path:
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
                        "api_key_env": "FAKE_UPSTREAM_KEY",
                    }
                ],
                "keys": keys,
                "budgets": [{"name": "sess", "scope": "session", "meter": "total_tokens", "limit": 100000}],
            }
        )
    )
    return path


def _serve(config: Path, port: int, log: Path, workers: int = 1) -> subprocess.Popen:
    return serve_gateway(config, port, log, workers=workers)  # type: ignore[no-any-return]


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_and_sigterm_settles_open_streams(tmp_path: Path, fake, workers: int) -> None:
    config = _config(tmp_path, fake.url, [{"key": "tw-one", "name": "one", "user": "alice"}])
    port, log = free_port(), tmp_path / "gateway.log"
    proc = _serve(config, port, log, workers)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
    try:
        assert httpx.post(url, json=body, headers={"authorization": "Bearer tw-two"}).status_code == 401
        _config(tmp_path, fake.url, [{"key": "tw-two", "name": "two", "user": "bob"}])
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.post(url, json=body, headers={"authorization": "Bearer tw-two"}).status_code != 200:
            assert time.monotonic() < deadline, "the reloaded key was never accepted"
            time.sleep(0.1)
        # every worker reloaded: each new connection (whichever worker accepts it) takes the key
        for _ in range(20):
            assert httpx.post(url, json=body, headers={"authorization": "Bearer tw-two"}).status_code == 200

        gemini = f"http://127.0.0.1:{port}/v1beta/models/gemini-2.0-flash:generateContent?key=tw-two"
        assert httpx.post(gemini, json={"contents": [{"parts": [{"text": "hi"}]}]}).status_code == 200
        # the same key with its name percent-escaped authenticates the same (and is masked the same)
        escaped = gemini.replace("?key=", "?alt=json&%6Bey=")
        assert httpx.post(escaped, json={"contents": [{"parts": [{"text": "hi"}]}]}).status_code == 200

        # a slow stream (about 2 s) is open when SIGTERM arrives
        stream_body = {
            **body,
            "stream": True,
            "fake": {"reply_tokens": 100, "chunk_tokens": 5, "chunk_delay_ms": 100},
        }
        received: list[str] = []

        def read() -> None:
            headers = {"authorization": "Bearer tw-two", "x-tokenward-session": "s-term"}
            with httpx.stream("POST", url, json=stream_body, headers=headers, timeout=30) as response:
                received.extend(response.iter_lines())

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        reader.join(timeout=30)
        assert proc.wait(timeout=40) in (
            0,
            -signal.SIGTERM,
        )  # uvicorn re-raises the signal once it has shut down
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "data: [DONE]" in received  # the open stream finished
    ledger = SQLiteLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    events = ledger.events(subject=Subject(session="s-term"))
    assert len(events) == 1 and events[0].status == "ok" and events[0].usage.output_tokens == 100
    (balance,) = ledger.balances(Subject(session="s-term"))
    assert balance.held == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("logger") == "tokenward.calls"]
    assert calls and all(line["request_id"].startswith("req_") for line in calls)
    assert "sk-upstream-secret" not in log.read_text()
    access = [line["message"] for line in lines if line.get("logger") == "uvicorn.access"]
    assert any("generateContent?key=*** " in line for line in access)  # the virtual key is masked
    assert any("generateContent?alt=json&%6Bey=*** " in line for line in access)
    assert "tw-two" not in log.read_text()
