"""The provider facts of late 2026, end to end: ``tokenward cost`` and a gateway call against the
fake provider must each equal the same hand-worked Decimal literal.

Items (issue 16): 1. OpenAI cache writes; 2. Anthropic ``usage.speed`` and
``usage.inference_geo``; 3. holds at the rates the request asks for; 4. cache writes without their
lifetime split; 5. Gemini grounding fees. The fake either answers on its own (its counts: the
prompt is ``\\w+|[^\\w\\s]`` pieces plus 4 per message, so "Say hello" is 6 tokens; the reply is
``reply_tokens`` = 20 tokens) or replays a provider's exact answer (options ``response`` and
``events``). Rates are fixture rates; the arithmetic is in the comment beside each literal.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.support.fixtures import KEY, Gateway
from tests.support.provider_facts import (
    CHAT_USAGE,
    FIVE_MIN_USD,
    N04_FAST_US_USD,
    N04_USAGE,
    ONE_HOUR_USD,
    OPUS,
    RESPONSES_USAGE,
    TERRA,
    UNSPLIT,
    WRITES_USD,
)
from tokenward.cli.main import app

D = Decimal
SAY_HELLO = [{"role": "user", "content": "Say hello"}]

PRICES = {
    "gpt-5.6-terra": TERRA,
    "claude-opus-4-8": OPUS,
    "gemini-3-flash-preview": {"input": "0.50", "output": "3.00", "fees": {"web_search": "0.014"}},
    "gemini-2.5-flash": {"input": "0.30", "output": "2.50", "fees": {"web_search": "0.035"}},
}


@pytest.fixture
def prices_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": PRICES}))
    return path


@pytest.fixture
def gateway(start_gateway, prices_file: Path) -> Gateway:
    return start_gateway(prices=str(prices_file))


def call(gateway: Gateway, path: str, body: dict[str, Any]) -> httpx.Response:
    reply = httpx.post(
        f"{gateway.url}{path}", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=30
    )
    assert reply.status_code == 200, reply.text
    return reply


def last_event(gateway: Gateway) -> Any:
    return gateway.observer().events()[-1]


def cost_cli(prices_file: Path, tmp_path: Path, *args: str, **files: Any) -> dict[str, Any]:
    extra: list[str] = []
    for option, data in files.items():
        path = tmp_path / f"{option}.json"
        path.write_text(json.dumps(data))
        extra += [f"--{option}", str(path)]
    result = CliRunner().invoke(app, ["cost", "--json", "--prices", str(prices_file), *args, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


# --- 1. OpenAI cache writes ------------------------------------------------------------------------

CHAT_COMPLETION = {
    "id": "chatcmpl-w",
    "object": "chat.completion",
    "model": "gpt-5.6-terra",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": CHAT_USAGE,
}
CHAT_CHUNKS = [
    {"id": "chatcmpl-w", "object": "chat.completion.chunk", "model": "gpt-5.6-terra", "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]},
    {"id": "chatcmpl-w", "object": "chat.completion.chunk", "model": "gpt-5.6-terra", "choices": [
        {"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"id": "chatcmpl-w", "object": "chat.completion.chunk", "model": "gpt-5.6-terra", "choices": [],
     "usage": CHAT_USAGE},
]  # fmt: skip
RESPONSE = {
    "id": "resp_w",
    "object": "response",
    "model": "gpt-5.6-terra",
    "status": "completed",
    "output": [],
    "usage": RESPONSES_USAGE,
}
RESPONSE_EVENTS = [
    {"type": "response.created", "response": {**RESPONSE, "status": "in_progress", "usage": None}},
    {"type": "response.output_text.delta", "delta": "hi"},
    {"type": "response.completed", "response": RESPONSE},
]


def test_openai_cache_writes_cost_cli(prices_file: Path, tmp_path: Path) -> None:
    model = ["--model", "gpt-5.6-terra"]
    reports = [
        cost_cli(
            prices_file, tmp_path, "--dialect", "openai-chat", *model, "--usage", json.dumps(CHAT_USAGE)
        ),
        cost_cli(prices_file, tmp_path, "--dialect", "openai-chat", *model, response=CHAT_COMPLETION),
        cost_cli(prices_file, tmp_path, "--dialect", "openai-chat", *model, events=CHAT_CHUNKS),
        cost_cli(prices_file, tmp_path, "--dialect", "openai-responses", *model, response=RESPONSE),
        cost_cli(prices_file, tmp_path, "--dialect", "openai-responses", *model, events=RESPONSE_EVENTS),
    ]
    for report in reports:
        assert D(report["cost_usd"]) == WRITES_USD
        assert report["breakdown"]["cache_write"] == {"tokens": 6000, "usd": "0.01875"}


def test_openai_cache_writes_through_the_gateway(gateway: Gateway) -> None:
    chat = {"model": "gpt-5.6-terra", "messages": SAY_HELLO}
    call(gateway, "/v1/chat/completions", {**chat, "fake": {"response": CHAT_COMPLETION}})
    call(gateway, "/v1/chat/completions", {**chat, "stream": True, "fake": {"events": CHAT_CHUNKS}})
    responses = {"model": "gpt-5.6-terra", "input": "Say hello"}
    call(gateway, "/v1/responses", {**responses, "fake": {"response": RESPONSE}})
    call(gateway, "/v1/responses", {**responses, "stream": True, "fake": {"events": RESPONSE_EVENTS}})
    events = gateway.observer().events()
    assert [e.cost_usd for e in events] == [WRITES_USD] * 4
    assert all(e.usage.cache_write_tokens == 6000 for e in events)


def test_openai_cache_writes_the_fake_reports_itself(gateway: Gateway) -> None:
    # the fake's own usage: prompt "Say hello" = 6, of which 4 written; 20 output tokens
    # (6 - 4) x 2.50 + 4 x 3.125 + 20 x 15 = 5 + 12.5 + 300 = 317.5 per 1M
    body = {"model": "gpt-5.6-terra", "messages": SAY_HELLO, "fake": {"cache_write_tokens": 4}}
    call(gateway, "/v1/chat/completions", body)
    call(gateway, "/v1/chat/completions", {**body, "stream": True})
    assert [e.cost_usd for e in gateway.observer().events()] == [D("0.0003175")] * 2


# --- 2. Anthropic speed and inference geography ----------------------------------------------------


def test_fast_mode_and_us_only_inference_through_the_gateway(gateway: Gateway) -> None:
    # the fake reports the speed and geography asked for; "Say hello" = 6 input, 20 output
    body = {"model": "claude-opus-4-8", "max_tokens": 64, "messages": SAY_HELLO}
    call(gateway, "/v1/messages", body)
    call(gateway, "/v1/messages", {**body, "speed": "fast"})
    call(gateway, "/v1/messages", {**body, "speed": "fast", "inference_geo": "us"})
    call(gateway, "/v1/messages", {**body, "speed": "fast", "inference_geo": "us", "stream": True})
    costs = [e.cost_usd for e in gateway.observer().events()]
    assert costs == [
        D("0.00053"),  # 6 x 5 + 20 x 25 = 30 + 500 = 530 per 1M
        D("0.00106"),  # fast: 6 x 10 + 20 x 50 = 60 + 1000 = 1060 per 1M
        D("0.001166"),  # fast, US-only x 1.1: 6 x 11 + 20 x 55 = 66 + 1100 = 1166 per 1M
        D("0.001166"),  # the same, streamed (speed in message_start and message_delta)
    ]
    metadata = gateway.observer().events()[-1].metadata
    assert (metadata["speed"], metadata["inference_geo"]) == ("fast", "us")


N04_US_USAGE = {**N04_USAGE, "inference_geo": "us"}
FAST_US_USD = N04_FAST_US_USD
N04_MESSAGE = {"id": "msg_f", "type": "message", "role": "assistant", "model": "claude-opus-4-8",
               "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "usage": N04_US_USAGE}  # fmt: skip
N04_EVENTS = [
    {"type": "message_start", "message": {**N04_MESSAGE, "content": [], "stop_reason": None,
                                          "usage": {**N04_US_USAGE, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"input_tokens": 12, "cache_creation_input_tokens": 44667, "cache_read_input_tokens": 0,
               "output_tokens": 850, "speed": "fast"}},
    {"type": "message_stop"},
]  # fmt: skip


def test_speed_and_geo_cost_cli(prices_file: Path, tmp_path: Path) -> None:
    args = ["--dialect", "anthropic-messages", "--model", "claude-opus-4-8"]
    reports = [
        cost_cli(prices_file, tmp_path, *args, "--usage", json.dumps(N04_US_USAGE)),
        cost_cli(prices_file, tmp_path, *args, response=N04_MESSAGE),
        cost_cli(prices_file, tmp_path, *args, events=N04_EVENTS),
    ]
    for report in reports:
        assert D(report["cost_usd"]) == FAST_US_USD
        assert (report["speed"], report["inference_geo"]) == ("fast", "us")
        assert report["price"]["modifiers"] == {
            "speed": "fast",
            "inference_geo": "us",
            "inference_geo_multiplier": "1.1",
        }


def test_service_tier_is_read_from_a_bare_usage_object(tmp_path: Path) -> None:
    prices = tmp_path / "tiers.json"
    rows = {
        "claude-opus-4-8": {
            "input": "5",
            "output": "25",
            "service_tiers": {"priority": {"input": "10", "output": "50"}},
        }
    }
    prices.write_text(json.dumps({"models": rows}))
    usage = {"input_tokens": 1000, "output_tokens": 100, "service_tier": "priority"}
    report = cost_cli(prices, tmp_path, "--dialect", "anthropic-messages", "--model", "claude-opus-4-8",
                      "--usage", json.dumps(usage))  # fmt: skip
    # priority: 1000 x 10 + 100 x 50 = 15000 per 1M (the default tier would be 7500)
    assert (report["service_tier"], report["service_tier_source"]) == ("priority", "response")
    assert D(report["cost_usd"]) == D("0.015")


def test_replayed_fast_us_answers_through_the_gateway(gateway: Gateway) -> None:
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 1024,
        "messages": SAY_HELLO,
        "speed": "fast",
        "inference_geo": "us",
    }
    call(gateway, "/v1/messages", {**body, "fake": {"response": N04_MESSAGE}})
    call(gateway, "/v1/messages", {**body, "stream": True, "fake": {"events": N04_EVENTS}})
    assert [e.cost_usd for e in gateway.observer().events()] == [FAST_US_USD] * 2


# --- 3. Holds at the rates the request asks for ----------------------------------------------------


def requested(gateway: Gateway, path: str, body: dict[str, Any]) -> Decimal:
    """What the call needed to hold, from the 402 of a budget far too small for it."""
    reply = httpx.post(
        f"{gateway.url}{path}", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=30
    )
    assert reply.status_code == 402, reply.text
    error = reply.json()["error"]
    return D(error["budget"]["requested"])


def test_holds_reflect_fast_mode_geo_and_cache_writes(start_gateway, prices_file: Path) -> None:
    budget = {"name": "tiny", "scope": "user", "id": "alice", "meter": "cost_usd", "limit": "0.000001"}
    gateway = start_gateway(prices=str(prices_file), budgets=[budget])
    # Claude: "hello" is 1 o200k token + 4 for the message = 5, x 1.2 (Claude's tokenizer is not
    # public) = 6 tokens estimated; max_tokens 16 is the whole output bound held
    claude = {
        "model": "claude-opus-4-8",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello"}],
    }
    one_hour = [{"type": "text", "text": "hello", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    five_min = [{"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}]
    assert requested(gateway, "/v1/messages", claude) == D("0.00043")  # 6 x 5 + 16 x 25 = 430 per 1M
    assert requested(gateway, "/v1/messages", {**claude, "speed": "fast"}) == D("0.00086")  # 6 x 10 + 16 x 50
    # fast and US-only: 6 x 11 + 16 x 55 = 66 + 880 = 946 per 1M
    assert requested(gateway, "/v1/messages", {**claude, "speed": "fast", "inference_geo": "us"}) == D(
        "0.000946"
    )
    # fast with a 1-hour cache write: the input side at the 1-hour write rate, 6 x 20 + 16 x 50 = 920
    fast_1h = {**claude, "speed": "fast", "messages": [{"role": "user", "content": one_hour}]}
    assert requested(gateway, "/v1/messages", fast_1h) == D("0.00092")
    # 5-minute writes only: 6 x 6.25 + 16 x 25 = 37.5 + 400 = 437.5 per 1M
    standard_5m = {**claude, "messages": [{"role": "user", "content": five_min}]}
    assert requested(gateway, "/v1/messages", standard_5m) == D("0.0004375")
    # OpenAI: "hello" is 3 (message) + 1 ("user") + 1 ("hello") + 3 (reply priming) = 8 tokens,
    # exactly (o200k_base); automatic caching may write at 1.25x: 8 x 3.125 + 16 x 15 = 25 + 240
    chat = {
        "model": "gpt-5.6-terra",
        "max_completion_tokens": 16,
        "messages": [{"role": "user", "content": "hello"}],
    }
    assert requested(gateway, "/v1/chat/completions", chat) == D("0.000265")
    # explicit caching with no breakpoint writes nothing: 8 x 2.50 + 16 x 15 = 20 + 240 = 260 per 1M
    explicit = {**chat, "prompt_cache_options": {"mode": "explicit"}}
    assert requested(gateway, "/v1/chat/completions", explicit) == D("0.00026")
    assert gateway.observer().events() == []


# --- 4. Cache writes without the lifetime split ----------------------------------------------------

UNSPLIT_MESSAGE = {"id": "msg_u", "type": "message", "role": "assistant", "model": "claude-opus-4-8",
                   "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "usage": UNSPLIT}  # fmt: skip
UNSPLIT_EVENTS = [
    {
        "type": "message_start",
        "message": {**UNSPLIT_MESSAGE, "content": [], "usage": {**UNSPLIT, "output_tokens": 1}},
    },
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 10}},
    {"type": "message_stop"},
]


def test_unsplit_writes_cost_cli(prices_file: Path, tmp_path: Path) -> None:
    args = ["--dialect", "anthropic-messages", "--model", "claude-opus-4-8", "--usage", json.dumps(UNSPLIT)]
    unknown = cost_cli(prices_file, tmp_path, *args)
    assert D(unknown["cost_usd"]) == FIVE_MIN_USD and unknown["cost_estimated"] is True
    assert unknown["assumed"] == ["cache_write_ttl=5m (unknown)"]
    told = cost_cli(prices_file, tmp_path, *args, "--cache-write-ttl", "1h")
    assert D(told["cost_usd"]) == ONE_HOUR_USD and told["cost_estimated"] is True
    result = CliRunner().invoke(app, ["cost", *args, "--cache-write-ttl", "2h"])
    assert result.exit_code != 0 and "5m, 1h" in result.output


def test_unsplit_writes_are_priced_at_the_lifetime_the_request_asked_for(gateway: Gateway) -> None:
    def body(ttl: str | None) -> dict[str, Any]:
        marker = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
        content = [{"type": "text", "text": "Say hello", "cache_control": marker}]
        return {
            "model": "claude-opus-4-8",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": content}],
        }

    call(gateway, "/v1/messages", {**body("1h"), "fake": {"response": UNSPLIT_MESSAGE}})
    call(gateway, "/v1/messages", {**body("1h"), "stream": True, "fake": {"events": UNSPLIT_EVENTS}})
    call(gateway, "/v1/messages", {**body(None), "fake": {"response": UNSPLIT_MESSAGE}})
    events = gateway.observer().events()
    assert [e.cost_usd for e in events] == [ONE_HOUR_USD, ONE_HOUR_USD, FIVE_MIN_USD]
    assert all(e.cost_estimated for e in events)
    assert events[0].metadata["cost_assumed"] == ["cache_write_ttl=1h (requested)"]
    assert events[2].metadata["cache_write_ttl"] == "5m"


# --- 5. Gemini grounding fees ----------------------------------------------------------------------


def grounded(model: str, queries: list[str], usage: dict[str, int], *, last: bool = True) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [{"text": "BTC ... ETH ..."}]},
        "index": 0,
        "groundingMetadata": {"webSearchQueries": queries},
    }
    if last:  # only the last chunk of a stream names the finish reason
        candidate["finishReason"] = "STOP"
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model}


QUERIES = ["bitcoin price USD", "ethereum price USD", "bitcoin price USD", ""]
USAGE = {
    "promptTokenCount": 50,
    "candidatesTokenCount": 200,
    "toolUsePromptTokenCount": 1000,
    "totalTokenCount": 1250,
}
# Gemini 3 (N06): input 50 + 1000 = 1050 x 0.50 = 525, output 200 x 3 = 600: 1125 per 1M = 0.001125,
# plus 2 unique non-empty queries x 0.014 = 0.028: 0.029125
GEMINI_3_USD = D("0.029125")
# Gemini 2.5: 1050 x 0.30 = 315, 200 x 2.50 = 500: 815 per 1M = 0.000815, plus one grounded
# prompt x 0.035: 0.035815
GEMINI_25_USD = D("0.035815")


@pytest.mark.parametrize(
    ("model", "expected"), [("gemini-3-flash-preview", GEMINI_3_USD), ("gemini-2.5-flash", GEMINI_25_USD)]
)
def test_grounding_fees_cost_cli_and_gateway(
    start_gateway, prices_file: Path, tmp_path: Path, model: str, expected: Decimal
) -> None:
    whole = grounded(model, QUERIES, USAGE)
    # streamed: the queries arrive over two chunks, one repeated; usage is a running total
    chunks = [
        grounded(
            model, QUERIES[:2], {**USAGE, "candidatesTokenCount": 20, "totalTokenCount": 1070}, last=False
        ),
        grounded(model, QUERIES[1:], USAGE),
    ]
    for report in (
        cost_cli(prices_file, tmp_path, "--dialect", "gemini", "--model", model, response=whole),
        cost_cli(prices_file, tmp_path, "--dialect", "gemini", "--model", model, events=chunks),
    ):
        assert D(report["cost_usd"]) == expected
    gateway = start_gateway(prices=str(prices_file))
    body = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}
    headers = {"x-goog-api-key": KEY}
    base = f"{gateway.url}/v1beta/models/{model}"
    ok = httpx.post(f"{base}:generateContent", json={**body, "fake": {"response": whole}}, headers=headers)
    assert ok.status_code == 200, ok.text
    streamed = httpx.post(
        f"{base}:streamGenerateContent?alt=sse", json={**body, "fake": {"events": chunks}}, headers=headers
    )
    assert streamed.status_code == 200, streamed.text
    events = gateway.observer().events()
    assert [e.cost_usd for e in events] == [expected] * 2
    assert all(e.usage.web_search_calls == 2 for e in events)


def test_estimate_cli_worst_case_follows_the_request(prices_file: Path, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    body = {"model": "claude-opus-4-8", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}
    worst = []
    for extra in ({}, {"speed": "fast"}, {"speed": "fast", "inference_geo": "us"}):
        request.write_text(json.dumps({**body, **extra}))
        result = CliRunner().invoke(app, ["estimate", str(request), "--prices", str(prices_file), "--json"])
        assert result.exit_code == 0, result.output
        worst.append(D(json.loads(result.stdout)["worst_case_cost_usd"]))
    # the gateway's holds above: 6 x 5 + 16 x 25; 6 x 10 + 16 x 50; 6 x 11 + 16 x 55 (per 1M)
    assert worst == [D("0.00043"), D("0.00086"), D("0.000946")]
