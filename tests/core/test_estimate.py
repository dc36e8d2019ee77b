"""Tokenizers and pre-flight estimates.

Sources: tiktoken's model map (OpenAI's own: o200k_base for GPT-4o/4.1/5 and the o-series,
cl100k_base for GPT-4 and GPT-3.5); OpenAI's cookbook "How to count tokens with tiktoken" (3 tokens
per message, 1 per name, 3 priming the reply, and its published API counts: 129 prompt tokens for
its example conversation on gpt-3.5-turbo/gpt-4, 124 on gpt-4o/gpt-4o-mini; 105/101 with its
weather tool); OpenAI's image tile rule; the cases' ``hello`` texts (C26, C35, C36, C37).
"""

from __future__ import annotations

import copy
import logging
from decimal import ROUND_CEILING, Decimal
from typing import Any

import pytest

from tests.support.shared import case
from tokenward.core.estimate import (
    DEFAULT_APPROXIMATION_FACTOR,
    count_tokens,
    estimate_anthropic_messages,
    estimate_openai_chat,
)
from tokenward.core.tokenizers import OFFLINE_ENCODINGS, encoding, encoding_for_model
from tokenward.errors import ConfigError


def hellos(k: int) -> str:
    return "hello" + " hello" * (k - 1)


# --- tokenizers ---------------------------------------------------------------------------------

C35_ENCODINGS = {
    "gpt-4o": "o200k_base",
    "gpt-4o-2024-08-06": "o200k_base",
    "gpt-4.1": "o200k_base",
    "o3": "o200k_base",
    "o4-mini": "o200k_base",
    "gpt-5": "o200k_base",
    "gpt-5-nano": "o200k_base",
    "ft:gpt-4o-2024-08-06:acme::fx35": "o200k_base",
    "gpt-4": "cl100k_base",
    "gpt-3.5-turbo": "cl100k_base",
}


@pytest.mark.parametrize(("model", "name"), sorted(C35_ENCODINGS.items()))
def test_c35_encoding_per_model(model: str, name: str) -> None:
    assert encoding_for_model(model) == (name, True)
    estimate = estimate_openai_chat(
        {"model": model, "messages": [{"role": "user", "content": "Hello world"}]}
    )
    assert estimate.encoding == name
    assert not estimate.approximate


def test_provider_prefix_is_ignored() -> None:
    assert encoding_for_model("openai/gpt-4o") == ("o200k_base", True)
    assert encoding_for_model("azure/gpt-4") == ("cl100k_base", True)


def test_c35_unknown_model_is_approximate_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    encoding_for_model.cache_clear()  # the warning is logged once per model id and process
    with caplog.at_level(logging.WARNING, logger="tokenward.tokenizers"):
        estimate = estimate_openai_chat(
            {"model": "fixture-unknown-model-x", "messages": [{"role": "user", "content": "Hello world"}]}
        )
    assert estimate.approximate
    assert estimate.encoding == "o200k_base"
    assert any(
        "fixture-unknown-model-x" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    )


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize("k", [1, 2, 3, 10, 100, 1000])
def test_hello_k_is_k_tokens(name: str, k: int) -> None:
    assert count_tokens(hellos(k), name) == k


def test_empty_and_special_token_text() -> None:
    assert count_tokens("") == 0
    # special-token text in user content is ordinary text: counted, never an exception
    assert count_tokens("<|endoftext|>") > 0
    assert count_tokens("<|endoftext|>", "cl100k_base") > 0


def test_encodings_are_cached_and_unknown_ones_refused() -> None:
    assert encoding("o200k_base") is encoding("o200k_base")
    assert set(OFFLINE_ENCODINGS) >= {"o200k_base", "cl100k_base"}
    with pytest.raises(ConfigError, match="p50k_base"):
        encoding("p50k_base")


# --- OpenAI chat framing ------------------------------------------------------------------------

COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.mark.parametrize(
    ("model", "api_count"), [("gpt-3.5-turbo", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)]
)
def test_cookbook_example_matches_the_api_count(model: str, api_count: int) -> None:
    assert estimate_openai_chat({"messages": COOKBOOK_MESSAGES}, model).input_tokens == api_count


