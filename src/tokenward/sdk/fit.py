"""Fitting a conversation to an input budget: :meth:`tokenward.Session.fit`.

A conversation is cut into *groups* that are kept or dropped whole:

* the system prompt (OpenAI ``system``/``developer`` messages at the start; Responses
  ``system``/``developer`` message items at the start; Anthropic's ``system`` is a parameter of
  its own), always kept;
* each other message, except that a tool call and its results are one group: an OpenAI chat
  assistant message with ``tool_calls`` (several in parallel) together with the ``tool`` messages
  that answer its ids; in Responses, consecutive ``function_call`` items together with the
  ``function_call_output`` items of their ``call_id``\\s; in Anthropic, an assistant message with
  ``tool_use`` blocks together with the next user message (whose ``tool_result`` blocks answer
  them).

The last ``keep_last`` groups are always kept. **drop** removes the oldest other groups, fewest
first, until the estimate fits; **summarize** replaces what drop would remove with a summary
written by a model (one call, charged to the same session), falling back to drop when that call
is refused by a budget (:attr:`Fitted.fallback` says so). For Anthropic the kept part must start
with a user message: the dropped part is extended to the next one.

Counts are the guard's own pre-call estimate (:func:`tokenward.core.estimate.estimate_request`:
tiktoken with OpenAI's message framing, a safety factor for other models), of the whole request
as it would be sent (``system`` and ``tools`` included when given), so a fitted list never
estimates above the bound. When what must be kept is over it,
:class:`~tokenward.errors.ContextTooLarge` is raised: never an over-budget list.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from tokenward.core.estimate import estimate_request
from tokenward.errors import BudgetError, ContextTooLarge, ValidationError

__all__ = [
    "FORMATS",
    "Fitted",
    "detect_format",
    "fit_messages",
    "groups",
    "input_bound",
    "summary_request",
    "summary_room",
    "summary_text",
]

log = logging.getLogger("tokenward.sdk.fit")

RESPONSES_CALLS = (
    "function_call",
    "custom_tool_call",
    "computer_call",
    "local_shell_call",
    "shell_call",
    "apply_patch_call",
)
"""Responses item types that call a tool the client runs; each is answered by an item of the same
type with ``_output`` appended and the same ``call_id`` (OpenAI API reference, Responses input
items), and the two are kept or dropped together."""

FORMATS = ("openai-chat", "openai-responses", "anthropic-messages")
"""The message formats :func:`fit_messages` reads."""

SUMMARY_PROMPT = (
    "Summarise the conversation below for the assistant that will continue it: the user's goals, "
    "decisions made, facts and tool results still needed, and open questions. Be concise."
)
SUMMARY_PREFIX = "Summary of the earlier conversation: "


class Fitted(list):  # type: ignore[type-arg]
    """The fitted messages (a list), with what fitting did.

    Attributes:
        bound: the input bound, in tokens.
        tokens: the estimate of the fitted request, in tokens (never above ``bound``).
        dropped: how many messages were left out (a summary stands in for them when
            ``summarised``).
        summarised: a summary message replaced the dropped ones.
        fallback: why summarising was given up for dropping (the summary call was refused by a
            budget, or the summary did not fit), or None.
    """

    bound: int
    tokens: int
    dropped: int
    summarised: bool
    fallback: str | None

    def __init__(
        self,
        items: Sequence[Any],
        *,
        bound: int,
        tokens: int,
        dropped: int,
        summarised: bool = False,
        fallback: str | None = None,
    ) -> None:
        super().__init__(items)
        self.bound, self.tokens, self.dropped = bound, tokens, dropped
        self.summarised, self.fallback = summarised, fallback


def detect_format(messages: Sequence[Mapping[str, Any]]) -> str:
    """``openai-responses`` when an item is a ``function_call``/``function_call_output`` (or has a
    ``type`` of ``message``); ``anthropic-messages`` when a content block is ``tool_use``/
    ``tool_result``; else ``openai-chat``."""
    for message in messages:
        kind = message.get("type")
        if (
            kind in ("message", "reasoning")
            or kind in RESPONSES_CALLS
            or (isinstance(kind, str) and kind.removesuffix("_output") in RESPONSES_CALLS)
        ):
            return "openai-responses"
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(b, Mapping) and b.get("type") in ("tool_use", "tool_result") for b in content
        ):
            return "anthropic-messages"
    return "openai-chat"


def _is_system(message: Mapping[str, Any]) -> bool:
    return message.get("role") in ("system", "developer") and message.get("type", "message") == "message"


def _blocks(message: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, Mapping) and b.get("type") == kind]


def groups(messages: Sequence[Mapping[str, Any]], fmt: str) -> tuple[int, list[tuple[int, int]]]:
    """``(system, spans)``: how many leading messages are the system prompt, and the other
    messages cut into groups kept or dropped whole, as ``(start, end)`` index ranges in order.

    Raises:
        ValidationError: an unknown format, or a message that is not a JSON object.
    """
    if fmt not in FORMATS:
        raise ValidationError(f"unknown message format {fmt!r}; known: {', '.join(FORMATS)}", field="format")
    if any(not isinstance(m, Mapping) for m in messages):
        raise ValidationError("every message must be a JSON object", field="messages")
    system = 0
    if fmt != "anthropic-messages":
        while system < len(messages) and _is_system(messages[system]):
            system += 1
    spans: list[tuple[int, int]] = []
    i = system
    while i < len(messages):
        end = i + 1
        message = messages[i]
        if fmt == "openai-chat" and message.get("tool_calls"):
            ids = {c.get("id") for c in message["tool_calls"] if isinstance(c, Mapping)}
            while (
                end < len(messages)
                and messages[end].get("role") == "tool"
                and messages[end].get("tool_call_id") in ids
            ):
                end += 1
        elif fmt == "openai-responses" and (
            message.get("type") == "reasoning" or message.get("type") in RESPONSES_CALLS
        ):
            j, ids = i, set()
            while j < len(messages) and messages[j].get("type") == "reasoning":
                j += 1  # a reasoning item goes with the calls it led to
            while j < len(messages) and messages[j].get("type") in RESPONSES_CALLS:
                ids.add((f"{messages[j].get('type')}_output", messages[j].get("call_id")))
                j += 1
            while j < len(messages) and ((messages[j].get("type"), messages[j].get("call_id")) in ids):
                j += 1
            end = max(end, j)
        elif (
            fmt == "anthropic-messages"
            and message.get("role") == "assistant"
            and _blocks(message, "tool_use")
            and end < len(messages)
            and _blocks(messages[end], "tool_result")
        ):
            end += 1
        spans.append((i, end))
        i = end
    return system, spans


def _count(body: Mapping[str, Any], model: str, fmt: str) -> int:
    return estimate_request(body, model, dialect=fmt).input_tokens


def _body(messages: Sequence[Any], model: str, fmt: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    key = "input" if fmt == "openai-responses" else "messages"
    return {"model": model, key: list(messages), **extra}


def _summary_message(text: str, fmt: str) -> dict[str, Any]:
    if fmt == "openai-responses":
        return {"type": "message", "role": "user", "content": SUMMARY_PREFIX + text}
    return {"role": "user", "content": SUMMARY_PREFIX + text}


def transcript(messages: Sequence[Mapping[str, Any]]) -> str:
    """The messages as plain text for a summary request (one line per message or item)."""
    lines = []
    for m in messages:
        who = m.get("role") or m.get("type") or "item"
        content = m.get("content")
        if content is None:
            content = {k: v for k, v in m.items() if k not in ("role", "type")}
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str)
        if m.get("tool_calls"):
            text += " " + json.dumps(m["tool_calls"], ensure_ascii=False, default=str)
        lines.append(f"{who}: {text}")
    return "\n".join(lines)


def summary_request(
    client: Any, model: str, dropped: Sequence[Mapping[str, Any]], max_tokens: int
) -> tuple[str, dict[str, Any]]:
    """``(kind, keyword arguments)`` of the summary call for ``client``: ``openai`` (chat
    completions) or ``anthropic`` (messages)."""
    package = type(client).__module__.split(".")[0]
    text = transcript(dropped)
    if package == "anthropic":
        return "anthropic", {
            "model": model,
            "max_tokens": max_tokens,
            "system": SUMMARY_PROMPT,
            "messages": [{"role": "user", "content": text}],
        }
    return "openai", {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "system", "content": SUMMARY_PROMPT}, {"role": "user", "content": text}],
    }


def summary_room(max_tokens: int, model: str) -> int:
    """Tokens a summary of up to ``max_tokens`` takes as a message: its text, the prefix and the
    message framing (counted by the estimator on a stand-in of that length)."""
    probe = [{"role": "user", "content": SUMMARY_PREFIX}]
    return _count({"model": model, "messages": probe}, model, "openai-chat") + max_tokens


def summary_text(kind: str, reply: Any) -> str:
    """The text of a summary call's answer."""
    if kind == "anthropic":
        return "".join(getattr(b, "text", "") for b in reply.content)
    return str(reply.choices[0].message.content or "")


