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


def _block(block: bytes) -> SSEEvent | None:
    name: str | None = None
    data: list[str] = []
    for line in block.decode("utf-8", errors="replace").split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    return (name, "\n".join(data)) if data else None


async def parse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Events from a stream of bytes, however the bytes are split across chunks.

    Line ends may be ``\n``, ``\r\n`` or ``\r``; an unterminated last event is still delivered.
    """
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:
            keep_cr = buffer.endswith(b"\r")  # a "\r\n" may be split across chunks
            body = buffer[:-1] if keep_cr else buffer
            buffer = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if keep_cr else b"")
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            event = _block(buffer[:end])
            buffer = buffer[end + 2 :]
            if event is not None:
                yield event
    event = _block(buffer.replace(b"\r", b"\n"))
    if event is not None:
        yield event


def format_event(data: str, name: str | None = None) -> bytes:
    """One event on the wire (``event:`` line only when named)."""
    head = f"event: {name}\n" if name else ""
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"{head}{body}\n".encode()
