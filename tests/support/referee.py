"""A gateway on a real socket in front of the fake provider as referee (issue 14).

The fake runs in the gateway's process through :class:`~tokenward.fake.transport.FakeTransport`:
it generates a stream only as the gateway reads it, and its tally (``app.state.tally``) says what
it generated per request, what a provider would bill. :meth:`Referee.check` holds the gateway to
it: every call's charge is at least what the fake generated for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.ledger.backends import BACKENDS, require_available
from tests.support.fixtures import KEY, wait_settled
from tests.support.servers import ThreadedServer
from tokenward.core.budgets import Subject
from tokenward.core.events import UsageEvent
from tokenward.fake import FakeSettings
from tokenward.fake import create_app as create_fake
from tokenward.fake.transport import FakeTransport
from tokenward.gateway import GatewayConfig, create_app
from tokenward.gateway.relay import GatewayState
from tokenward.ledger import Ledger, open_ledger

AUTH = {"authorization": f"Bearer {KEY}"}


@dataclass
class Referee:
    """A running gateway, the fake behind it, and its ledger."""

    url: str
    fake: Any
    state: GatewayState
    store: Ledger

    def tally(self) -> dict[str, dict[str, Any]]:
        """What the fake generated, by response id."""
        return {record["id"]: record for record in self.fake.state.tally.all()}

    def events(self) -> list[UsageEvent]:
        wait_settled(self.state)
        return self.store.events()

    def check(self) -> list[tuple[UsageEvent, dict[str, Any]]]:
        """Every event of a call the fake generated for charges at least what it generated: its
        output, and its prompt plus output. Returns the (event, tally record) pairs."""
        tally, pairs = self.tally(), []
        for event in self.events():
            record = tally.get(str(event.metadata.get("response_id")))
            if record is None:
                continue
            charged = event.charged
            assert charged["output_tokens"] >= record["output_tokens"], (event.metadata, record)
            assert charged["total_tokens"] >= record["input_tokens"] + record["output_tokens"], record
            pairs.append((event, record))
        return pairs

    def residue(self) -> int:
        """Output received past the cuts (charged as overage): what an upstream that ignores its
        bound delivers beyond the hold, one event's worth per call it ran past."""
        return sum(int(e.metadata.get("received_beyond_cut_tokens", 0)) for e in self.events())

    def generated(self) -> int:
        """Everything the fake generated (prompt and output), over all calls."""
        return sum((r["input_tokens"] or 0) + r["output_tokens"] for r in self.tally().values())

    def spent_and_held(self, subject: Subject, budget: str) -> tuple[Decimal, Decimal]:
        """A budget's spent and held amounts for ``subject``."""
        wait_settled(self.state)
        (balance,) = [b for b in self.store.balances(subject) if b.budget.name == budget]
        return balance.spent, balance.held


@contextlib.contextmanager
def referee(
    tmp_path: Path,
    backend: str = "memory",
    *,
    budgets: list[dict[str, Any]] | None = None,
    upstream: dict[str, Any] | None = None,
    fake: FakeSettings | None = None,
    **config: Any,
) -> Iterator[Referee]:
    """A gateway on ``backend`` (``memory``, ``sqlite``, ``redis``, ``postgres``) in front of an
    in-process fake; ``upstream`` adds keys to the fake's upstream entry."""
    spec = BACKENDS[backend]
    require_available(spec)
    url = spec.make_url(tmp_path)
    app = create_fake(fake or FakeSettings(reply_tokens=20, max_recorded=10_000))
    gateway_config = GatewayConfig.from_mapping(
        {
            "ledger": url,
            "upstreams": [{"name": "fake", "provider": "fake", **(upstream or {})}],
            "keys": [{"key": KEY, "name": "test-key", "user": "alice", "project": "demo"}],
            "budgets": budgets or [],
            **config,
        }
    )
    states: list[GatewayState] = []
    server = ThreadedServer(
        create_app(gateway_config, transports={"fake": FakeTransport(app)}, on_ready=states.append)
    )
    server.start()
    store = states[0].guard.ledger.sync if backend == "memory" else open_ledger(url)  # type: ignore[attr-defined]
    try:
        yield Referee(server.url, app, states[0], store)
    finally:
        server.stop()
        if backend != "memory":
            store.close()
        spec.cleanup(url)
