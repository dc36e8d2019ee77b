"""Server-sent events, as the OpenAI and Anthropic APIs stream them.

Parsing follows the HTML living standard's event-stream rules (https://html.spec.whatwg.org/multipage/server-sent-events.html):
an event is a block of ``field: value`` lines ended by a blank line; several ``data`` lines are
joined with newlines; lines starting with ``:`` are comments.
"""

from __future__ import annotations

__all__ = ["SSEEvent", "SSEParser", "format_event"]

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


class SSEParser:
    """An incremental (sans-I/O) event-stream parser: feed it bytes as they arrive, however they
    are split, and it returns the events completed so far.

    Line ends may be ``\n``, ``\r\n`` or ``\r``; :meth:`close` delivers an unterminated last event.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events completed by ``chunk``."""
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            keep_cr = buffer.endswith(b"\r")  # a "\r\n" may be split across chunks
            body = buffer[:-1] if keep_cr else buffer
            buffer = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if keep_cr else b"")
        events = []
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            event = _block(buffer[:end])
            buffer = buffer[end + 2 :]
            if event is not None:
                events.append(event)
        self._buffer = buffer
        return events

    def close(self) -> list[SSEEvent]:
        """The last event, if the stream ended without its blank line."""
        event = _block(self._buffer.replace(b"\r", b"\n"))
        self._buffer = b""
        return [event] if event is not None else []


def format_event(data: str, name: str | None = None) -> bytes:
    """One event on the wire (``event:`` line only when named)."""
    head = f"event: {name}\n" if name else ""
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"{head}{body}\n".encode()
