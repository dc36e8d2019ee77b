"""The fake provider in process, streaming as a provider generates: one event at a time, as read.

``httpx.ASGITransport`` runs an app to its end and hands over the whole body at once; a socket
lets the server run ahead of its reader by whatever the kernel buffers hold. Neither is how a
provider bills a stream: it generates while the client reads and stops when the client goes away.
:class:`FakeTransport` (async) hands each body message of the app over only when the client asks
for the next chunk, so the app is never more than one event ahead of its reader, and it tells the
fake's tally (:mod:`tokenward.fake.tally`) each event the client took. Closing the response
cancels the app, as a provider stops generating when its client hangs up. An app that raises
mid-body (the ``break_after_*`` options) gives the client a broken transfer
(``httpx.RemoteProtocolError``) after what it sent.

:class:`SyncFakeTransport` serves a sync client (the sync ``openai`` SDK) the same way, from an
event loop in a thread of its own.

Use: ``httpx.AsyncClient(transport=FakeTransport(app))``, or the gateway's ``transports=`` for an
upstream; any URL goes to the app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.from_thread
import httpx

from tokenward.fake.provider import DELIVERY_EXTENSION

__all__ = ["FakeTransport", "SyncFakeTransport"]


class _Body(httpx.AsyncByteStream):
    """The body of one answer: taken from the app one message at a time."""

    def __init__(
        self,
        chunks: anyio.abc.ObjectReceiveStream[bytes],
        task: asyncio.Task[None],
        disconnected: anyio.Event,
        delivery: dict[str, Any],
    ) -> None:
        self.chunks, self.task, self.disconnected, self.delivery = chunks, task, disconnected, delivery
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.chunks:
            meter = self.delivery.get("meter")
            if meter is not None:
                meter.sent(self.taken)
            self.taken += 1
            yield chunk
        await asyncio.wait({self.task})
        if self.delivery.get("error") is not None:
            raise httpx.RemoteProtocolError(
                f"the fake provider broke off its answer: {self.delivery['error']}"
            )

    async def aclose(self) -> None:
        self.disconnected.set()
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.chunks.aclose()


class FakeTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` async transport serving every request from an ASGI app (the fake provider),
    its body handed over one message at a time as the client reads it.

    Args:
        app: the ASGI app (``tokenward.fake.create_app(...)``).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        delivery: dict[str, Any] = {}
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "server": (request.url.host, request.url.port or 80),
            "client": ("127.0.0.1", 1),
            "extensions": {DELIVERY_EXTENSION: delivery},
        }
        sender, receiver = anyio.create_memory_object_stream[bytes](0)  # a rendezvous
        started: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = (
            asyncio.get_running_loop().create_future()
        )
        disconnected = anyio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.set_result((message["status"], list(message.get("headers", []))))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    await sender.send(message["body"])  # returns once the client took it
                if not message.get("more_body", False):
                    await sender.aclose()

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:  # a deliberate cut (FakeStreamCut): the client sees a broken body
                delivery["error"] = exc
            finally:
                await sender.aclose()
                if not started.done():
                    started.set_exception(httpx.RemoteProtocolError("the fake provider sent no answer"))

        task = asyncio.get_running_loop().create_task(run())
        try:
            status, headers = await started
        except BaseException:
            task.cancel()
            raise
        return httpx.Response(status, headers=headers, stream=_Body(receiver, task, disconnected, delivery))


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, portal: anyio.from_thread.BlockingPortal, stream: Any) -> None:
        self.portal, self.stream = portal, stream
        self.chunks = stream.__aiter__()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                yield self.portal.call(self.chunks.__anext__)
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self.portal.call(self.stream.aclose)


class SyncFakeTransport(httpx.BaseTransport):
    """The sync twin of :class:`FakeTransport`: the app runs on an event loop in a thread of its
    own (started here, stopped by :meth:`close`)."""

    def __init__(self, app: Any) -> None:
        self.inner = FakeTransport(app)
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self.portal = self._portal_cm.__enter__()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        copy = httpx.Request(request.method, request.url, headers=request.headers, content=request.content)
        response = self.portal.call(self.inner.handle_async_request, copy)
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_SyncBody(self.portal, response.stream)
        )

    def close(self) -> None:
        self._portal_cm.__exit__(None, None, None)
