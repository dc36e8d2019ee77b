"""The prompt estimate against the model's real ``prompt_tokens``, and its calibration.

Gemma has no offline tokenizer in tokenward: a chat prompt is estimated as ``o200k_base`` tokens of
the messages plus OpenAI's chat framing, times 1.2. Gemma's real count is its own tokenizer over
its chat template (``<bos><start_of_turn>user\\n...<end_of_turn>\\n<start_of_turn>model\\n``). Every
settled call whose server reported the prompt is an observation the guard keeps in the ledger; the
correction learnt from them (largest ``real / estimate`` seen x 1.05) then covers the prompts it
was learnt from and new ones alike. Also measured: per-call latency straight to the server and
through the gateway.
"""

from __future__ import annotations

import statistics
import time

import httpx
import pytest

from tests.realmodel.conftest import MODEL, ModelServer, client, measure
from tokenward.core.calibration import correction
from tokenward.core.estimate import DEFAULT_APPROXIMATION_FACTOR, estimate_openai_chat

pytestmark = pytest.mark.realmodel


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


OBSERVED = [
    user("Say hello"),
    user("Once upon a time"),
    user("Write a long poem about the sea."),
    user("The capital of France is"),
    user("Count from 1 to 50: 1, 2, 3,"),
    user("Translate to German: The weather is nice today and I would like to go for a walk."),
    user("def fibonacci(n):\n    if n < 2:\n        return n"),
    user("東京は日本の首都です。"),
    user("Explain photosynthesis in simple words for a child who is seven years old."),
    user('{"name": "tokenward", "budget": {"meter": "total_tokens", "limit": 50000}}'),
    [
        {"role": "user", "content": "What is a token?"},
        {"role": "assistant", "content": "A piece of text the model reads as one unit."},
        {"role": "user", "content": "And a budget?"},
    ],
    user("Résumé: naïve café owners in São Paulo prefer crème brûlée."),
]
"""Prompts whose real counts calibrate the estimate: prose, numbers, code, JSON, Japanese,
accents, a conversation."""

HELD_OUT = [
    user("Tell me about the history of the printing press."),
    user("class Stack:\n    def push(self, item):"),
    user("Berlin ist die Hauptstadt von Deutschland."),
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ],
]
"""New prompts of the same kinds, planned with the learnt calibration."""


@pytest.mark.slow
def test_the_prompt_estimate_against_real_counts_and_its_calibration(
    real_gateway, model_server: ModelServer
) -> None:
    gateway = real_gateway()
    api = client(gateway)
    pairs = []
    for conversation in OBSERVED:
        reply = api.chat.completions.create(model=MODEL, messages=conversation, max_tokens=1, temperature=0)
        estimate = estimate_openai_chat({"model": MODEL, "messages": conversation}, MODEL)
        pairs.append((estimate.input_tokens, reply.usage.prompt_tokens))
    events = gateway.observer().events()
    assert [e.usage.input_tokens for e in events] == [real for _, real in pairs]
    assert all(e.usage.input_source == "provider" for e in events)

    # the guard kept every observation in the ledger, against the uncalibrated estimate
    stats = gateway.observer().estimate_stats(MODEL)
    assert stats is not None and stats.count == len(OBSERVED)
    assert stats.sum_estimated == sum(e for e, _ in pairs) and stats.sum_actual == sum(r for _, r in pairs)
    ratios = [real / estimate for estimate, real in pairs]
    learnt = correction(stats)
    assert learnt.applied  # ten observations or more: the correction is used, up or down
    calibrated = [learnt.apply(estimate) for estimate, _ in pairs]
    assert all(c >= real for c, (_, real) in zip(calibrated, pairs, strict=True))

    # a fresh gateway on the same ledger plans new prompts with the calibrated estimate
    fresh = real_gateway(ledger=gateway.ledger_url)
    fresh_api = client(fresh)
    held_out = []
    for conversation in HELD_OUT:
        reply = fresh_api.chat.completions.create(
            model=MODEL, messages=conversation, max_tokens=1, temperature=0
        )
        raw = estimate_openai_chat({"model": MODEL, "messages": conversation}, MODEL).input_tokens
        held_out.append((raw, reply.usage.prompt_tokens))
    new_events = fresh.observer().events()[len(OBSERVED) :]  # after the fresh gateway settled its calls
    for event, (raw, real) in zip(new_events, held_out, strict=True):
        assert event.held["input_tokens"] == learnt.apply(raw)  # the calibrated estimate was held
        assert event.held["input_tokens"] >= real, "the calibrated estimate covers the real prompt"
    measure(
        "prompt estimate",
        model_server.kind,
        observations=len(pairs),
        real_over_estimate_mean=round(statistics.fmean(ratios), 3),
        min=round(min(ratios), 3),
        max=round(max(ratios), 3),
        token_weighted=round(float(stats.mean_ratio), 3),
        uncovered_before=sum(real > estimate for estimate, real in pairs),
        correction=str(learnt.correction.normalize()),
        factor_over_o200k=str((DEFAULT_APPROXIMATION_FACTOR * learnt.correction).normalize()),
        held_out_real_over_calibrated=[round(real / learnt.apply(raw), 3) for raw, real in held_out],
    )


@pytest.mark.slow
def test_per_call_latency_straight_and_through_the_gateway(real_gateway, model_server: ModelServer) -> None:
    """Median wall time of one 16-token completion, straight to the server and through the
    gateway (each with a kept-alive connection), measured in alternating order in the same run
    (the machine is shared and noisy); and the time to the first streamed text through the gateway."""
    gateway = real_gateway()
    api = client(gateway)
    body = {"model": MODEL, "messages": user("Once upon a time"), "max_tokens": 16, "temperature": 0}
    timings: dict[str, list[float]] = {"straight": [], "through": [], "first_text": []}
    with httpx.Client(base_url=model_server.base_url, timeout=120) as direct:

        def straight() -> None:
            direct.post("/chat/completions", json=body).raise_for_status()

        def through() -> None:
            api.chat.completions.create(**body)

        for i in range(6):
            for name, run in (("straight", straight), ("through", through))[:: 1 if i % 2 else -1]:
                began = time.monotonic()
                run()
                timings[name].append(time.monotonic() - began)
            began = time.monotonic()
            first = None
            for chunk in api.chat.completions.create(**body, stream=True):
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.monotonic() - began
            timings["first_text"].append(first or 0.0)
    median = {name: statistics.median(values) for name, values in timings.items()}
    assert median["through"] < median["straight"] + 1.0  # generous: the gateway adds milliseconds
    measure(
        "latency, 16 output tokens",
        model_server.kind,
        straight_median_s=round(median["straight"], 3),
        through_gateway_median_s=round(median["through"], 3),
        gateway_overhead_ms=round((median["through"] - median["straight"]) * 1000, 1),
        stream_first_text_median_s=round(median["first_text"], 3),
    )
