"""The charge floor (issue 14, item 2): a reported output below what passed through is charged
our count (times the family's lower ratio for models without an offline tokenizer) and disputed;
every delivered output kind is counted. Figures by hand: ``"hello" + " hello" * (k - 1)`` is k
tokens in ``o200k_base``."""

from __future__ import annotations

from decimal import Decimal

from tokenward.core.calibration import Calibration
from tokenward.core.dialects import stream_reader
from tokenward.core.floor import LOWER_RATIOS, apply_floor, floor_ratio, output_floor
from tokenward.core.usage import Usage


def test_the_lower_ratio_is_one_for_models_with_their_own_tokenizer_and_below_one_else() -> None:
    assert floor_ratio("gpt-4o-mini") == 1
    assert floor_ratio("claude-sonnet-4-6") == LOWER_RATIOS["anthropic"] == Decimal("0.75")
    assert floor_ratio("gemini-2.5-flash") == floor_ratio("gemma-3-270m") == Decimal("0.6")
    assert floor_ratio("llama-3.1-8b-instruct") == Decimal("0.5")


def test_calibration_only_ever_lowers_the_ratio() -> None:
    # prompts observed at 0.5 x the x1.2 estimate: 0.6 x o200k; with the 0.8 margin, 0.48
    low = Calibration(Decimal(1), Decimal("1.05"), 12, True, min_ratio=Decimal("0.5"))
    assert floor_ratio("gemini-2.5-flash", low) == Decimal("0.48")
    high = Calibration(Decimal("1.5"), Decimal("1.05"), 12, True, min_ratio=Decimal("1.4"))
    assert floor_ratio("gemini-2.5-flash", high) == Decimal("0.6")  # never raised
    few = Calibration(Decimal(1), Decimal("1.05"), 3, False, min_ratio=Decimal("0.1"))
    assert floor_ratio("gemini-2.5-flash", few) == Decimal("0.6")  # too few observations
    assert floor_ratio("gpt-4o", low) == 1  # an exact tokenizer is not calibrated


def test_output_floor_rounds_down() -> None:
    assert output_floor(200, Decimal("0.75")) == 150
    assert output_floor(7, Decimal("0.75")) == 5  # 5.25
    assert output_floor(0, Decimal(1)) == 0


def test_a_report_below_the_floor_is_raised_to_it_and_disputed() -> None:
    reported = Usage(input_tokens=6, output_tokens=100)
    usage, disputed = apply_floor(reported, 200, Decimal(1), input_estimate=9)
    assert usage is not None and usage.output_tokens == 200
    assert usage.output_source == "counted_stream_text" and not usage.complete
    assert disputed["output_tokens"] == {"reported": 100, "counted": 200, "charged": 200, "ratio": "1"}
    # caught under-reporting, its prompt count (6 < our estimate of 9) is not believed either
    assert usage.input_tokens is None and disputed["input_tokens"]["reported"] == 6


def test_a_correct_report_is_left_alone() -> None:
    reported = Usage(input_tokens=6, output_tokens=220, reasoning_tokens=20)
    assert apply_floor(reported, 200, Decimal(1), input_estimate=9) == (reported, {})
    # Claude counting 160 where o200k saw 200: above floor(200 x 0.75) = 150, believed
    claude = Usage(input_tokens=30, output_tokens=160)
    assert apply_floor(claude, 200, Decimal("0.75"), input_estimate=40) == (claude, {})


def test_a_missing_count_is_not_a_dispute_and_a_zero_prompt_is_unknown() -> None:
    assert apply_floor(None, 50, Decimal(1)) == (None, {})
    missing = Usage(input_tokens=10, output_tokens=None, output_source="none")
    assert apply_floor(missing, 50, Decimal(1)) == (missing, {})
    zero = Usage(input_tokens=0, output_tokens=0)
    usage, disputed = apply_floor(zero, 50, Decimal("0.6"))
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (None, 30)
    assert disputed["input_tokens"]["reported"] == 0


def _text(dialect: str, *events: dict) -> str:
    reader = stream_reader(dialect)
    return "".join(reader.feed(event) for event in events)


def test_every_delivered_output_kind_is_read() -> None:
    chunk = {"object": "chat.completion.chunk"}
    assert _text("openai-chat", {**chunk, "choices": [{"index": 0, "text": "legacy"}]}) == "legacy"
    function_call = {"function_call": {"name": "f", "arguments": '{"a":1}'}}
    assert _text("openai-chat", {**chunk, "choices": [{"delta": function_call}]}) == 'f{"a":1}'
    audio = {"audio": {"id": "a1", "data": "AAAA", "transcript": "hi there"}}
    assert _text("openai-chat", {**chunk, "choices": [{"delta": audio}]}) == "hi there"
    responses = [
        {"type": "response.code_interpreter_call_code.delta", "delta": "print(1)"},
        {"type": "response.mcp_call_arguments.delta", "delta": "{}"},
        {"type": "response.audio.transcript.delta", "delta": "ok"},
        {"type": "response.reasoning_summary_text.delta", "delta": "think"},
    ]
    assert _text("openai-responses", *responses) == "print(1){}okthink"
    thought = {
        "candidates": [
            {"content": {"parts": [{"text": "plan", "thought": True}, {"executableCode": {"code": "x=1"}}]}}
        ]
    }
    assert _text("gemini", thought) == "planx=1"
    thinking = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "hmm"},
    }
    assert _text("anthropic-messages", thinking) == "hmm"
