"""Tool-call replies: what the fake sends instead of text when the ``tool_call`` option is set.

The option applies only when the request offers tools (a non-empty ``tools`` array) and does
not forbid them (OpenAI ``tool_choice: "none"``, Anthropic ``tool_choice: {"type": "none"}``);
otherwise the reply is the usual text.

Output tokens of a tool call: the pieces (``\\w+|[^\\w\\s]``, as for prompts) of the function
name plus those of the arguments' JSON text (:attr:`~tokenward.fake.options.ToolCall.arguments`),
plus the ``reasoning_tokens``. Example: ``get_time`` with ``{"tz":"UTC"}`` is 1 + 9 = 10 tokens.

The output bound covers the call as it covers text: when reasoning plus call exceed it (and
``ignore_max_tokens`` is off), the hidden tokens are kept first, the name is sent whole, and the
arguments are cut after the pieces that still fit (the text up to the end of the last kept
piece, so no longer valid JSON); the reply is marked truncated. The reported output is then the
bound, or the reasoning plus the name when the name alone does not fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tokenward.fake.counting import count_pieces, first_pieces
from tokenward.fake.options import FakeOptions

__all__ = ["ToolReply", "plan_tool_call", "serial", "tools_offered"]


@dataclass(frozen=True, slots=True)
class ToolReply:
    """One tool call as sent.

    Attributes:
        name: the function name.
        arguments: the arguments' JSON text as sent (cut short when ``truncated``).
        input: the arguments as an object (``{}`` when ``truncated``: a cut text is no object).
        call_tokens: pieces of the name plus pieces of ``arguments``.
        reasoning_tokens: hidden output tokens.
        truncated: True when the output bound cut the call short.
    """

    name: str
    arguments: str
    input: dict[str, Any]
    call_tokens: int
    reasoning_tokens: int
    truncated: bool

    @property
    def output_tokens(self) -> int:
        """Call plus hidden tokens."""
        return self.call_tokens + self.reasoning_tokens

    @property
    def name_tokens(self) -> int:
        """Pieces of the name alone (what a stream has sent before any argument)."""
        return count_pieces(self.name)


def tools_offered(tools: list[Any] | None, none_chosen: bool) -> bool:
    """Whether the request lets the fake call a tool: some tools, and not a "none" tool choice."""
    return bool(tools) and not none_chosen


def plan_tool_call(options: FakeOptions, bound: int | None) -> ToolReply:
    """The tool call of ``options.tool_call`` (which must be set) under the output bound ``bound``."""
    call = options.tool_call
    assert call is not None
    name_tokens, argument_tokens = count_pieces(call.name), count_pieces(call.arguments)
    reasoning = options.reasoning_tokens
    if bound is None or options.ignore_max_tokens or reasoning + name_tokens + argument_tokens <= bound:
        return ToolReply(
            call.name, call.arguments, call.input, name_tokens + argument_tokens, reasoning, False
        )
    hidden = min(reasoning, bound)
    arguments = first_pieces(call.arguments, bound - hidden - name_tokens)
    return ToolReply(call.name, arguments, {}, name_tokens + count_pieces(arguments), hidden, True)


def serial(response_id: str) -> str:
    """The counter digits that end a response id (``"chatcmpl-fake-000007"`` gives ``"000007"``)."""
    match = re.search(r"\d+$", response_id)
    return match.group() if match else response_id