def test_framing_per_message_name_and_priming() -> None:
    def est(messages: list[dict[str, Any]]) -> int:
        return estimate_openai_chat({"model": "gpt-4o", "messages": messages}).input_tokens

    assert est([]) == 3  # only the reply priming
    one = est([{"role": "user", "content": hellos(1)}])
    # the content's tokens count one for one
    assert est([{"role": "user", "content": hellos(50)}]) - one == 49
    # a second identical message costs what the first did over the priming
    assert est([{"role": "user", "content": hellos(1)}] * 2) - one == one - 3
    # a name costs its tokens plus 1
    assert est([{"role": "user", "name": "hello", "content": hellos(1)}]) - one == 2
    # content given as text parts counts the same as a string
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": " hello hello"}]
    assert est([{"role": "user", "content": parts}]) == est([{"role": "user", "content": hellos(3)}])


def test_images_follow_the_tile_rule() -> None:
    def est(detail: str | None) -> int:
        image: dict[str, Any] = {"url": "data:image/png;base64,AAAA"}
        if detail:
            image["detail"] = detail
        content = [{"type": "image_url", "image_url": image}]
        return estimate_openai_chat(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
        ).input_tokens

    empty = estimate_openai_chat(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": []}]}
    ).input_tokens
    assert est("low") - empty == 85
    # unknown size: the largest tiling (2048x768 -> 8 tiles of 512 px): 85 + 8 * 170
    assert est("high") - empty == 85 + 170 * 8
    assert est(None) - empty == 85 + 170 * 8


def test_assistant_tool_calls_are_counted() -> None:
    plain = [{"role": "assistant", "content": "hello"}]
    with_call = [
        {
            "role": "assistant",
            "content": "hello",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "hello", "arguments": hellos(2)}}
            ],
        }
    ]
    base = estimate_openai_chat({"model": "gpt-4o", "messages": plain}).input_tokens
    assert estimate_openai_chat({"model": "gpt-4o", "messages": with_call}).input_tokens - base == 1 + 2


def test_c37_variant_tool_call_history_is_counted() -> None:
    first = {"role": "user", "content": "Please check what is on my calendar for tomorrow."}
    history = [
        first,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_fx37",
                    "type": "function",
                    "function": {
                        "name": "list_calendar_events",
                        "arguments": '{"query":"tomorrow","limit":20}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_fx37", "content": "[]"},
    ]
    short = estimate_openai_chat({"model": "gpt-4o", "messages": [first]}).input_tokens
    long = estimate_openai_chat({"model": "gpt-4o", "messages": history}).input_tokens
    assert long - short >= 13  # name 3 + arguments 10 tokens in o200k_base


def test_c37_tool_schemas_are_counted() -> None:
    scenario = case("C37")["scenario"]
    body = {"model": "gpt-4o", "messages": scenario["messages"]}
    without = estimate_openai_chat(body).input_tokens
    with_tools = estimate_openai_chat({**body, "tools": scenario["tools"]}).input_tokens
    assert with_tools - without >= 3189  # 0.9 x 3,543 tokens of the compact JSON, rounded up
    # lengthening a title, a default or an anyOf branch strictly increases the estimate
    for mutate in (
        lambda t: t["function"]["parameters"].__setitem__(
            "title", t["function"]["parameters"]["title"] + " extra words"
        ),
        lambda t: t["function"]["parameters"]["properties"]["locale"].__setitem__(
            "default", "en-GB-oxendict"
        ),
        lambda t: t["function"]["parameters"]["properties"]["limit"]["anyOf"].append({"type": "string"}),
    ):
        tools = copy.deepcopy(scenario["tools"])
        mutate(tools[3])
        assert estimate_openai_chat({**body, "tools": tools}).input_tokens > with_tools


# --- Anthropic ----------------------------------------------------------------------------------

C36_BODY = {
    "messages": [
        {
            "role": "user",
            "content": "Summarise the attached incident report in three bullet points and list any follow-up "
            "actions with owners.",
        }
    ]
}


def test_c36_anthropic_estimate_is_approximate_and_scaled() -> None:
    unscaled = estimate_anthropic_messages(C36_BODY, factor=Decimal(1)).input_tokens
    default = estimate_anthropic_messages(C36_BODY, "claude-3-5-sonnet-20241022")
    assert default.approximate
    assert DEFAULT_APPROXIMATION_FACTOR > 1
    expected = int(
        (Decimal(unscaled) * DEFAULT_APPROXIMATION_FACTOR).to_integral_value(rounding=ROUND_CEILING)
    )
    assert default.input_tokens == expected
    assert default.input_tokens > unscaled
    assert estimate_anthropic_messages(C36_BODY, factor=Decimal(2)).input_tokens == 2 * unscaled


def test_c36_same_estimate_for_a_bedrock_model_id() -> None:
    direct = estimate_anthropic_messages(C36_BODY, "claude-3-5-sonnet-20241022")
    bedrock = estimate_anthropic_messages(C36_BODY, "anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert direct == bedrock


def test_anthropic_counts_system_blocks_tools_and_history() -> None:
    def raw(body: dict[str, Any]) -> int:
        return estimate_anthropic_messages(body, factor=Decimal(1)).input_tokens

    base = {"messages": [{"role": "user", "content": "hello"}]}
    assert raw({**base, "system": hellos(7)}) - raw(base) == 7
    assert raw({**base, "system": [{"type": "text", "text": hellos(7)}]}) - raw(base) == 7
    assert raw({**base, "tools": [{"name": "t", "input_schema": {"type": "object"}}]}) > raw(base)
    tool_turns = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "hello", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": hellos(40)}]},
    ]
    assert raw({"messages": tool_turns}) - raw(base) >= 1 + 40
    image = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]
    # unknown image size: Anthropic's documented maximum of about 1,600 tokens
    assert raw({"messages": [{"role": "user", "content": image}]}) >= 1600


