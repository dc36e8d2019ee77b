"""Wire rules of the proxied endpoints that need no server: cutting text at a token budget, and
the output bound written into an Anthropic request with extended thinking."""

from __future__ import annotations

import pytest

from tokenward.guard.wire.endpoints import AnthropicMessages
from tokenward.guard.wire.endpoints.base import head


@pytest.mark.parametrize("text", ["😀🎉 naïve café 日本語のテキスト", "hello world", "ä" * 40])
@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_a_cut_never_splits_a_character(text: str, encoding: str) -> None:
    """Tokens can hold part of a UTF-8 character; a cut keeps whole characters only, so no
    U+FFFD replacement character is ever sent."""
    for budget in range(0, 40):
        kept, used = head(text, budget, encoding)
        assert text.startswith(kept) and "\ufffd" not in kept
        assert used <= max(budget, 0)
    assert head(text, 10_000, encoding)[0] == text


def test_a_clamped_bound_keeps_the_thinking_budget_below_it() -> None:
    """Anthropic: ``thinking.budget_tokens`` must be at least 1,024 and less than ``max_tokens``
    (https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking)."""
    endpoint = AnthropicMessages()
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16_000,
        "thinking": {"type": "enabled", "budget_tokens": 10_000},
        "messages": [{"role": "user", "content": "hi"}],
    }
    untouched = endpoint.with_bound(body, 12_000, "anthropic")
    assert untouched["max_tokens"] == 12_000 and untouched["thinking"]["budget_tokens"] == 10_000
    lowered = endpoint.with_bound(body, 4_000, "anthropic")
    assert lowered["max_tokens"] == 4_000
    assert 1_024 <= lowered["thinking"]["budget_tokens"] < 4_000
    assert lowered["thinking"]["type"] == "enabled"
    no_room = endpoint.with_bound(body, 1_000, "anthropic")
    assert no_room["max_tokens"] == 1_000 and no_room["thinking"] == {"type": "disabled"}
    assert body["thinking"]["budget_tokens"] == 10_000  # the caller's body is not changed
