"""OpenAI Responses, Gemini, Bedrock Converse, Ollama and OpenAI-compatible servers: usage,
whole responses and streams.

Facts come from each provider's reference (cited in ``tokenward.core.dialects.*``): Responses
cached/reasoning counts are inside input/output; Gemini thoughts are *beside* candidates and
billed as output, cached content is inside the prompt, tool-use prompt tokens are beside it;
Bedrock's ``inputTokens`` excludes both cache counters; Ollama's missing or zero
``prompt_eval_count`` is unknown; running totals are replaced, never summed. Expected values are
worked from those rules, never read from the code.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest

from tokenward.core.dialects import DIALECTS, response_facts, stream_facts, stream_reader, usage_from
from tokenward.core.dialects.anthropic_messages import unwrap_bedrock_chunk
from tokenward.core.usage import Usage
from tokenward.errors import ValidationError

# --- OpenAI Responses ------------------------------------------------------------------------


def test_responses_details_are_inside_the_totals() -> None:
    usage = usage_from(
        "openai-responses",
        {
            "input_tokens": 10000,
            "input_tokens_details": {"cached_tokens": 8000},
            "output_tokens": 1500,
            "output_tokens_details": {"reasoning_tokens": 1200},
        },
    )
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens, usage.reasoning_tokens) == (
        10000,
        8000,
        1500,
        1200,
    )
    assert usage.uncached_input_tokens == 2000


def test_responses_web_search_counts_calls_that_ran_not_tools_offered() -> None:
    base = {
        "object": "response",
        "model": "gpt-4.1-2025-04-14",
        "usage": {"input_tokens": 20, "output_tokens": 10},
    }
    offered = response_facts("openai-responses", {**base, "output": [{"type": "message"}]})
    assert offered.usage is not None and offered.usage.web_search_calls == 0
    ran = response_facts(
        "openai-responses",
        {**base, "output": [{"type": "web_search_call"}, {"type": "web_search_call"}, {"type": "message"}]},
    )
    assert ran.usage is not None and ran.usage.web_search_calls == 2
    assert ran.model == "gpt-4.1-2025-04-14"


@pytest.mark.parametrize("terminal", ["response.completed", "response.incomplete", "response.failed"])
def test_responses_stream_takes_usage_from_the_terminal_event(terminal: str) -> None:
    reader = stream_reader("openai-responses")
    assert (
        reader.feed({"type": "response.created", "response": {"id": "r1", "model": "gpt-5", "usage": None}})
        == ""
    )
    assert reader.feed({"type": "response.output_text.delta", "delta": "hello hello"}) == "hello hello"
    assert reader.feed({"type": "response.reasoning_summary_text.delta", "delta": "think"}) == "think"
    assert reader.feed({"type": "response.function_call_arguments.delta", "delta": '{"a":1}'}) == '{"a":1}'
    assert reader.usage is None  # nothing before the terminal event
    reader.feed({"type": "response.output_item.done", "item": {"type": "web_search_call"}})
    reader.feed(
        {
            "type": terminal,
            "response": {
                "id": "r1",
                "model": "gpt-5-2025-08-07",
                "service_tier": "flex",
                "status": terminal.split(".")[1],
                "usage": {
                    "input_tokens": 30,
                    "output_tokens": 7,
                    "output_tokens_details": {"reasoning_tokens": 3},
                },
            },
        }
    )
    facts = stream_facts(reader)
    assert facts.usage == Usage(input_tokens=30, output_tokens=7, reasoning_tokens=3, web_search_calls=1)
    assert (facts.model, facts.service_tier) == ("gpt-5-2025-08-07", "flex")


# --- Gemini -------------------------------------------------------------------------------------


def test_gemini_thoughts_are_output_beside_candidates() -> None:
    usage = usage_from(
        "gemini",
        {
            "promptTokenCount": 1000,
            "cachedContentTokenCount": 600,
            "candidatesTokenCount": 200,
            "thoughtsTokenCount": 300,
            "toolUsePromptTokenCount": 50,
            "totalTokenCount": 1550,
        },
    )
    # input = prompt (cache inside) + tool-use prompt; output = candidates + thoughts
    assert usage.input_tokens == 1050 and usage.cache_read_tokens == 600
    assert usage.output_tokens == 500 and usage.reasoning_tokens == 300
    assert usage.total_tokens == 1550


def test_gemini_omitted_zero_fields() -> None:
    # proto3 JSON leaves zero counts out: candidates derived from the total, thoughts unknown
    usage = usage_from("gemini", {"promptTokenCount": 40, "totalTokenCount": 52})
    assert (usage.input_tokens, usage.output_tokens) == (40, 12)
    assert usage_from("gemini", {"candidatesTokenCount": 9}).input_tokens is None
    assert not usage_from("gemini", {"candidatesTokenCount": 9}).complete


def test_gemini_modality_details() -> None:
    usage = usage_from(
        "gemini",
        {
            "promptTokenCount": 1000,
            "candidatesTokenCount": 10,
            "cachedContentTokenCount": 300,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 400},
                {"modality": "AUDIO", "tokenCount": 600},
            ],
            "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 300}],
        },
    )
    assert (usage.input_audio_tokens, usage.cache_read_audio_tokens, usage.input_image_tokens) == (
        600,
        300,
        0,
    )


def test_gemini_stream_running_totals_take_the_last() -> None:
    reader = stream_reader("gemini")
    for n in range(1, 6):
        text = reader.feed(
            {
                "candidates": [{"content": {"parts": [{"text": "hi "}]}}],
                "usageMetadata": {
                    "promptTokenCount": 40,
                    "candidatesTokenCount": n,
                    "totalTokenCount": 40 + n,
                },
                "modelVersion": "gemini-2.5-flash",
            }
        )
        assert text == "hi "
    reader.feed(
        {
            "candidates": [{"content": {"parts": [{"text": "."}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 6, "thoughtsTokenCount": 20},
        }
    )
    usage = reader.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (
        40,
        26,
        20,
    )
    assert reader.finish_reason == "STOP" and reader.model == "gemini-2.5-flash"


def test_gemini_grounding_queries_are_search_calls() -> None:
    facts = response_facts(
        "gemini",
        {
            "candidates": [{"groundingMetadata": {"webSearchQueries": ["a", "b"]}}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 5},
        },
    )
    assert facts.usage is not None and facts.usage.web_search_calls == 2


# --- Bedrock Converse ---------------------------------------------------------------------------


def test_bedrock_input_excludes_the_cache_buckets() -> None:
    usage = usage_from(
        "bedrock-converse",
        {
            "inputTokens": 50,
            "outputTokens": 800,
            "cacheReadInputTokens": 40000,
            "cacheWriteInputTokens": 10000,
            "totalTokens": 50850,
        },
    )
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (50050, 40000, 10000)
    assert usage.total_tokens == 50850


def test_bedrock_cache_details_split_the_write_by_lifetime() -> None:
    usage = usage_from(
        "bedrock-converse",
        {
            "inputTokens": 10,
            "outputTokens": 5,
            "cacheWriteInputTokens": 300,
            "cacheDetails": [{"inputTokens": 100, "ttl": "5m"}, {"inputTokens": 200, "ttl": "1h"}],
        },
    )
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens, usage.input_tokens) == (100, 200, 310)


def test_bedrock_stream_metadata_event() -> None:
    reader = stream_reader("bedrock-converse")
    assert reader.feed({"contentBlockDelta": {"delta": {"text": "hello"}, "contentBlockIndex": 0}}) == "hello"
    assert reader.feed({"contentBlockDelta": {"delta": {"toolUse": {"input": '{"q":1}'}}}}) == '{"q":1}'
    reader.feed({"messageStop": {"stopReason": "end_turn"}})
    assert reader.usage is None
    reader.feed({"metadata": {"usage": {"inputTokens": 3, "outputTokens": 2, "cacheReadInputTokens": 7}}})
    assert reader.usage == Usage(input_tokens=10, output_tokens=2, cache_read_tokens=7)
    assert reader.finish_reason == "end_turn"


def test_anthropic_through_bedrock_invoke_stream() -> None:
    def wrap(event: dict) -> dict:
        return {"chunk": {"bytes": base64.b64encode(json.dumps(event).encode()).decode()}}

    reader = stream_reader("anthropic-messages")
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "m",
                "model": "claude",
                "usage": {"input_tokens": 20, "cache_read_input_tokens": 100, "output_tokens": 1},
            },
        },
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
        {
            "type": "message_stop",
            "amazon-bedrock-invocationMetrics": {"inputTokenCount": 20, "outputTokenCount": 9},
        },
    ]
    assert "".join(reader.feed(wrap(e)) for e in events) == "hi"
    assert reader.usage == Usage(input_tokens=120, output_tokens=9, cache_read_tokens=100)
    assert unwrap_bedrock_chunk({"type": "ping"}) == {"type": "ping"}


def test_bedrock_invocation_metrics_stand_in_when_no_delta_usage() -> None:
    reader = stream_reader("anthropic-messages")
    reader.feed({"type": "message_start", "message": {"usage": {"input_tokens": 20, "output_tokens": 1}}})
    reader.feed(
        {
            "type": "message_stop",
            "amazon-bedrock-invocationMetrics": {"inputTokenCount": 20, "outputTokenCount": 33},
        }
    )
    assert reader.usage == Usage(input_tokens=20, output_tokens=33)


# --- Ollama and OpenAI-compatible servers -------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [{"done": True, "eval_count": 42}, {"done": True, "prompt_eval_count": 0, "eval_count": 42}]
)
def test_ollama_missing_or_zero_prompt_is_unknown(raw: dict) -> None:
    usage = usage_from("ollama", raw)
    assert usage.input_tokens is None and usage.output_tokens == 42 and not usage.complete
    assert usage.filled(input_estimate=1500).input_tokens == 1500


def test_ollama_stream_counts_only_at_the_end() -> None:
    reader = stream_reader("ollama")
    assert (
        reader.feed(
            {"model": "llama3.1:8b", "message": {"role": "assistant", "content": "hel"}, "done": False}
        )
        == "hel"
    )
    assert reader.usage is None
    reader.feed(
        {
            "model": "llama3.1:8b",
            "message": {"content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 26,
            "eval_count": 3,
        }
    )
    assert reader.usage == Usage(input_tokens=26, output_tokens=3) and reader.finish_reason == "stop"


@pytest.mark.parametrize("server", ["vllm", "llama.cpp"])
def test_openai_compatible_running_totals_are_replaced(server: str) -> None:
    reader = stream_reader("openai-compatible")
    for n in range(1, 51):
        reader.feed(
            {
                "choices": [{"delta": {"content": "x"}}],
                "usage": {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n},
            }
        )
    assert reader.usage == Usage(input_tokens=12, output_tokens=50)


def test_openai_chat_audio_service_tier_and_reported_cost() -> None:
    facts = response_facts(
        "openai-chat",
        {
            "model": "gpt-4o-audio-preview-2024-12-17",
            "service_tier": "priority",
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": 50,
                "prompt_tokens_details": {"audio_tokens": 60},
                "completion_tokens_details": {"audio_tokens": 40},
                "cost": 0,
            },
        },
    )
    assert facts.usage is not None
    assert (facts.usage.input_audio_tokens, facts.usage.output_audio_tokens) == (60, 40)
    assert facts.service_tier == "priority" and facts.reported_cost_usd == Decimal(0)


def test_anthropic_service_tier_lives_in_usage() -> None:
    facts = response_facts(
        "anthropic-messages",
        {"model": "claude-x", "usage": {"input_tokens": 1, "output_tokens": 1, "service_tier": "standard"}},
    )
    assert facts.service_tier == "default"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_keeps_unknowns_unknown(dialect: str) -> None:
    usage = usage_from(dialect, {})
    assert usage.input_tokens is None and usage.output_tokens is None and not usage.complete
    none = usage_from(dialect, None)
    assert none.input_source == "none" and none.output_source == "none"


@pytest.mark.parametrize(
    ("dialect", "raw"),
    [
        ("openai-responses", {"input_tokens": -1}),
        ("gemini", {"promptTokenCount": "many"}),
        ("bedrock-converse", {"inputTokens": 1.5}),
        ("ollama", {"eval_count": True}),
    ],
)
def test_malformed_counts_name_the_field(dialect: str, raw: dict) -> None:
    with pytest.raises(ValidationError) as info:
        usage_from(dialect, raw)
    assert info.value.field


def test_response_must_be_an_object() -> None:
    with pytest.raises(ValidationError):
        response_facts("gemini", [])  # type: ignore[arg-type]
