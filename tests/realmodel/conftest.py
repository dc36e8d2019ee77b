"""A real model on this machine: Gemma 3 270M on a local OpenAI-compatible server, and gateways in
front of it.

``model_server`` starts each server that can run here once per test session (through
``scripts/real_model.py``), on a free port, logging to a file in pytest's temporary folder; the
tests that use it run once per server. A server that is not installed is skipped with the reason
and the install command; with ``TOKENWARD_REQUIRE_SERVICES=1`` (CI) it fails instead, except the
llama-server wheel on a CPU that lacks the instructions it needs (AVX-512 and AVX-VNNI; see
``scripts/real_model.py``), which cannot run there at all.

What the tests measured (prompt estimate against the real prompt count, latencies, our count of
streamed text against the model's) is printed at the end of the run.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import openai
import pytest

from tests.support.fixtures import KEY, Gateway
from tests.support.servers import ThreadedServer
from tokenward.gateway import GatewayConfig, create_app
from tokenward.gateway.relay import GatewayState
from tokenward.ledger.sqlite import SQLiteLedger

ROOT = Path(__file__).resolve().parents[2]
PRICES = Path(__file__).with_name("prices.yaml")


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tokenward_real_model", ROOT / "scripts" / "real_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


real_model = _load_script()
MODEL: str = real_model.MODEL_ALIAS
INSTALL = ".venv/bin/python scripts/real_model.py install"


@dataclass
class ModelServer:
    """A running model server."""

    kind: str
    base_url: str  # ``http://127.0.0.1:<port>/v1``
    log_path: Path
    started_in: float

    @property
    def streams_usage(self) -> bool:
        """Whether this server sends usage in streams (llama-cpp-python never does)."""
        return self.kind != "llama-cpp-python"

    def chat(self, **body: Any) -> dict[str, Any]:
        """A chat completion straight from the server (not through a gateway)."""
        response = httpx.post(f"{self.base_url}/chat/completions", json={"model": MODEL, **body}, timeout=120)
        response.raise_for_status()
        return response.json()

    def stream_bytes(self, **body: Any) -> bytes:
        """A streamed chat completion straight from the server, as the bytes it sent."""
        body = {"model": MODEL, **body, "stream": True}
        with httpx.stream("POST", f"{self.base_url}/chat/completions", json=body, timeout=120) as response:
            response.raise_for_status()
            return response.read()


def _unavailable(kind: str, reason: str) -> None:
    cannot_run_here = kind == "llama-server" and "this CPU cannot run it" in reason
    if os.environ.get("TOKENWARD_REQUIRE_SERVICES") == "1" and not cannot_run_here:
        pytest.fail(f"{kind}: {reason} (TOKENWARD_REQUIRE_SERVICES=1; install with: {INSTALL})")
    pytest.skip(f"{kind}: {reason}" + ("" if cannot_run_here else f"; install with: {INSTALL}"))


@pytest.fixture(scope="session", params=real_model.SERVERS)
def model_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """Gemma 3 270M on one of the servers, started once for the session."""
    kind: str = request.param
    reason = real_model.availability().get(kind)
    if reason:
        _unavailable(kind, reason)
    log = tmp_path_factory.mktemp("realmodel") / f"{kind}.log"
    try:
        server = real_model.start(kind, log_path=log, timeout=180)
    except (RuntimeError, TimeoutError) as exc:
        if kind == "llama-server" and "SIGILL" in str(exc):  # a CPU flag its code needs that we do not check
            pytest.skip(f"{kind}: this CPU cannot run it (SIGILL while starting; log: {log})")
        pytest.fail(f"{kind} did not start: {exc}")
    MEASURED.setdefault("servers", {})[kind] = {"ready_in_s": round(server.started_in, 2), "log": str(log)}
    try:
        yield ModelServer(kind, server.base_url, log, server.started_in)
    finally:
        server.stop()


@pytest.fixture
def real_gateway(tmp_path: Path, model_server: ModelServer) -> Iterator[Callable[..., Gateway]]:
    """Start a gateway in front of the model server: ``real_gateway(budgets=[...], **config)``.

    At the end, no event of any gateway it started may be disputed: the model's own counts are
    never below tokenward's floor (issue 14: correct reports are never overridden)."""
    running: list[ThreadedServer] = []
    ledgers: list[str] = []

    def start(budgets: list[dict[str, Any]] | None = None, **extra: Any) -> Gateway:
        # a ledger of its own, or the one given (``ledger=``: a fresh gateway on an earlier one's)
        ledger_url = extra.pop("ledger", None) or f"sqlite:///{tmp_path / f'ledger-{len(running)}.db'}"
        config = GatewayConfig.from_mapping(
            {
                "ledger": ledger_url,
                "prices": str(PRICES),
                "upstreams": [
                    {
                        "name": model_server.kind,
                        "provider": "openai-compatible",
                        "base_url": model_server.base_url,
                        "models": [f"{MODEL}*"],
                        # llama-cpp-python sends no usage in streams: trust it with non-streamed
                        # calls (it honours max_tokens), as scripts/real_model.py's config does
                        "bound_non_streamed": "stream" if model_server.streams_usage else "trust",
                    }
                ],
                "keys": [{"key": KEY, "name": "test-key", "user": "alice", "project": "realmodel"}],
                "budgets": budgets or [],
                **extra,
            }
        )
        states: list[GatewayState] = []
        server = ThreadedServer(create_app(config, on_ready=states.append))
        server.start()
        running.append(server)
        ledgers.append(ledger_url)
        return Gateway(server, states[0], ledger_url)

    yield start
    for server in running:
        server.stop()
    disputed = [e.metadata["disputed"] for url in ledgers for e in SQLiteLedger(url).events() if e.disputed]
    assert not disputed, f"the model's own counts were disputed: {disputed}"


def client(gateway: Gateway, session: str | None = None) -> openai.OpenAI:
    """The official OpenAI client pointed at ``gateway`` with a tokenward key."""
    headers = {"x-tokenward-session": session} if session else {}
    return openai.OpenAI(
        api_key=KEY, base_url=f"{gateway.url}/v1", default_headers=headers, max_retries=0, timeout=120
    )


MEASURED: dict[str, Any] = {}
"""What the tests measured, by topic, printed at the end of the run."""


def measure(topic: str, kind: str, **values: Any) -> None:
    """Keep a measurement for the end-of-run summary."""
    MEASURED.setdefault(topic, {}).setdefault(kind, {}).update(values)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not any(k != "servers" for k in MEASURED):
        return
    terminalreporter.section("real model measurements")
    for topic, by_kind in MEASURED.items():
        for kind, values in by_kind.items():
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            terminalreporter.write_line(f"{topic} [{kind}]: {shown}")
