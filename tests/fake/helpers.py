"""Helpers shared by the fake provider's tests: a real socket server, SSE parsing, common prompts.

Prompt counts by hand (pieces of ``\\w+|[^\\w\\s]``): ``"Hello, world!"`` is Hello , world ! = 4
pieces, so as one message it is 4 + 4 = 8 prompt tokens; ``"Be nice."`` is Be nice . = 3.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette

HELLO_WORLD: Any = [{"role": "user", "content": "Hello, world!"}]  # 4 pieces + 4 = 8 prompt tokens
SYSTEM = "Be nice."  # 3 pieces
TWENTY = "hello" + " hello" * 19


def hello(k: int) -> str:
    """The fake's reply of ``k`` tokens, written out by hand."""
    return "hello" + " hello" * (k - 1) if k else ""


@contextmanager
def running(app: Starlette) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port in a background thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake provider did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def sse(text: str) -> list[tuple[str | None, str]]:
    """Split an SSE body into (event name, data) pairs."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


def sse_json(text: str) -> list[dict[str, Any]]:
    return [json.loads(data) for _, data in sse(text) if data != "[DONE]"]
