"""``Usage``: one vocabulary, unknown is None, parts never exceed wholes.

Expected values come from DESIGN.md's vocabulary and the worked cases (C06), worked out by hand.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenward.core.usage import COUNT_FIELDS, Usage
from tokenward.errors import TokenwardError, ValidationError


def test_c06_uncached_count_passed_as_total_is_refused_naming_the_field() -> None:
    # C06, third api_call: 5 is the uncached share, but it was passed as the whole prompt.
    with pytest.raises(ValidationError) as info:
        Usage(input_tokens=5, cache_read_tokens=0, cache_write_tokens=4735, output_tokens=255)
    assert info.value.field in ("input_tokens", "cache_write_tokens")
    assert isinstance(info.value, TokenwardError)
    assert "input_tokens" in str(info.value)


def test_c06_inclusive_total_gives_the_uncached_share() -> None:
    # C06, first api_call: inclusive total 4,740 with 4,735 written -> 5 uncached.
    usage = Usage(input_tokens=4740, cache_read_tokens=0, cache_write_tokens=4735, output_tokens=255)
    assert usage.uncached_input_tokens == 5
    assert usage.total_tokens == 4740 + 255


@pytest.mark.parametrize("name", COUNT_FIELDS)
def test_negative_counts_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        Usage(**{name: -1})
    assert info.value.field == name


@pytest.mark.parametrize("name", COUNT_FIELDS)
def test_counts_past_what_json_keeps_exact_are_refused_naming_the_field(name: str) -> None:
    """2**53 - 1 is the largest whole number every JSON reader keeps exact (RFC 8259, section 6);
    a count above it is nonsense, and would overflow a ledger's 64-bit columns once summed."""
    assert Usage(**{name: 2**53 - 1}) == Usage(**{name: 2**53 - 1})
    with pytest.raises(ValidationError) as info:
        Usage(**{name: 2**53})
    assert info.value.field == name


@pytest.mark.parametrize("bad", [1.5, "12", True, 3.0])
def test_non_integer_counts_are_refused(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        Usage(output_tokens=bad)  # type: ignore[arg-type]
    assert info.value.field == "output_tokens"


def test_reasoning_above_output_is_refused_naming_output() -> None:
    with pytest.raises(ValidationError) as info:
        Usage(output_tokens=10, reasoning_tokens=11)
    assert info.value.field == "output_tokens"


def test_cache_reads_plus_writes_above_input_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        Usage(input_tokens=100, cache_read_tokens=60, cache_write_tokens=41)
    assert info.value.field == "input_tokens"
    # exactly the whole prompt from the caches is fine: no fresh input at all
    assert Usage(input_tokens=100, cache_read_tokens=60, cache_write_tokens=40).uncached_input_tokens == 0


def test_cache_write_split_above_the_write_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        Usage(input_tokens=100, cache_write_tokens=30, cache_write_5m_tokens=20, cache_write_1h_tokens=11)
    assert info.value.field == "cache_write_tokens"


def test_cache_write_split_without_total_makes_the_total() -> None:
    # The 5m/1h parts are the write: they count inside input_tokens like any write.
    usage = Usage(input_tokens=100, output_tokens=0, cache_write_5m_tokens=20, cache_write_1h_tokens=30)
    assert usage.cache_write_tokens == 50
    assert usage.uncached_input_tokens == 50
    with pytest.raises(ValidationError) as info:
        Usage(input_tokens=10, cache_write_1h_tokens=50)
    assert info.value.field == "input_tokens"


def test_unknown_stays_none_never_zero() -> None:
    usage = Usage(output_tokens=42, input_source="none")
    assert usage.input_tokens is None
    assert usage.total_tokens is None
    assert usage.uncached_input_tokens is None
    assert usage.cache_read_tokens is None
    assert usage.reasoning_tokens is None
    assert not usage.complete
    assert Usage().to_dict()["input_tokens"] is None


def test_totals() -> None:
    # C04 in tokenward's vocabulary: 50 fresh + 40,000 read + 10,000 written, 800 out.
    usage = Usage(input_tokens=50050, cache_read_tokens=40000, cache_write_tokens=10000, output_tokens=800)
    assert usage.total_tokens == 50850
    assert usage.uncached_input_tokens == 50
    assert usage.complete


def test_filled_labels_its_sources_and_keeps_reported_counts() -> None:
    # C12: the provider sent no prompt count; the pre-flight estimate was 1,500.
    reported = Usage(output_tokens=42, input_source="none")
    filled = reported.filled(input_estimate=1500, output_count=99)
    assert filled.input_tokens == 1500
    assert filled.input_source == "preflight_estimate"
    assert filled.output_tokens == 42  # reported: never replaced
    assert filled.output_source == "provider"
    assert filled.total_tokens == 1542
    assert not filled.complete
    assert reported.input_tokens is None  # frozen: a copy was made


def test_filled_output_from_counted_stream_text() -> None:
    reported = Usage(input_tokens=25, output_source="none")
    filled = reported.filled(input_estimate=999, output_count=120)
    assert (filled.input_tokens, filled.input_source) == (25, "provider")
    assert (filled.output_tokens, filled.output_source) == (120, "counted_stream_text")


def test_filled_never_makes_parts_larger_than_wholes() -> None:
    # An estimate below the cache counts the provider did report cannot be the prompt size.
    filled = Usage(cache_read_tokens=800, input_source="none").filled(input_estimate=500)
    assert filled.input_tokens == 800
    filled = Usage(reasoning_tokens=70, output_source="none").filled(output_count=50)
    assert filled.output_tokens == 70


def test_filled_without_figures_is_unchanged() -> None:
    usage = Usage(output_tokens=1, input_source="none")
    assert usage.filled() is usage
    assert usage.filled(output_count=5) is usage


def test_dict_round_trip_ignores_unknown_keys() -> None:
    usage = Usage(
        input_tokens=10, cache_read_tokens=4, output_tokens=3, reasoning_tokens=1, web_search_calls=2
    )
    assert Usage.from_dict({**usage.to_dict(), "extra": 1}) == usage


def test_from_dict_validates() -> None:
    with pytest.raises(ValidationError):
        Usage.from_dict({"input_tokens": 1, "cache_read_tokens": 2})


_count = st.none() | st.integers(min_value=0, max_value=10**7)


@settings(deadline=None)  # shared, noisy machines: no per-example time limit
@given(
    input_tokens=_count,
    output_tokens=_count,
    cache_read=_count,
    cache_write=_count,
    write_5m=_count,
    write_1h=_count,
    reasoning=_count,
)
def test_usage_never_has_parts_larger_than_wholes(
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read: int | None,
    cache_write: int | None,
    write_5m: int | None,
    write_1h: int | None,
    reasoning: int | None,
) -> None:
    try:
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            cache_write_5m_tokens=write_5m,
            cache_write_1h_tokens=write_1h,
            reasoning_tokens=reasoning,
        )
    except ValidationError as exc:
        assert exc.field in COUNT_FIELDS
        return
    read, write = usage.cache_read_tokens or 0, usage.cache_write_tokens or 0
    split = (usage.cache_write_5m_tokens or 0) + (usage.cache_write_1h_tokens or 0)
    assert split <= write
    if usage.input_tokens is not None:
        assert read + write <= usage.input_tokens
        assert usage.uncached_input_tokens is not None and usage.uncached_input_tokens >= 0
    if usage.output_tokens is not None and usage.reasoning_tokens is not None:
        assert usage.reasoning_tokens <= usage.output_tokens
    for name in COUNT_FIELDS:
        value = getattr(usage, name)
        assert value is None or value >= 0