def input_bound(
    remaining: Mapping[str, Decimal], share: Decimal, input_rate_per_token: Decimal | None
) -> tuple[int, str]:
    """``(tokens, what set it)``: ``share`` of what the session can still pay for: the least of
    its token meters (``total_tokens``, ``input_tokens``) and, when it has a ``cost_usd`` budget
    and the model's input rate is known, the tokens that money buys.

    Raises:
        ValidationError: no token or cost budget applies, so there is nothing to take a share of.
    """
    options: list[tuple[Decimal, str]] = []
    for meter in ("total_tokens", "input_tokens"):
        if meter in remaining:
            options.append((remaining[meter], meter))
    if "cost_usd" in remaining and input_rate_per_token:
        options.append((remaining["cost_usd"] / input_rate_per_token, "cost_usd"))
    if not options:
        raise ValidationError(
            "share= needs a token or cost budget on the session; give max_input_tokens= instead",
            field="share",
        )
    amount, meter = min(options)
    tokens = int((amount * share).to_integral_value(rounding=ROUND_FLOOR))
    return max(0, tokens), f"{share} of the session's remaining {meter}"


def _plan(
    messages: Sequence[Mapping[str, Any]],
    fmt: str,
    keep_last: int,
    count: Callable[[Sequence[Any]], int],
    bound: int,
    what: str,
) -> tuple[int, int, list[tuple[int, int]]]:
    """``(system, cut, spans)``: the fewest leading groups to drop (``cut`` messages after the
    system prompt) so the rest fits; raises when even dropping all droppable groups does not."""
    system, spans = groups(messages, fmt)
    droppable = max(0, len(spans) - keep_last)
    starts = [spans[k][0] for k in range(droppable)] + [
        spans[droppable][0] if droppable < len(spans) else len(messages)
    ]

    def valid(k: int) -> bool:
        if fmt != "anthropic-messages" or starts[k] >= len(messages):
            return True
        return messages[starts[k]].get("role") == "user" and not _blocks(messages[starts[k]], "tool_result")

    def kept(k: int) -> list[Any]:
        return [*messages[:system], *messages[starts[k] :]]

    candidates = [k for k in range(droppable + 1) if valid(k)] or [droppable]
    last = candidates[-1]
    needed = count(kept(last))
    if needed > bound:
        raise ContextTooLarge(bound=bound, needed=needed, budget=what)
    lo, hi = 0, len(candidates) - 1  # the estimate falls as more is dropped: binary search
    while lo < hi:
        mid = (lo + hi) // 2
        if count(kept(candidates[mid])) <= bound:
            hi = mid
        else:
            lo = mid + 1
    return system, starts[candidates[lo]], spans


