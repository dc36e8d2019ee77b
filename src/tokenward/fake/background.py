"""The fake provider on a loopback socket in a background thread, for a gateway that serves it
"in-process" (an upstream ``provider: fake`` without ``base_url``).

A real socket rather than ``httpx.ASGITransport``: that transport collects the whole response
before returning it, so a stream would reach the gateway's client in one piece at its end. Over
the socket, chunks arrive as the fake sends them, as they would from a real provider.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import uvicorn

from tokenward.fake.options import FakeSettings
from tokenward.fake.provider import create_app
from tokenward.fake.streaming import QuietStreamCuts

__all__ = ["BackgroundFake"]


_THREAD = "tokenward-fake"


class _QuietFake(logging.Filter):
    """Drops the in-process fake's informational uvicorn lines ("Uvicorn running on
    http://127.0.0.1:<port>"); its warnings and errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.threadName != _THREAD


class BackgroundFake:
    """The fake provider served by uvicorn on ``127.0.0.1:<free port>`` in a daemon thread.

    ``start()`` before use, ``stop()`` after; :meth:`transport` gives an ``httpx`` transport that
    sends every request to it whatever host the URL names (the gateway's placeholder
    ``fake.invalid``). The thread installs no signal handlers: the gateway keeps its own.
    """

    def __init__(self, settings: FakeSettings | None = None) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        # No log level of its own: uvicorn's loggers are shared with the gateway's server, whose
        # level must stay as configured; the fake's own start-up and access lines (its loopback
        # port is an internal detail) are dropped by a filter instead.
        config = uvicorn.Config(
            create_app(settings), log_level=None, access_log=False, lifespan="off", log_config=None
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name=_THREAD, daemon=True
        )
        errors = logging.getLogger("uvicorn.error")
        errors.addFilter(QuietStreamCuts())
        if not any(isinstance(f, _QuietFake) for f in errors.filters):
            errors.addFilter(_QuietFake())

    def start(self, timeout: float = 10.0) -> BackgroundFake:
        """Start serving and wait until the socket accepts connections (seconds).

        Raises:
            RuntimeError: the server did not come up within ``timeout``.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process fake provider did not start")
            time.sleep(0.01)
        return self

    def transport(self, limits: httpx.Limits | None = None) -> httpx.AsyncBaseTransport:
        """A new ``httpx`` transport whose requests all go to this server (``limits``: its
        connection pool, httpx's defaults when None)."""
        return _ToPort(self.port, limits or httpx.Limits())

    def stop(self) -> None:
        """Ask the server to exit and wait for its thread (up to 10 s)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()


class _ToPort(httpx.AsyncBaseTransport):
    """Sends each request to ``127.0.0.1:<port>`` over plain HTTP, keeping its path and query."""

    def __init__(self, port: int, limits: httpx.Limits) -> None:
        self._port = port
        self._inner = httpx.AsyncHTTPTransport(limits=limits)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self._port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
