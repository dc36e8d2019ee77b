"""The upstream client (httpx over aiohttp) reads what httpx's own transport read, and fails the
way it failed: a long response header is read; a malformed answer is an ``httpx`` error (the
gateway's 502, the next upstream tried), never an aiohttp exception escaping as a bare 500."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tokenward.gateway.upstream_http import upstream_client

BODY = b'{"ok": true}'
ANSWERS = {
    "long-header": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-long: " + b"a" * 9000 + b"\r\n",
    "malformed-header": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nthis is no header\r\n",
    "malformed-status": b"HTTP/1.1 abc OK\r\ncontent-type: application/json\r\n",
}


async def _serve(answer: bytes) -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer + b"content-length: %d\r\n\r\n" % len(BODY) + BODY)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _get(name: str) -> httpx.Response:
    server, port = await _serve(ANSWERS[name])
    client = upstream_client(timeout=httpx.Timeout(5.0), limits=httpx.Limits(max_connections=4))
    try:
        return await client.post(f"http://127.0.0.1:{port}/v1/chat/completions", content=b"{}")
    finally:
        await client.aclose()
        server.close()


def test_a_long_response_header_is_read() -> None:
    response = asyncio.run(_get("long-header"))
    assert response.status_code == 200 and len(response.headers["x-long"]) == 9000
    assert response.json() == {"ok": True}


@pytest.mark.parametrize("name", ["malformed-header", "malformed-status"])
def test_a_malformed_answer_is_an_httpx_error(name: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        asyncio.run(_get(name))


def test_the_bytes_that_arrived_with_a_broken_body_are_read_before_its_error() -> None:
    """A chunked body cut off by the upstream in the same write as its first chunks: aiohttp
    raises the body's error before handing out the bytes it buffered; they arrived (a broken
    stream is charged what arrived), so they are read first, then the error (an httpx error: the
    gateway's stream_broken). Seen as a broken stream settled with 0 output tokens."""
    events = b"".join(b'data: {"n": %d}\n\n' % i for i in range(3))
    chunk = b"%x\r\n%s\r\n" % (len(events), events)

    async def run() -> tuple[bytes, BaseException | None]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            writer.write(head)
            await writer.drain()
            await asyncio.sleep(0.2)  # the headers are read; then the chunk and the cut together
            writer.write(chunk + b"ff\r\npartial")
            writer.transport.abort()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = upstream_client(timeout=httpx.Timeout(5.0), limits=httpx.Limits(max_connections=4))
        received, error = b"", None
        try:
            async with client.stream(
                "POST", f"http://127.0.0.1:{port}/v1/chat/completions", content=b"{}"
            ) as r:
                await asyncio.sleep(0.5)  # the body and its cut are both buffered before we read
                try:
                    async for data in r.aiter_raw():
                        received += data
                except httpx.HTTPError as exc:
                    error = exc
        finally:
            await client.aclose()
            server.close()
        return received, error

    received, error = asyncio.run(run())
    assert received.startswith(events)
    assert isinstance(error, httpx.HTTPError)
