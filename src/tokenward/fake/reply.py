"""What one fake reply contains, and how its counts are (mis)reported.

The reply has ``reply_tokens`` visible tokens plus, for OpenAI, ``reasoning_tokens`` hidden ones.
The request's output bound covers both (OpenAI: ``max_completion_tokens`` "including visible
output tokens and reasoning tokens", https://platform.openai.com/docs/api-reference/chat/create):
when they exceed it, the hidden tokens are kept first, the visible text gets what is left and
the reply is marked truncated. ``ignore_max_tokens`` lifts the bound (a misbehaving upstream).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenward.fake.options import FakeOptions, UsageMode

__all__ = ["Reply", "plan_reply", "reported"]


@dataclass(frozen=True, slots=True)
class Reply:
    """Token counts of one reply.

    Attributes:
        text_tokens: visible tokens (the ``hello`` words).
        reasoning_tokens: hidden tokens, counted in the output but absent from the text.
        truncated: True when the output bound cut the reply short.
    """

    text_tokens: int
    reasoning_tokens: int
    truncated: bool

    @property
    def output_tokens(self) -> int:
        """Visible plus hidden tokens."""
        return self.text_tokens + self.reasoning_tokens


def plan_reply(options: FakeOptions, bound: int | None, *, reasoning: int = 0) -> Reply:
    """The reply for a request whose output bound is ``bound`` tokens (None: no bound)."""
    wanted = options.reply_tokens
    if bound is None or options.ignore_max_tokens or wanted + reasoning <= bound:
        return Reply(wanted, reasoning, truncated=False)
    hidden = min(reasoning, bound)
    return Reply(bound - hidden, hidden, truncated=True)


def reported(mode: UsageMode, counts: dict[str, int]) -> dict[str, int] | None:
    """The counts as the ``usage`` option reports them.

    ``omit`` gives None; ``zero`` all zeros; ``under`` each count halved, rounded down;
    ``normal`` and ``null_prompt`` the true counts (the caller blanks the prompt count).
    """
    if mode == "omit":
        return None
    if mode == "zero":
        return dict.fromkeys(counts, 0)
    if mode == "under":
        return {name: value // 2 for name, value in counts.items()}
    return dict(counts)
