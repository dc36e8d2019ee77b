"""Provider usage normalisation and stream readers (OpenAI chat, Anthropic Messages).

Facts come from DESIGN.md's "Provider usage semantics" table and the provider pages cited in
``tokenward.core.dialects``: OpenAI's cached/reasoning counts are *inside* prompt/completion;
Anthropic's ``input_tokens`` *excludes* both cache counters; Anthropic's ``message_delta.usage`` is
cumulative; running totals are replaced, never summed. Expected figures are the worked cases'.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenward.core.dialects import DIALECTS, stream_reader, usage_from
from tokenward.core.dialects.anthropic_messages import AnthropicMessagesStream, usage_from_anthropic
from tokenward.core.dialects.openai_chat import OpenAIChatStream, usage_from_openai_chat
from tokenward.core.estimate import count_tokens
from tokenward.core.usage import Usage
from tokenward.errors import ValidationError

# --- OpenAI chat --------------------------------------------------------------------------------


def test_c01_cached_tokens_are_inside_prompt_tokens() -> None:
    usage = usage_from_openai_chat(
        {"prompt_tokens": 17903, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 17817}}
    )
    assert usage.input_tokens == 17903  # not 17903 + 17817
    assert usage.cache_read_tokens == 17817
    assert usage.uncached_input_tokens == 86
    assert usage.output_tokens == 500
    assert usage.complete


def test_c07_reasoning_is_inside_completion_tokens() -> None:
    usage = usage_from_openai_chat(
        {
            "prompt_tokens": 17,
            "completion_tokens": 482,
            "completion_tokens_details": {"reasoning_tokens": 448},
        }
    )
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (17, 482, 448)


def test_c08_total_is_prompt_plus_completion_not_plus_reasoning() -> None:
    usage = usage_from_openai_chat(
        {
            "prompt_tokens": 2008,
            "completion_tokens": 266,
            "total_tokens": 2274,
            "completion_tokens_details": {"reasoning_tokens": 261},
        }
    )
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (2008, 266, 261)
    assert usage.total_tokens == 2274


def test_c12_variant_zero_prompt_with_output_is_unknown() -> None:
    usage = usage_from("openai-compatible", {"prompt_tokens": 0, "completion_tokens": 42, "total_tokens": 42})
    assert usage.input_tokens is None
    assert usage.input_source == "none"
    assert usage.output_tokens == 42
    assert not usage.complete


def test_c13_explicit_nulls_are_unknown_and_do_not_raise() -> None:
    usage = usage_from("openai-chat", {"prompt_tokens": None, "completion_tokens": 25, "total_tokens": None})
    assert usage.input_tokens is None
    assert usage.output_tokens == 25
    assert usage.total_tokens is None
    assert not usage.complete
    filled = usage.filled(input_estimate=400)
    assert (filled.input_tokens, filled.total_tokens) == (400, 425)


def test_missing_usage_object_is_all_unknown() -> None:
    for dialect in DIALECTS:
        usage = usage_from(dialect, None)
        assert usage.input_tokens is None and usage.output_tokens is None
        assert (usage.input_source, usage.output_source) == ("none", "none")


def test_deepseek_prompt_cache_hit_tokens() -> None:
    # DeepSeek: prompt_tokens = prompt_cache_hit_tokens + prompt_cache_miss_tokens.
    usage = usage_from_openai_chat(
        {
            "prompt_tokens": 100,
            "completion_tokens": 10,
            "prompt_cache_hit_tokens": 60,
            "prompt_cache_miss_tokens": 40,
        }
    )
    assert (usage.input_tokens, usage.cache_read_tokens, usage.uncached_input_tokens) == (100, 60, 40)


def test_cached_tokens_win_over_deepseek_field_when_both_present() -> None:
    usage = usage_from_openai_chat(
        {"prompt_tokens": 100, "prompt_cache_hit_tokens": 60, "prompt_tokens_details": {"cached_tokens": 60}}
    )
    assert usage.cache_read_tokens == 60


def test_openrouter_cache_write_tokens() -> None:
    usage = usage_from_openai_chat(
        {"prompt_tokens": 1000, "completion_tokens": 1, "prompt_tokens_details": {"cache_write_tokens": 700}}
    )
    assert (usage.cache_write_tokens, usage.uncached_input_tokens) == (700, 300)


def test_reasoning_above_completion_is_read_as_reported_beside_it() -> None:
    # Gemini behind some proxies: thoughts are not inside the completion (as thoughtsTokenCount).
    usage = usage_from_openai_chat(
        {"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 8}}
    )
    assert (usage.output_tokens, usage.reasoning_tokens) == (13, 8)


def test_reasoning_equal_to_completion_stays_inside() -> None:
    usage = usage_from_openai_chat(
        {"prompt_tokens": 10, "completion_tokens": 8, "completion_tokens_details": {"reasoning_tokens": 8}}
    )
    assert usage.output_tokens == 8


def test_zero_prompt_and_zero_output_is_a_real_zero() -> None:
    usage = usage_from_openai_chat({"prompt_tokens": 0, "completion_tokens": 0})
    assert (usage.input_tokens, usage.output_tokens) == (0, 0)


def test_integral_floats_are_accepted() -> None:
    usage = usage_from_openai_chat({"prompt_tokens": 12.0, "completion_tokens": 3})
    assert usage.input_tokens == 12


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"prompt_tokens": "12"}, "prompt_tokens"),
        ({"completion_tokens": 1.5}, "completion_tokens"),
        ({"prompt_tokens": 1e308}, "prompt_tokens"),
        ({"completion_tokens": 2**53}, "completion_tokens"),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": True}}, "cached_tokens"),
    ],
)
def test_malformed_counts_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        usage_from_openai_chat(raw)
    assert info.value.field == field


def test_cached_above_prompt_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        usage_from_openai_chat({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}})
    assert info.value.field == "input_tokens"


def test_unknown_dialect_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        usage_from("cohere-chat", {})
    assert info.value.field == "dialect"
    with pytest.raises(ValidationError):
        stream_reader("vertex-predict")


# --- Anthropic Messages -------------------------------------------------------------------------


def test_c03_anthropic_input_excludes_both_cache_buckets() -> None:
    usage = usage_from(
        "anthropic-messages",
        {
            "input_tokens": 1200,
            "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 500,
            "output_tokens": 100,
        },
    )
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (2000, 500, 300)
    assert usage.uncached_input_tokens == 1200
    assert usage.output_tokens == 100


def test_c04_heavily_cached_call_is_not_nearly_free() -> None:
    usage = usage_from_anthropic(
        {
            "input_tokens": 50,
            "cache_creation_input_tokens": 10000,
            "cache_read_input_tokens": 40000,
            "output_tokens": 800,
        }
    )
    assert usage.input_tokens == 50050
    assert usage.total_tokens == 50850


def test_c06_anthropic_usage() -> None:
    usage = usage_from_anthropic(
        {
            "input_tokens": 5,
            "cache_creation_input_tokens": 4735,
            "cache_read_input_tokens": 0,
            "output_tokens": 255,
        }
    )
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (4740, 0, 4735)
    assert usage.uncached_input_tokens == 5


def test_anthropic_5m_1h_split() -> None:
    usage = usage_from_anthropic(
        {
            "input_tokens": 10,
            "cache_creation_input_tokens": 3000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
            "cache_read_input_tokens": 0,
            "output_tokens": 7,
        }
    )
    assert usage.input_tokens == 3010
    assert (usage.cache_write_tokens, usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (
        3000,
        1000,
        2000,
    )


def test_anthropic_split_without_total_adds_up() -> None:
    usage = usage_from_anthropic(
        {
            "input_tokens": 10,
            "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 2},
        }
    )
    assert (usage.cache_write_tokens, usage.input_tokens) == (3, 13)
    assert usage.output_tokens is None


def test_anthropic_web_searches_from_server_tool_use() -> None:
    # C25 variant anthropic-server-search.
    usage = usage_from_anthropic(
        {"input_tokens": 20000, "output_tokens": 700, "server_tool_use": {"web_search_requests": 3}}
    )
    assert (usage.input_tokens, usage.output_tokens, usage.web_search_calls) == (20000, 700, 3)


def test_anthropic_missing_input_is_unknown() -> None:
    usage = usage_from_anthropic({"cache_read_input_tokens": 10, "output_tokens": 5})
    assert usage.input_tokens is None
    assert usage.input_source == "none"
    assert usage.cache_read_tokens == 10


# --- stream readers -----------------------------------------------------------------------------


def _chunk(content: str | None = None, usage: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    chunk: dict[str, Any] = {
        "id": "cmpl-fx",
        "object": "chat.completion.chunk",
        "model": "fixture-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": extra.pop("finish_reason", None)}],
    }
    if usage is not None:
        chunk["usage"] = usage
    chunk.update(extra)
    return chunk


def test_c30_running_totals_are_replaced_not_summed() -> None:
    reader = stream_reader("openai-compatible")
    for n in range(1, 198):
        reader.feed(
            _chunk(
                ".",
                {"prompt_tokens": 40, "completion_tokens": n, "total_tokens": 40 + n},
                finish_reason="stop" if n == 197 else None,
            )
        )
    assert reader.usage is not None
    assert (reader.usage.input_tokens, reader.usage.output_tokens) == (40, 197)
    assert reader.finish_reason == "stop"
    assert (reader.model, reader.response_id) == ("fixture-model", "cmpl-fx")


def test_c26_openai_stream_usage_in_final_chunk_and_text_for_counting() -> None:
    # Three text chunks of exactly 100 "hello" tokens each, then a usage-only chunk.
    texts = ["hello" + " hello" * 99, " hello" * 100, " hello" * 100]
    reader = OpenAIChatStream()
    seen = [reader.feed(_chunk(text)) for text in texts]
    assert reader.usage is None  # include_usage ignored or not yet arrived
    seen.append(reader.feed(_chunk(None, finish_reason="stop")))
    final = {"id": "cmpl-fx", "choices": [], "usage": {"prompt_tokens": 1200, "completion_tokens": 300}}
    assert reader.feed(final) == ""
    assert count_tokens("".join(seen)) == 300
    assert reader.usage == Usage(input_tokens=1200, output_tokens=300)


def test_openai_stream_ignores_null_usage_on_ordinary_chunks() -> None:
    reader = OpenAIChatStream()
    reader.feed(_chunk("hi", usage={"prompt_tokens": 3, "completion_tokens": 1}))
    reader.feed({**_chunk("!"), "usage": None})
    assert reader.usage is not None and reader.usage.output_tokens == 1


def test_openai_stream_returns_reasoning_and_tool_call_text() -> None:
    reader = OpenAIChatStream()
    got = reader.feed(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "reasoning_content": "think ",
                        "tool_calls": [{"index": 0, "function": {"name": "lookup", "arguments": '{"q":'}}],
                    },
                }
            ]
        }
    )
    assert got == 'think lookup{"q":'
    assert reader.feed({"choices": [{"index": 0, "delta": {"refusal": "no"}}]}) == "no"
    assert reader.feed({"choices": "garbage"}) == ""


def _start(usage: dict[str, Any], model: str = "claude-sonnet-4-5-20250929") -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {"id": "msg_fx", "type": "message", "role": "assistant", "model": model, "usage": usage},
    }


def _delta(usage: dict[str, Any] | None, stop: str = "end_turn") -> dict[str, Any]:
    event: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}}
    if usage is not None:
        event["usage"] = usage
    return event


def test_c27_cumulative_message_delta_replaces() -> None:
    reader = stream_reader("anthropic-messages")
    reader.feed(_start({"input_tokens": 27, "cache_read_input_tokens": 0, "output_tokens": 1}))
    reader.feed(
        _delta(
            {
                "input_tokens": 27,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 47,
            }
        )
    )
    reader.feed({"type": "message_stop"})
    assert reader.usage is not None
    assert (reader.usage.input_tokens, reader.usage.cache_read_tokens, reader.usage.output_tokens) == (
        27,
        0,
        47,
    )
    assert reader.finish_reason == "end_turn"
    assert (reader.model, reader.response_id) == ("claude-sonnet-4-5-20250929", "msg_fx")


def test_c27_basic_delta_output_only() -> None:
    reader = AnthropicMessagesStream()
    reader.feed(_start({"input_tokens": 25, "output_tokens": 1}))
    reader.feed(_delta({"output_tokens": 15}))
    assert reader.usage is not None
    assert (reader.usage.input_tokens, reader.usage.output_tokens) == (25, 15)  # not 16


def test_c28_delta_without_input_fields_keeps_them() -> None:
    reader = AnthropicMessagesStream()
    reader.feed(_start({"input_tokens": 2000, "cache_read_input_tokens": 10000, "output_tokens": 1}))
    reader.feed(_delta({"output_tokens": 300}))
    assert reader.usage is not None
    assert (reader.usage.input_tokens, reader.usage.cache_read_tokens, reader.usage.output_tokens) == (
        12000,
        10000,
        300,
    )


def test_c28_variant_input_grows_during_stream() -> None:
    reader = AnthropicMessagesStream()
    reader.feed(_start({"input_tokens": 2000, "cache_read_input_tokens": 10000, "output_tokens": 1}))
    reader.feed(_delta({"input_tokens": 9500, "cache_read_input_tokens": 10000, "output_tokens": 600}))
    assert reader.usage is not None
    assert (reader.usage.input_tokens, reader.usage.cache_read_tokens, reader.usage.output_tokens) == (
        19500,
        10000,
        600,
    )


def test_repeated_deltas_replace_and_nested_counters_merge() -> None:
    reader = AnthropicMessagesStream()
    reader.feed(
        _start(
            {
                "input_tokens": 10,
                "cache_creation_input_tokens": 300,
                "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
                "output_tokens": 1,
            }
        )
    )
    reader.feed(_delta({"output_tokens": 50, "server_tool_use": {"web_search_requests": 1}}))
    reader.feed(_delta({"output_tokens": 80, "server_tool_use": {"web_search_requests": 2}}))
    usage = reader.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.web_search_calls) == (310, 80, 2)
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (100, 200)


def test_stream_ending_after_message_start_has_unknown_output() -> None:
    reader = AnthropicMessagesStream()
    reader.feed(_start({"input_tokens": 25, "output_tokens": 1}))
    usage = reader.usage
    assert usage is not None
    assert usage.input_tokens == 25
    assert usage.output_tokens is None  # the opening 1 is not the final count
    assert usage.output_source == "none"
    assert not usage.complete


def test_anthropic_stream_without_any_usage() -> None:
    reader = AnthropicMessagesStream()
    assert reader.usage is None
    reader.feed({"type": "ping"})
    assert reader.usage is None


def test_anthropic_stream_returns_text_thinking_and_tool_input() -> None:
    reader = AnthropicMessagesStream()
    assert reader.feed(_start({"input_tokens": 1, "output_tokens": 1})) == ""
    got = [
        reader.feed(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        ),
        reader.feed(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hello"}}
        ),
        reader.feed(
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "thinking_delta", "thinking": " hmm"},
            }
        ),
        reader.feed(
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}},
            }
        ),
        reader.feed(
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": '{"a":1}'},
            }
        ),
        reader.feed(
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "signature_delta", "signature": "x"},
            }
        ),
        reader.feed(_delta({"output_tokens": 9})),
    ]
    assert "".join(got) == 'hello hmmget_weather{"a":1}'


# --- round trips (hypothesis) --------------------------------------------------------------------

_n = st.integers(min_value=0, max_value=2_000_000)


@settings(deadline=None)  # shared, noisy machines: no per-example time limit
@given(fresh=_n, cached=_n, written=_n, answer=_n, reasoning=_n)
def test_openai_round_trip(fresh: int, cached: int, written: int, answer: int, reasoning: int) -> None:
    prompt = fresh + cached + written
    completion = answer + reasoning
    raw = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    usage = usage_from_openai_chat(raw)
    if prompt == 0 and (completion > 0):
        assert usage.input_tokens is None  # a zero-token prompt cannot be real: unknown
    else:
        assert usage.input_tokens == prompt
        assert usage.uncached_input_tokens == fresh
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (cached, written)
    assert (usage.output_tokens, usage.reasoning_tokens) == (completion, reasoning)


@settings(deadline=None)  # shared, noisy machines: no per-example time limit
@given(fresh=_n, cached=_n, write_5m=_n, write_1h=_n, output=_n, searches=st.integers(0, 50))
def test_anthropic_round_trip(
    fresh: int, cached: int, write_5m: int, write_1h: int, output: int, searches: int
) -> None:
    raw = {
        "input_tokens": fresh,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
        "output_tokens": output,
        "server_tool_use": {"web_search_requests": searches},
    }
    usage = usage_from_anthropic(raw)
    assert usage.input_tokens == fresh + cached + write_5m + write_1h
    assert usage.uncached_input_tokens == fresh
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (cached, write_5m + write_1h)
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (write_5m, write_1h)
    assert (usage.output_tokens, usage.web_search_calls) == (output, searches)
    assert usage.complete


@settings(deadline=None)  # shared, noisy machines: no per-example time limit
@given(opening=st.integers(0, 5), outputs=st.lists(st.integers(0, 10**6), min_size=1, max_size=6), fresh=_n)
def test_anthropic_stream_takes_the_last_cumulative_output(
    opening: int, outputs: list[int], fresh: int
) -> None:
    reader = AnthropicMessagesStream()
    reader.feed(_start({"input_tokens": fresh, "output_tokens": opening}))
    for output in outputs:
        reader.feed(_delta({"output_tokens": output}))
    assert reader.usage is not None
    assert (reader.usage.input_tokens, reader.usage.output_tokens) == (fresh, outputs[-1])


_maybe = st.none() | st.integers(min_value=0, max_value=10**6)


@settings(deadline=None)  # shared, noisy machines: no per-example time limit
@given(
    prompt=_maybe,
    completion=_maybe,
    cached=_maybe,
    written=_maybe,
    reasoning=_maybe,
    fresh=_maybe,
    read=_maybe,
)
def test_normalised_usage_never_has_parts_larger_than_wholes(
    prompt: int | None,
    completion: int | None,
    cached: int | None,
    written: int | None,
    reasoning: int | None,
    fresh: int | None,
    read: int | None,
) -> None:
    openai_raw = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    anthropic_raw = {
        "input_tokens": fresh,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
        "output_tokens": completion,
    }
    for dialect, raw in (("openai-chat", openai_raw), ("anthropic-messages", anthropic_raw)):
        try:
            usage = usage_from(dialect, raw)
        except ValidationError as exc:
            assert exc.field is not None
            continue
        if usage.input_tokens is not None:
            assert (usage.cache_read_tokens or 0) + (usage.cache_write_tokens or 0) <= usage.input_tokens
        if usage.output_tokens is not None:
            assert (usage.reasoning_tokens or 0) <= usage.output_tokens
