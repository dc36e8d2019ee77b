"""Usage recorded from a real model's real counts: the official ``openai`` client, through the
gateway, to Gemma 3 270M on a local server.

The ledger must hold exactly what the server reported (``usage`` of a JSON answer, the final stream
chunk where the server sends one). llama-cpp-python never sends usage in a stream: there the charge
is tokenward's own count (the streamed text counted with the estimator's encoding, ``o200k_base``
for Gemma, and the prompt estimate), marked as such.
"""

from __future__ import annotations

import openai
import pytest

from tests.realmodel.conftest import MODEL, ModelServer, client, measure
from tokenward.core.budgets import Subject
from tokenward.core.estimate import count_tokens

pytestmark = pytest.mark.realmodel

PROSE = [{"role": "user", "content": "Once upon a time"}]


def only_event(gateway):
    events = gateway.observer().events()
    assert len(events) == 1, events
    return events[0]


def test_json_usage_recorded_is_the_servers_own_count(real_gateway, model_server: ModelServer) -> None:
    gateway = real_gateway()
    reply = client(gateway, session="s-json").chat.completions.create(
        model=MODEL, messages=PROSE, max_tokens=12, temperature=0
    )
    assert reply.choices[0].message.content
    assert 0 < reply.usage.completion_tokens <= 12
    event = only_event(gateway)
    assert event.status == "ok" and event.usage.complete
    assert event.usage.input_tokens == reply.usage.prompt_tokens
    assert event.usage.output_tokens == reply.usage.completion_tokens
    assert event.charged["total_tokens"] == reply.usage.total_tokens
    assert event.subject == Subject(
        project="realmodel", user="realmodel/alice", key="test-key", session="realmodel/s-json"
    ).with_model(event.model)
    assert event.cost_usd is not None and not event.cost_estimated
    # the gateway changed nothing the server counts: the same request straight to the server
    direct = model_server.chat(messages=PROSE, max_tokens=12, temperature=0)
    assert direct["usage"]["prompt_tokens"] == reply.usage.prompt_tokens
    assert direct["usage"]["completion_tokens"] == reply.usage.completion_tokens


def test_stream_is_charged_from_the_servers_final_usage_or_from_our_count(
    real_gateway, model_server: ModelServer
) -> None:
    gateway = real_gateway()
    stream = client(gateway).chat.completions.create(
        model=MODEL,
        messages=PROSE,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text and len(finishes) == 1
    event = only_event(gateway)
    # what the model really generated for this request: its non-streamed twin (greedy decoding)
    real = model_server.chat(messages=PROSE, max_tokens=12, temperature=0)["usage"]
    if model_server.streams_usage:
        usage = chunks[-1].usage
        assert usage is not None, "the server's final chunk carries usage"
        assert event.status == "ok" and event.usage.complete
        assert (event.usage.input_tokens, event.usage.output_tokens) == (
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        assert not event.cost_estimated
    else:
        # llama-cpp-python sends no usage in streams, even when asked: tokenward charges its own count
        assert b'"usage"' not in model_server.stream_bytes(
            messages=PROSE, max_tokens=4, stream_options={"include_usage": True}
        )
        assert event.usage.output_source == "counted_stream_text"
        assert event.usage.input_source == "preflight_estimate"
        assert not event.usage.complete and event.cost_estimated
        assert event.usage.output_tokens <= 12  # never more than the bound the hold was made for
        if event.status == "ok":
            assert event.usage.output_tokens == sum(
                count_tokens(c.choices[0].delta.content or "") for c in chunks if c.choices
            )
        assert event.usage.input_tokens == event.held["total_tokens"] - 12  # the prompt estimate
        measure(
            "stream without usage",
            model_server.kind,
            our_output_count=event.usage.output_tokens,
            real_output_tokens=real["completion_tokens"],
            our_input_estimate=event.usage.input_tokens,
            real_prompt_tokens=real["prompt_tokens"],
        )


def test_the_gateway_bounds_a_request_that_sets_no_max_tokens(
    real_gateway, model_server: ModelServer
) -> None:
    """Without ``max_tokens`` these servers generate until the context is full: the gateway sends its
    default bound, and the model stops there."""
    gateway = real_gateway(defaults={"max_output_tokens": 16})
    reply = client(gateway).chat.completions.create(model=MODEL, messages=PROSE, temperature=0)
    assert reply.usage.completion_tokens <= 16
    assert reply.choices[0].finish_reason == "length"  # the base model rambles on: it hit the bound
    event = only_event(gateway)
    assert event.usage.output_tokens == reply.usage.completion_tokens
    assert event.held["total_tokens"] - 16 >= 1  # the hold was the prompt estimate plus 16


def test_a_zero_max_tokens_is_refused_before_the_server_sees_it(real_gateway) -> None:
    gateway = real_gateway()
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model=MODEL, messages=PROSE, max_tokens=0)
    assert "max_tokens" in str(caught.value)
    assert gateway.observer().events() == []


@pytest.mark.slow
def test_our_count_of_streamed_text_against_the_models_own(real_gateway, model_server: ModelServer) -> None:
    """Measured: where the server sends no usage in streams, how tokenward's count of the streamed
    text (``o200k_base``, chunk by chunk) compares with the tokens the model really generated (the
    ``completion_tokens`` of the same request, not streamed; greedy decoding). A stream whose count
    reaches the bound first is cut there; none is ever charged more than its bound."""
    if model_server.streams_usage:
        pytest.skip(f"{model_server.kind} reports usage in streams: nothing of ours is charged")
    gateway = real_gateway()
    api = client(gateway)
    bound = 24
    prompts = [
        "Once upon a time",
        "Say hello",
        "Write a long poem about the sea.",
        "東京は日本の首都です。",
        "def fibonacci(n):",
        "Translate to German: The weather is nice today.",
    ]
    rows = []
    for text in prompts:
        conversation = [{"role": "user", "content": text}]
        for _ in api.chat.completions.create(
            model=MODEL, messages=conversation, max_tokens=bound, temperature=0, stream=True
        ):
            pass
        real = model_server.chat(messages=conversation, max_tokens=bound, temperature=0)["usage"]
        rows.append((real["completion_tokens"], real["prompt_tokens"]))
    events = gateway.observer().events()
    assert len(events) == len(prompts)
    assert all(e.usage.output_tokens <= bound for e in events)
    ours = sum(e.usage.output_tokens for e in events)
    theirs = sum(real for real, _ in rows)
    measure(
        "streamed output, our count vs the model's",
        model_server.kind,
        calls=len(events),
        cut_by_tokenward=sum(e.status == "cut_off" for e in events),
        ours=ours,
        model=theirs,
        ratio=round(ours / theirs, 3),
        prompt_estimate_over_real=round(
            sum(e.usage.input_tokens for e in events) / sum(p for _, p in rows), 3
        ),
    )
