"""Accounting speed, in one run: per-call usage normalisation + pricing (calls/s, µs per call) for
every dialect and over the recorded traces, and prompt-estimation throughput (MB/s) against raw
``tiktoken`` on the same text; plus the estimate's error against a reported prompt count where one
exists (the fake provider's Anthropic-style count, before and after calibration).

    python bench/accounting.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from common import ROOT, save

from tokenward.core.accounting import account
from tokenward.core.calibration import EstimateStats, correction
from tokenward.core.dialects import usage_from
from tokenward.core.estimate import estimate_anthropic_messages, estimate_openai_chat
from tokenward.core.pricebook import PriceBook, PriceContext
from tokenward.core.tokenizers import encoding
from tokenward.fake.counting import MESSAGE_OVERHEAD, count_pieces

TRACES = ROOT.parent / "shared" / "data" / "traces"
AT = PriceContext(at=datetime(2026, 4, 10, 12, tzinfo=UTC))

SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "openai-chat": (
        "gpt-4o-mini",
        {"prompt_tokens": 17903, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 17817}},
    ),
    "openai-responses": (
        "gpt-5",
        {
            "input_tokens": 10000,
            "input_tokens_details": {"cached_tokens": 8000},
            "output_tokens": 1500,
            "output_tokens_details": {"reasoning_tokens": 1200},
        },
    ),
    "anthropic-messages": (
        "claude-sonnet-4-5",
        {
            "input_tokens": 50,
            "cache_read_input_tokens": 40000,
            "cache_creation_input_tokens": 10000,
            "cache_creation": {"ephemeral_5m_input_tokens": 6000, "ephemeral_1h_input_tokens": 4000},
            "output_tokens": 800,
        },
    ),
    "gemini": (
        "gemini-2.5-flash",
        {
            "promptTokenCount": 12000,
            "cachedContentTokenCount": 8000,
            "candidatesTokenCount": 300,
            "thoughtsTokenCount": 700,
            "totalTokenCount": 13000,
        },
    ),
    "bedrock-converse": (
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        {"inputTokens": 200, "outputTokens": 90, "cacheReadInputTokens": 4000, "totalTokens": 4290},
    ),
    "ollama": ("llama3.1:8b", {"done": True, "prompt_eval_count": 1500, "eval_count": 42}),
}


def rate(fn: Callable[[], object], seconds: float) -> tuple[float, int]:
    """Calls per second of ``fn`` over about ``seconds``."""
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(200):
            fn()
        n += 200
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed, n


def text_corpus(size: int) -> list[str]:
    rng = random.Random(7)
    words = [
        "the",
        "budget",
        "ledger",
        "reserves",
        "tokens",
        "before",
        "every",
        "call",
        "and",
        "settles",
        "them",
        "after",
        "the",
        "provider",
        "reports",
        "usage;",
        "def",
        "settle(event):",
        "return",
        "ledger.charge(event.usage)",
        "#",
        "{json:",
        "[1,",
        "2,",
        "3]}",
        "Übergrößenträger",
        "naïve",
        "café",
        "東京",
        "データ",
        "🙂",
    ]
    messages, total = [], 0
    while total < size:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 400)))
        messages.append(text)
        total += len(text.encode())
    return messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    prices = PriceBook.default()
    rows: dict[str, Any] = {}

    print("per-call normalisation + pricing (genai-prices, cached lookups):")
    for dialect, (model, raw) in SAMPLES.items():
        account(usage_from(dialect, raw), model=model, prices=prices, context=AT)  # warm the cache
        per_s, _ = rate(
            lambda d=dialect, m=model, r=raw: account(usage_from(d, r), model=m, prices=prices, context=AT),
            args.seconds,
        )
        rows[f"{dialect}_calls_per_s"] = per_s
        print(f"  {dialect:20s} {per_s:10,.0f} calls/s  {1e6 / per_s:7.1f} µs/call")

    for name in ("gemini3pro-swebench-verified.jsonl", "deepseek-swebench-lite.jsonl"):
        path = TRACES / name
        if not path.exists():
            print(f"  ({name} not available: skipped)")
            continue
        from tokenward.replay import read_traces

        calls = read_traces(path)
        start = time.perf_counter()
        for call in calls:
            account(
                usage_from(call.dialect, call.raw_usage),
                model=call.model,
                prices=prices,
                context=PriceContext(at=call.at),
            )
        elapsed = time.perf_counter() - start
        rows[f"{name}_calls_per_s"] = len(calls) / elapsed
        print(
            f"  {name:36s} {len(calls):,} calls: {len(calls) / elapsed:10,.0f} calls/s  {1e6 * elapsed / len(calls):6.1f} µs/call"
        )

    print("estimation throughput against raw tiktoken on the same text (o200k_base):")
    messages = text_corpus(2_000_000)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": m} for m in messages]}
    megabytes = sum(len(m.encode()) for m in messages) / 1e6
    enc = encoding("o200k_base")
    enc.encode_ordinary(messages[0])
    timings: dict[str, float] = {}
    for label, fn in (
        ("raw tiktoken", lambda: [enc.encode_ordinary(m) for m in messages]),
        ("estimate_openai_chat", lambda: estimate_openai_chat(body)),
        ("estimate_anthropic_messages", lambda: estimate_anthropic_messages(body, "claude-sonnet-4-5")),
    ):
        best = float("inf")
        for _ in range(3):  # best of three: these machines are shared and noisy
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        timings[label] = best
    for label, seconds in timings.items():
        rows[f"{label}_mb_per_s"] = megabytes / seconds
        ratio = timings["raw tiktoken"] / seconds
        print(f"  {label:28s} {megabytes / seconds:7.2f} MB/s  ({ratio:.2f}x raw tiktoken's speed)")

    print("estimate error against a reported prompt count (fake provider, Anthropic-style count):")
    rng = random.Random(11)
    stats = EstimateStats("fake-claude")
    pairs = []
    for i in range(200):
        chosen = rng.sample(messages, k=rng.randint(1, 4))
        request = {"messages": [{"role": "user", "content": m[: rng.randint(50, 4000)]} for m in chosen]}
        estimate = estimate_anthropic_messages(request, "claude-sonnet-4-5").input_tokens
        actual = sum(count_pieces(m["content"]) + MESSAGE_OVERHEAD for m in request["messages"])
        pairs.append((estimate, actual))
        if i < 100:
            stats = stats.add(estimate, actual)
    learnt = correction(stats)
    held_out = pairs[100:]
    for label, scale in (("default factor", None), ("calibrated on 100 calls", learnt)):
        errors = [((scale.apply(e) if scale else e) - a) / a for e, a in held_out]
        under = sum(1 for x in errors if x < 0)
        mean = sum(abs(x) for x in errors) / len(errors)
        rows[f"estimate_error_{label}"] = {"mean_abs": mean, "under_estimates": under}
        print(
            f"  {label:26s} mean |error| {mean:6.1%}, under-estimates {under}/{len(errors)} on 100 held-out calls"
        )
    save("accounting", rows)


if __name__ == "__main__":
    main()
