"""Server-sent event streams of the fake provider, with delays and deliberate cut-offs."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio
from starlette.responses import JSONResponse, Response, StreamingResponse

from tokenward.fake.options import FakeOptions

__all__ = [
    "FakeStreamCut",
    "QuietStreamCuts",
    "json_answer",
    "pause",
    "sse_data",
    "sse_event",
    "sse_response",
]


class FakeStreamCut(Exception):
    """Raised inside a stream on purpose (option ``break_after_chunks``).

    The ASGI server then drops the connection mid-body, so the client sees a broken transfer
    (no terminating chunk), not a clean end of stream; uvicorn logs it as an application error.
    In-process through ``httpx.ASGITransport`` there is no connection to drop: the exception
    reaches the calling client instead (or, with ``raise_app_exceptions=False``, the partial
    body arrives as if complete), so test cut streams over a real socket.
    """


class QuietStreamCuts(logging.Filter):
    """Logging filter that turns the server's traceback for a deliberate cut into one info line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if isinstance(error, FakeStreamCut):
            record.msg, record.args = str(error), ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _json(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def sse_data(payload: Mapping[str, Any] | str) -> bytes:
    """One ``data:`` event (OpenAI style); a string payload is sent as is (``[DONE]``)."""
    text = payload if isinstance(payload, str) else _json(payload)
    return f"data: {text}\n\n".encode()


def sse_event(payload: Mapping[str, Any]) -> bytes:
    """One named event (Anthropic style): ``event: <payload type>`` then its ``data:``."""
    return f"event: {payload.get('type', 'message')}\ndata: {_json(payload)}\n\n".encode()


async def pause(milliseconds: float) -> None:
    """Sleep for ``milliseconds`` (no-op for 0)."""
    if milliseconds > 0:
        await anyio.sleep(milliseconds / 1000)


def sse_response(
    events: Sequence[bytes],
    options: FakeOptions,
    headers: Mapping[str, str],
    media_type: str = "text/event-stream",
    outputs: Sequence[int] | None = None,
) -> StreamingResponse:
    """A streamed response (``text/event-stream`` unless told) that sends ``events`` one by one.

    Waits ``options.chunk_delay_ms`` between two events. With ``options.break_after_chunks`` set to
    ``n``, raises :class:`FakeStreamCut` once ``n`` events are sent (a stream of at most ``n``
    events ends normally); with ``options.break_after_bytes`` set to ``n``, sends the first ``n``
    bytes of the stream (cutting an event short if need be) and raises it then.

    ``outputs[i]`` is the output generated once event ``i`` is delivered: the request's tally
    (``options.meter``) follows the events delivered (:mod:`tokenward.fake.tally`); a cut-short
    event is not counted.
    """
    meter = options.meter
    if meter is not None and outputs is not None:
        meter.plan(outputs)
    counting = meter is not None and outputs is not None and not meter.external

    async def body() -> AsyncIterator[bytes]:
        budget = options.break_after_bytes
        for index, event in enumerate(events):
            if options.break_after_chunks is not None and index >= options.break_after_chunks:
                raise FakeStreamCut(f"fake provider: stream cut after {index} events (break_after_chunks)")
            if index:
                await pause(options.chunk_delay_ms)
            if budget is not None and len(event) > budget:
                if budget:
                    if meter is not None:
                        meter.cut_short = index
                    yield event[:budget]
                raise FakeStreamCut("fake provider: stream cut mid-body (break_after_bytes)")
            yield event
            if budget is not None:
                budget -= len(event)
            if counting:
                assert meter is not None
                meter.sent(index)

    return StreamingResponse(body(), media_type=media_type, headers={"cache-control": "no-cache", **headers})


def json_answer(
    content: Mapping[str, Any],
    options: FakeOptions,
    headers: Mapping[str, str] | None = None,
    output_tokens: int | None = None,
) -> Response:
    """A whole JSON answer (status 200), its ``output_tokens`` recorded in the request's tally.

    With ``options.break_after_bytes`` set to ``n``, only the first ``n`` bytes of the body are
    sent before the connection is dropped (:class:`FakeStreamCut`): the reply was generated all
    the same, so the tally counts it whole.
    """
    if options.meter is not None and output_tokens is not None:
        options.meter.whole(output_tokens)
    if options.break_after_bytes is None:
        return JSONResponse(content, headers=dict(headers or {}))
    data = _json(content).encode()
    cut = options.break_after_bytes

    async def body() -> AsyncIterator[bytes]:
        if cut:
            yield data[:cut]
        raise FakeStreamCut(
            f"fake provider: JSON answer cut after {min(cut, len(data))} bytes (break_after_bytes)"
        )

    return StreamingResponse(body(), media_type="application/json", headers=dict(headers or {}))
