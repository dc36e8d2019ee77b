"""Fixture rows, usage objects and hand-worked costs shared by the tests of the late-2026 provider
facts (core, ``tokenward cost``, the gateway and the SDK): each literal is worked out once, here,
with its arithmetic."""

from __future__ import annotations

from decimal import Decimal

D = Decimal

TERRA = {"input": "2.50", "cache_read": "0.25", "cache_write": "3.125", "output": "15"}
"""A GPT-5.6-style row: writes at 1.25x input (2.50 x 1.25 = 3.125), reads at 0.1x."""

OPUS = {
    "input": "5",
    "cache_read": "0.50",
    "cache_write_5m": "6.25",
    "cache_write_1h": "10",
    "output": "25",
    "speed": {
        "fast": {
            "input": "10",
            "cache_read": "1.00",
            "cache_write_5m": "12.50",
            "cache_write_1h": "20",
            "output": "50",
        }
    },
}
"""N04's row: Opus 4.8, fast mode 2x with the prompt-caching multipliers on top."""

CHAT_USAGE = {
    "prompt_tokens": 10000,
    "completion_tokens": 500,
    "total_tokens": 10500,
    "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 6000},
}
RESPONSES_USAGE = {
    "input_tokens": 10000,
    "input_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 6000},
    "output_tokens": 500,
    "total_tokens": 10500,
}
# on TERRA: (10000 - 2000 - 6000) x 2.50 + 2000 x 0.25 + 6000 x 3.125 + 500 x 15
# = 5000 + 500 + 18750 + 7500 = 31750 per 1M
WRITES_USD = D("0.03175")
# the fault: writes billed as input, 8000 x 2.50 + 500 + 7500 = 28000 per 1M
WRITES_AS_INPUT_USD = D("0.028")

N04_USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 44667,
    "cache_creation": {"ephemeral_5m_input_tokens": 44667, "ephemeral_1h_input_tokens": 0},
    "cache_read_input_tokens": 0,
    "output_tokens": 850,
    "service_tier": "standard",
    "speed": "fast",
}
# on OPUS, fast: 12 x 10 + 44667 x 12.50 + 850 x 50 = 120 + 558337.5 + 42500 = 600957.5 per 1M
N04_FAST_USD = D("0.6009575")
# standard: 12 x 5 + 44667 x 6.25 + 850 x 25 = 60 + 279168.75 + 21250 = 300478.75 per 1M
N04_STANDARD_USD = D("0.30047875")
# fast x 1.1 (US-only): 12 x 11 + 44667 x 13.75 + 850 x 55 = 132 + 614171.25 + 46750 = 661053.25 per 1M
N04_FAST_US_USD = D("0.66105325")

UNSPLIT = {
    "input_tokens": 100,
    "cache_creation_input_tokens": 1000,
    "cache_read_input_tokens": 0,
    "output_tokens": 10,
}
"""Anthropic usage whose cache write comes without its 5-minute/1-hour split."""
# on OPUS, 1 hour: 100 x 5 + 1000 x 10 + 10 x 25 = 500 + 10000 + 250 = 10750 per 1M
ONE_HOUR_USD = D("0.01075")
# 5 minutes: 100 x 5 + 1000 x 6.25 + 10 x 25 = 500 + 6250 + 250 = 7000 per 1M
FIVE_MIN_USD = D("0.007")
