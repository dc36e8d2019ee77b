"""Promise 6: nothing is fetched from the network at run time.

A fresh interpreter with every way of opening a connection patched to raise builds both
encodings, estimates requests and prices a usage through the pinned genai-prices snapshot. tiktoken
is pointed at an empty cache directory, so a vocabulary it had downloaded before cannot hide a
download attempt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args)[:200])
        raise OSError("network access attempted")

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse(*args)

    socket.socket = NoSocket
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    # the patch itself works: each way in is refused
    for attempt in (lambda: socket.socket(), lambda: socket.create_connection(("example.com", 80)),
                    lambda: socket.getaddrinfo("example.com", 443)):
        try:
            attempt()
        except OSError:
            pass
        else:
            raise SystemExit("socket patch is not effective")
    assert len(attempts) == 3
    attempts.clear()

    from datetime import UTC, datetime

    from tokenward.core.estimate import count_tokens, estimate_anthropic_messages, estimate_openai_chat
    from tokenward.core.pricebook import PriceBook, PriceContext
    from tokenward.core.tokenizers import encoding
    from tokenward.core.usage import Usage

    text = "hello" + " hello" * 9
    messages = [{"role": "user", "content": text}]
    out = {
        "o200k": count_tokens(text, "o200k_base"),
        "cl100k": count_tokens(text, "cl100k_base"),
        "o200k_name": encoding("o200k_base").name,
        "cl100k_name": encoding("cl100k_base").name,
        "gpt4o": estimate_openai_chat({"model": "gpt-4o", "messages": messages}).input_tokens,
        "gpt4": estimate_openai_chat({"model": "gpt-4", "messages": messages}).input_tokens,
        "claude": estimate_anthropic_messages({"messages": messages}).approximate,
    }
    book = PriceBook.default()
    at = PriceContext(at=datetime(2026, 11, 1, tzinfo=UTC))
    usage = Usage(input_tokens=17903, cache_read_tokens=17817, output_tokens=500)
    cost = book.cost(usage, "gpt-4o", context=at)
    out["cost"] = str(cost.total_usd)
    out["source"] = cost.price.source if cost.price else None
    out["attempts"] = attempts
    print(json.dumps(out))
    """
)


def test_tokenizers_estimates_and_prices_work_without_network(tmp_path: Path) -> None:
    empty_cache = tmp_path / "tiktoken-cache"
    empty_cache.mkdir()
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(empty_cache), "DATA_GYM_CACHE_DIR": str(empty_cache)}
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(proxy, None)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["attempts"] == []
    assert (out["o200k"], out["cl100k"]) == (10, 10)
    assert (out["o200k_name"], out["cl100k_name"]) == ("o200k_base", "cl100k_base")
    # 3 per message + 1 for the role "user" + 10 content tokens + 3 priming the reply
    assert out["gpt4o"] == out["gpt4"] == 17
    assert out["claude"] is True
    assert out["source"] == "genai-prices"
    assert Decimal(out["cost"]) == Decimal("0.02748625")  # C01 at gpt-4o's list prices
    assert not any(empty_cache.iterdir())  # nothing was written to tiktoken's cache either