def _check(messages: Any, keep_last: Any, fmt: str | None) -> None:
    """Refuse what fitting cannot read, before anything is counted (a list that fits included)."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ValidationError(
            f"messages must be a list of messages (JSON objects), got {type(messages).__name__}",
            field="messages",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValidationError(
                f"messages[{index}] is {type(message).__name__}, not a message (a JSON object)",
                field="messages",
            )
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
        raise ValidationError(
            f"keep_last must be a whole number, 0 or more, got {keep_last!r}", field="keep_last"
        )
    if fmt is not None and fmt not in FORMATS:
        raise ValidationError(f"unknown message format {fmt!r}; known: {', '.join(FORMATS)}", field="format")


def fit_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    model: str,
    bound: int,
    what: str = "max_input_tokens",
    fmt: str | None = None,
    keep_last: int = 1,
    system: Any = None,
    tools: Any = None,
    summarize: Callable[[Sequence[Mapping[str, Any]]], str] | None = None,
    summary_room: int | None = None,
) -> Fitted:
    """Fit ``messages`` to ``bound`` input tokens (the pure part of :meth:`tokenward.Session.fit`).

    Args:
        messages: the conversation (OpenAI chat messages, Responses input items or Anthropic
            messages).
        model: the model it is for (the tokenizer and framing of the estimate).
        bound: the input bound, in tokens.
        what: what set the bound, for errors.
        fmt: the format (default: :func:`detect_format`).
        keep_last: groups at the end always kept (at least 0).
        system: Anthropic's ``system`` parameter, counted (it is always kept).
        tools: the request's tool definitions, counted.
        summarize: when given, called with the messages to drop; returns their summary, which
            stands in for them (raising :class:`~tokenward.errors.BudgetError` falls back to
            dropping).
        summary_room: tokens to leave for the summary message when summarising (its output
            bound plus its framing): the oldest groups are dropped until the rest fits in
            ``bound - summary_room``.

    Raises:
        ContextTooLarge: the system prompt and the kept groups alone are over ``bound``.
        ValidationError: an unknown format, a negative ``keep_last``, a malformed message.
    """
    _check(messages, keep_last, fmt)
    fmt = fmt or detect_format(messages)
    extra: dict[str, Any] = {}
    if system is not None:
        extra["system"] = system
    if tools:
        extra["tools"] = tools

    def count(items: Sequence[Any]) -> int:
        return _count(_body(items, model, fmt, extra), model, fmt)

    total = count(messages)
    if total <= bound:
        return Fitted(list(messages), bound=bound, tokens=total, dropped=0)
    sys_n, cut, _ = _plan(messages, fmt, keep_last, count, bound, what)
    head, dropped, tail = list(messages[:sys_n]), list(messages[sys_n:cut]), list(messages[cut:])
    dropped_result = Fitted([*head, *tail], bound=bound, tokens=count([*head, *tail]), dropped=len(dropped))
    if summarize is None or not dropped:
        return dropped_result
    # Drop enough to leave room for the summary beside what is kept.
    room = summary_room if summary_room is not None else 0
    try:
        _, cut, _ = _plan(messages, fmt, keep_last, count, max(0, bound - room), what)
    except ContextTooLarge:
        dropped_result.fallback = f"no room for a summary of up to {room} tokens beside the kept turns"
        log.warning("%s; dropping the oldest turns instead", dropped_result.fallback)
        return dropped_result
    dropped, tail = list(messages[sys_n:cut]), list(messages[cut:])
    try:
        text = summarize(dropped)
    except BudgetError as exc:
        log.warning("summary call refused (%s); dropping the oldest turns instead", exc)
        dropped_result.fallback = f"summary call refused: {exc}"
        return dropped_result
    with_summary = [*head, _summary_message(text, fmt), *tail]
    tokens = count(with_summary)
    if tokens > bound:  # the summary must fit beside what is kept, or it is given up
        dropped_result.fallback = f"the summary ({tokens} tokens with the kept turns) did not fit the bound"
        log.warning("%s; dropping the oldest turns instead", dropped_result.fallback)
        return dropped_result
    return Fitted(with_summary, bound=bound, tokens=tokens, dropped=len(dropped), summarised=True)
