"""The HTTP client the gateway calls upstreams with.

An ``httpx.AsyncClient`` whose transport is aiohttp's (``httpx-aiohttp``, the transport the
official ``openai`` package offers as ``DefaultAioHttpClient``), so the gateway keeps httpx's API,
auth hooks (the cloud platforms' signing) and injectable transports (the tests' fake) while the
bytes go through aiohttp's connection pool and C HTTP parser. Measured on the bench
(``bench/gateway.py``, SQLite, one client): 12.3 ms of CPU per call with httpx's own transport
(httpcore, h11, anyio streams, and a readability check of every pooled connection on each
request), 8.8 ms with aiohttp's (issue 17; ``docs/performance.md``).

``httpx-aiohttp`` maps every ``aiohttp.ClientConnectionError`` (a refused connection, an
upstream that closed it) to ``httpx.ConnectTimeout``, which the gateway would answer as a
time-out (504). :class:`_Transport` maps them as httpx's own transport does: ``ConnectError``
(refused, unreachable), ``RemoteProtocolError`` (disconnected), ``ReadError`` (reset); 502s.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport, HttpxAiohttpClient
from httpx_aiohttp.transport import map_aiohttp_exceptions

__all__ = ["upstream_client"]


@contextlib.contextmanager
def _disconnects_are_not_timeouts() -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        cause = exc.__cause__
        if not isinstance(cause, aiohttp.ClientConnectionError) or isinstance(
            cause, aiohttp.ServerTimeoutError
        ):
            raise
        message = str(cause) or type(cause).__name__
        if isinstance(cause, aiohttp.ClientConnectorError):  # refused, unreachable, DNS
            raise httpx.ConnectError(message) from cause
        if isinstance(cause, aiohttp.ServerDisconnectedError):
            raise httpx.RemoteProtocolError(message) from cause
        raise httpx.ReadError(message) from cause  # reset mid-answer (ClientOSError)
    except aiohttp.ClientError as exc:  # httpx-aiohttp leaves these unmapped: a malformed answer
        # (status line, headers) was a bare 500 with the call charged as interrupted, and no
        # fallback tried, where httpx's own transport raises RemoteProtocolError (a 502)
        raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc


class _Stream(httpx.AsyncByteStream):
    """The answer's body as the upstream framed it: one HTTP chunk at a time (as httpcore gives
    it), not whatever aiohttp has buffered. A stream cut at its hold has then received the
    chunk in flight, not every event read ahead into the buffer (issue 14: what is received past
    a cut is charged, so the overshoot stays one upstream event)."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self.inner = inner
        self.response: aiohttp.ClientResponse = inner._aiohttp_response  # type: ignore[attr-defined]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self.response.content
        with _disconnects_are_not_timeouts(), map_aiohttp_exceptions():
            while True:
                try:
                    data, end = await content.readchunk()
                except aiohttp.ClientError:
                    # aiohttp raises a body's error before the bytes it had buffered with it: they
                    # arrived (and a broken stream is charged what arrived), so they come first
                    left = _buffered(content)
                    if left:
                        yield left
                    raise
                if data:
                    yield data
                elif not end:  # (b"", False): the end of the body
                    return

    async def aclose(self) -> None:
        with _disconnects_are_not_timeouts():
            await self.inner.aclose()


def _buffered(content: aiohttp.StreamReader) -> bytes:
    """What aiohttp has received of a body and not yet handed out (its reader's private buffer:
    aiohttp offers no way to read it once the body failed)."""
    parts = list(getattr(content, "_buffer", ()))
    if parts:
        parts[0] = parts[0][getattr(content, "_buffer_offset", 0) :]
    return b"".join(parts)


_MAX_HEADER = 65536
"""Longest upstream response header line or field aiohttp reads (its default, 8,190 bytes, turned
an answer with one 9 KB header into an error; httpx's own transport read it)."""


class _Transport(AiohttpTransport):
    def get_client(self) -> aiohttp.ClientSession:
        if self.client is not None or self.uds:
            return super().get_client()
        limit = {"limit": self.limits.max_connections} if self.limits.max_connections is not None else {}
        connector = aiohttp.TCPConnector(
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
            local_addr=(self.local_address, 0) if self.local_address else None,
            **limit,  # type: ignore[arg-type]
        )
        return aiohttp.ClientSession(
            connector=connector, max_line_size=_MAX_HEADER, max_field_size=_MAX_HEADER
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _disconnects_are_not_timeouts():
            response = await super().handle_async_request(request)
        response.stream = _Stream(response.stream)  # type: ignore[arg-type]
        return response


class _Client(HttpxAiohttpClient):
    def _init_transport(self, **kwargs: Any) -> httpx.AsyncBaseTransport:  # type: ignore[override]
        transport = kwargs.pop("transport", None)
        return transport if transport is not None else _Transport(**kwargs)

    def _init_proxy_transport(self, proxy: httpx.Proxy, **kwargs: Any) -> httpx.AsyncBaseTransport:  # type: ignore[override]
        return _Transport(proxy=proxy, **kwargs)


def upstream_client(
    *,
    timeout: httpx.Timeout,
    limits: httpx.Limits,
    auth: httpx.Auth | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    exact_paths: bool = False,
) -> httpx.AsyncClient:
    """An upstream's client: ``transport`` when given (tests, the in-process fake), else aiohttp's
    pooled transport within ``limits`` (proxies from the environment honoured, as httpx does).

    ``exact_paths``: the upstream needs its URLs sent byte for byte (Bedrock: SigV4 signs the
    path, and model ids carry ``%3A``, which aiohttp's URL library decodes to ``:``): httpx's own
    transport is used.
    """
    if transport is not None or exact_paths:
        return httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport, auth=auth)
    return _Client(timeout=timeout, limits=limits, auth=auth)
