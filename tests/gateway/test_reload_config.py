"""A reload (``POST /admin/reload``, ``SIGHUP``) applies what a start would, and refuses what a
start would refuse.

On the branch point a reload kept the price book the gateway started with: a price corrected in
the price-override file (or a new ``prices:`` file) was logged as "configuration reloaded" while
every call went on being charged at the old price. And it took ``defaults.unknown_model: default``
without checking that the price book has a ``default`` row (a start refuses that), so every call
to an unknown model then failed with a 500.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.fixtures import KEY
from tests.support.servers import serving
from tokenward.gateway import GatewayConfig, create_app
from tokenward.ledger import open_ledger

ADMIN = "tw-admin-root"
MESSAGES = [{"role": "user", "content": "Say hello"}]  # 6 prompt tokens at the fake


def write(path: Path, fake_url: str, *, ledger: str, price: str, **extra: Any) -> None:
    (path.parent / "prices.yaml").write_text(
        yaml.safe_dump({"models": {"my-model": {"input": price, "output": price}}})
    )
    path.write_text(
        yaml.safe_dump(
            {
                "ledger": ledger,
                "prices": "prices.yaml",
                "upstreams": [
                    {
                        "name": "fake",
                        "provider": "fake",
                        "base_url": fake_url,
                        "api_key_env": "FAKE_UPSTREAM_KEY",
                    }
                ],
                "keys": [{"key": KEY, "name": "k", "user": "alice"}],
                "admin_keys": [{"key": ADMIN, "name": "root"}],
                **extra,
            }
        )
    )


def chat(url: str, model: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": MESSAGES, "max_tokens": 10},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    )


def reload(url: str) -> httpx.Response:
    return httpx.post(f"{url}/admin/reload", headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)


def test_a_reload_reads_the_price_file_again(tmp_path: Path, fake) -> None:
    path = tmp_path / "tokenward.yaml"
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    write(path, fake.url, ledger=ledger, price="1000")  # USD per 1M tokens
    with serving(create_app(GatewayConfig.load(path), config_path=path)) as server:
        assert chat(server.url, "my-model").status_code == 200  # 6 + 10 tokens at $1000 per 1M
        write(path, fake.url, ledger=ledger, price="1")  # the price corrected
        assert reload(server.url).status_code == 200
        assert chat(server.url, "my-model").status_code == 200  # 6 + 10 tokens at $1 per 1M
    store = open_ledger(ledger)
    assert [e.cost_usd for e in store.events()] == [Decimal("0.016"), Decimal("0.000016")]
    store.close()


def test_a_reload_refuses_what_a_start_refuses(tmp_path: Path, fake, caplog) -> None:
    path = tmp_path / "tokenward.yaml"
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    write(path, fake.url, ledger=ledger, price="1")
    with serving(create_app(GatewayConfig.load(path), config_path=path)) as server:
        # unknown_model: default with no default row in the price file: refused, as at a start
        write(path, fake.url, ledger=ledger, price="1", defaults={"unknown_model": "default"})
        refused = reload(server.url)
        assert refused.status_code == 400
        assert "needs a 'default' row" in refused.json()["error"]["message"]
        answer = chat(server.url, "a-model-no-price-row-knows")  # the running policy (flag) still serves
        assert answer.status_code == 200
        # a price file that does not parse: refused, and the running prices kept
        write(path, fake.url, ledger=ledger, price="1")
        (tmp_path / "prices.yaml").write_text("models: [")
        assert reload(server.url).status_code == 400
        assert chat(server.url, "my-model").status_code == 200
        # another ledger: a reload cannot move to it, and says so
        write(path, fake.url, ledger=f"sqlite:///{tmp_path / 'other.db'}", price="1")
        with caplog.at_level(logging.WARNING, logger="tokenward.gateway"):
            assert reload(server.url).status_code == 200
        assert any("restart the gateway to use the new one" in r.getMessage() for r in caplog.records)
        assert chat(server.url, "my-model").status_code == 200  # still charged to the ledger in use
    store = open_ledger(ledger)
    assert [e.cost_usd for e in store.events()] == [None, Decimal("0.000016"), Decimal("0.000016")]
    store.close()