def test_models_without_a_tokenizer_are_scaled_in_the_openai_dialect_too() -> None:
    # C32-style: a Claude (or Gemini) model behind an OpenAI-compatible endpoint. Its tokenizer is
    # not o200k_base, so the count is scaled by the safety factor and marked approximate.
    body = {"messages": [{"role": "user", "content": hellos(97)}]}
    unscaled = estimate_openai_chat(body, "claude-sonnet-4-5@20250929", factor=Decimal(1))
    assert unscaled.input_tokens == 3 + 1 + 97 + 3  # the cookbook framing over o200k_base
    scaled = estimate_openai_chat(body, "claude-sonnet-4-5@20250929")
    assert scaled.approximate
    assert scaled.input_tokens == 125  # ceil(104 x 1.2) = ceil(124.8)
    assert estimate_openai_chat(body, "gemini-3-pro-preview", factor=Decimal(2)).input_tokens == 208
    # a model with its own tokenizer is exact and never scaled
    assert estimate_openai_chat(body, "gpt-4o", factor=Decimal(2)).input_tokens == 104


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},  # Responses shape
        {
            "type": "image_url",
            "image_url": "https://example.com/a.png",
            "detail": "low",
        },  # URL given as a string
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
    ],
)
def test_image_parts_in_every_shape_are_counted_without_error(part: dict[str, Any]) -> None:
    def est(content: list[Any]) -> int:
        return estimate_openai_chat(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
        ).input_tokens

    assert est([part]) - est([]) == 85


def test_odd_bodies_never_raise() -> None:
    for body in (
        {"messages": [{"role": "assistant", "content": None, "tool_calls": [None, 5, {"function": "x"}]}]},
        {"messages": [{"role": "user", "content": 5, "name": 5}]},
        {"messages": None, "tools": ["x", 5, None]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
    ):
        assert estimate_openai_chat(body, "gpt-4o").input_tokens >= 3
    for body in (
        {
            "messages": [
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": None}]}
            ]
        },
        {"system": 5, "messages": [{"role": "user", "content": 5}], "tools": [5]},
    ):
        assert estimate_anthropic_messages(body).input_tokens >= 0
