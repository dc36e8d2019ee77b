"""Running an ASGI app on a real socket, in a background thread, for the length of a test."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """An ASGI app served by uvicorn on ``127.0.0.1:<port>`` in a daemon thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", timeout_keep_alive=60
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 20.0) -> None:
        """Start and wait until the socket accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"server on {self.url} died while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on {self.url} did not start in {timeout}s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[ThreadedServer]:
    """``with serving(app) as server: ... server.url ...``."""
    server = ThreadedServer(app)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def serve_gateway(config: Any, port: int, log: Any, *, timeout: float = 60.0, workers: int = 1) -> Any:
    """``tokenward serve --config <config> --port <port> --workers <workers>`` as a real OS
    process (its output in ``log``), once ``/healthz`` answers (with several workers: once every
    worker has said it is ready); raises with the log when it does not start."""
    import os
    import subprocess
    import sys

    import httpx

    args = [sys.executable, "-m", "tokenward.cli", "serve", "--config", str(config), "--port", str(port)]
    args += ["--log-format", "json", "--workers", str(workers)]
    proc = subprocess.Popen(args, stdout=log.open("a"), stderr=subprocess.STDOUT, env=os.environ.copy())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                if workers == 1 or log.read_text().count("Application startup complete") >= workers:
                    return proc
                time.sleep(0.1)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"gateway did not start: {log.read_text()}")
