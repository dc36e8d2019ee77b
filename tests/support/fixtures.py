"""Fixtures shared by the suites: the fake provider and the gateway, each on a real socket."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import ThreadedServer, serving
from tokenward.fake import FakeSettings
from tokenward.fake import create_app as create_fake
from tokenward.gateway import GatewayConfig, create_app
from tokenward.gateway.relay import GatewayState
from tokenward.ledger.sqlite import SQLiteLedger

KEY = "tw-test-key"
UPSTREAM_KEY = "sk-upstream-secret"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedServer]:
    """The fake provider on a socket; it only accepts the upstream key the gateway must send."""
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    with serving(create_fake(FakeSettings(reply_tokens=20, api_key=UPSTREAM_KEY))) as server:
        yield server


@dataclass
class Gateway:
    """A running gateway and what tests need to look at its ledger."""

    server: ThreadedServer
    state: GatewayState
    ledger_url: str

    @property
    def url(self) -> str:
        return self.server.url

    def observer(self) -> SQLiteLedger:
        """A second, independent connection to the ledger file; each of its reads waits until
        every answered call is settled (a call is settled just after its answer is sent:
        tokenward.gateway.settling)."""
        return _Settled(SQLiteLedger(self.ledger_url), self.state)  # type: ignore[return-value]


class _Settled:
    """A ledger whose every method first waits out the gateway's settle lag."""

    def __init__(self, ledger: SQLiteLedger, state: GatewayState) -> None:
        self._ledger, self._state = ledger, state

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._ledger, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            wait_settled(self._state)
            return value(*args, **kwargs)

        return call


def wait_settled(state: GatewayState, timeout: float = 10.0) -> None:
    """Wait until no answered call of the gateway ``state`` waits to settle (its settle lag)."""
    deadline = time.monotonic() + timeout
    while state.settlements.pending and time.monotonic() < deadline:
        time.sleep(0.002)


@pytest.fixture
def start_gateway(tmp_path: Path, fake: ThreadedServer) -> Iterator[Callable[..., Gateway]]:
    """Start a gateway in front of the fake provider: ``start_gateway(budgets=[...], **config)``
    (``upstream={...}`` adds keys to the fake's upstream entry, e.g. ``bound_non_streamed``;
    ``transports={"fake": ...}`` answers its calls with an ``httpx`` transport instead)."""
    running: list[ThreadedServer] = []

    def start(
        budgets: list[dict[str, Any]] | None = None,
        upstream: dict[str, Any] | None = None,
        transports: dict[str, httpx.AsyncBaseTransport] | None = None,
        **extra: Any,
    ) -> Gateway:
        ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        config = GatewayConfig.from_mapping(
            {
                "ledger": ledger_url,
                "upstreams": [
                    {
                        "name": "fake",
                        "provider": "fake",
                        "base_url": fake.url,
                        "api_key_env": "FAKE_UPSTREAM_KEY",
                        **(upstream or {}),
                    }
                ],
                "keys": [
                    {"key": KEY, "name": "test-key", "user": "alice", "project": "demo"},
                    {"key": "tw-admin-key", "name": "ops", "user": "ops", "allow_user_override": True},
                ],
                "budgets": budgets or [],
                **extra,
            }
        )
        states: list[GatewayState] = []
        server = ThreadedServer(create_app(config, on_ready=states.append, transports=transports))
        server.start()
        running.append(server)
        return Gateway(server, states[0], ledger_url)

    yield start
    for server in running:
        server.stop()


ONE = {"key": "tw-one", "name": "one", "user": "alice"}
SESSION_BUDGET = {"name": "sess", "scope": "session", "meter": "total_tokens", "limit": 100000}


def openai_upstream(start_gateway: Any, transport: httpx.AsyncBaseTransport, **config: Any) -> Any:
    """A gateway from :func:`start_gateway` (key ``tw-one``, user alice, no project) whose OpenAI
    upstream answers with ``transport`` (an ``httpx.MockTransport``: an upstream misbehaving)."""
    upstream = {"provider": "openai", "base_url": "http://up.invalid/v1"}
    return start_gateway(upstream=upstream, transports={"fake": transport}, keys=[ONE], **config)


def post(gateway: Any, session: str, body: dict[str, Any]) -> httpx.Response:
    """One call as ``tw-one`` in ``session``."""
    headers = {"authorization": "Bearer tw-one", "x-tokenward-session": session}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
