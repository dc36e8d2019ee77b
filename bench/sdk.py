"""SDK overhead: a wrapped ``openai`` client against the bare client, both against the fake
provider (another process), in one run, interleaved; budgets on, SQLite ledger.

    python bench/sdk.py [--requests 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import openai
from common import TOKENWARD, free_port, percentile, process, save

import tokenward

MESSAGES = [{"role": "user", "content": "Say hello to the benchmark"}]


def run(client: openai.OpenAI, n: int, stream: bool) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        if stream:
            for _chunk in client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=100, stream=True
            ):
                pass
        else:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=100)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tw-bench-sdk-"))
    port = free_port()
    fake = [*TOKENWARD, "fake-provider", "--port", str(port), "--reply-tokens", "50"]
    with process(fake, f"http://127.0.0.1:{port}/healthz", work / "fake.log"):
        base = f"http://127.0.0.1:{port}/v1"
        bare = openai.OpenAI(base_url=base, api_key="x", max_retries=0)
        guard = tokenward.Guard(
            f"sqlite:///{work / 'ledger.db'}",
            budgets=["session:total_tokens=1000000000", "user=bench:cost_usd=1000000/day"],
        )
        wrapped = guard.wrap(openai.OpenAI(base_url=base, api_key="x", max_retries=0))
        table = {}
        with guard.session("bench", user="bench"):
            for stream in (False, True):
                run(bare, 30, stream), run(wrapped, 30, stream)  # warm up
                times: dict[str, list[float]] = {"bare": [], "wrapped": []}
                for _ in range(args.rounds):
                    times["bare"] += run(bare, args.requests, stream)
                    times["wrapped"] += run(wrapped, args.requests, stream)
                mode = "stream" if stream else "json"
                row = {
                    name: {"p50_ms": percentile(t, 0.5) * 1000, "p99_ms": percentile(t, 0.99) * 1000}
                    for name, t in times.items()
                }
                row["added_p50_ms"] = row["wrapped"]["p50_ms"] - row["bare"]["p50_ms"]
                row["added_p99_ms"] = row["wrapped"]["p99_ms"] - row["bare"]["p99_ms"]
                table[mode] = row
                print(
                    f"{mode:7} bare p50 {row['bare']['p50_ms']:.2f} ms p99 {row['bare']['p99_ms']:.2f} ms | wrapped p50 "
                    f"{row['wrapped']['p50_ms']:.2f} ms p99 {row['wrapped']['p99_ms']:.2f} ms | added p50 "
                    f"{row['added_p50_ms']:.2f} ms, p99 {row['added_p99_ms']:.2f} ms"
                )
    print(f"({args.rounds} interleaved rounds of {args.requests} calls each; {save('sdk', table)})")


if __name__ == "__main__":
    main()
