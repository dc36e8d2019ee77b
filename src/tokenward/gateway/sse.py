"""Server-sent events, as the OpenAI and Anthropic APIs stream them.

Parsing follows the HTML living standard's event-stream rules (https://html.spec.whatwg.org/multipage/server-sent-events.html):
an event is a block of ``field: value`` lines ended by a blank line; several ``data`` lines are
joined with newlines; lines starting with ``:`` are comments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

__all__ = ["SSEEvent", "format_event", "parse_events"]

SSEEvent = tuple[str | None, str]
"""(event name or None, data)."""


async def parse_events(lines: AsyncIterator[str]) -> AsyncIterator[SSEEvent]:
    """Events from a stream of text lines (without their line endings)."""
    name: str | None = None
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                yield name, "\n".join(data)
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if data:
        yield name, "\n".join(data)


def format_event(data: str, name: str | None = None) -> bytes:
    """One event on the wire (``event:`` line only when named)."""
    head = f"event: {name}\n" if name else ""
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"{head}{body}\n".encode()
