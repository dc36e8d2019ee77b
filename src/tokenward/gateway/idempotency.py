"""``Idempotency-Key``: a repeated request is answered from the ledger, never sent twice.

A client may send ``Idempotency-Key: <1-255 printable ASCII characters>`` (the official OpenAI
and Anthropic clients send none by default: ``extra_headers={"Idempotency-Key": ...}`` on a call,
or ``default_headers`` on the client). Keys are namespaced per virtual key (two clients never
share one). For a key the gateway has seen within ``idempotency_ttl_seconds`` (default 24 h):

* the same request (method, path, query and body byte for byte) whose answer is stored: that
  answer is returned again (status, headers, body; a stream is replayed as a stream, chunk by
  chunk) with ``idempotent-replayed: true``, without calling the upstream, admitting or charging
  anything;
* the same request still running: **409** (``idempotency_key_in_progress``), with
  ``retry-after: 1``;
* a different request: **422** (``idempotency_key_reused``).

Only a successful (2xx) answer is stored; a refusal (402/429), an upstream error or a client that
went away frees the key, so the client's retry is made for real. A request that never finishes
(its process died) holds its key for :data:`~tokenward.ledger.records.IDEMPOTENCY_RUNNING`
seconds. Records live in the ledger (:meth:`~tokenward.ledger.Ledger.begin_idempotent`), so every
replica of a gateway sharing a ledger sees them.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tokenward.gateway.config import KeyConfig
from tokenward.gateway.errors import GatewayError

__all__ = ["HEADER", "Idempotency", "begin"]

log = logging.getLogger("tokenward.gateway")

HEADER = "idempotency-key"
REPLAYED = "idempotent-replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_NOT_STORED = {"content-length", "date", "server", "transfer-encoding", "connection"}


def _digest(request: Request, body: bytes) -> str:
    """SHA-256 of what the request asks: method, path, query and body."""
    h = hashlib.sha256()
    for part in (request.method.encode(), request.url.path.encode(), request.url.query.encode()):
        h.update(part + b"\0")
    h.update(body)
    return h.hexdigest()


def _headers(response: Response) -> list[list[str]]:
    return [
        [k.decode("latin-1"), v.decode("latin-1")]
        for k, v in response.raw_headers
        if k.decode("latin-1").lower() not in _NOT_STORED
    ]


def replay(stored: dict[str, Any]) -> Response:
    """The stored answer, again (a stream as a stream)."""
    headers = {k: v for k, v in stored.get("headers") or ()}
    headers[REPLAYED] = "true"
    media_type = stored.get("media_type")
    if "chunks" in stored:
        chunks = [base64.b64decode(c) for c in stored["chunks"]]

        async def again() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return StreamingResponse(
            again(), status_code=int(stored["status"]), headers=headers, media_type=media_type
        )
    return Response(
        base64.b64decode(stored.get("body") or ""), status_code=int(stored["status"]), headers=headers,
        media_type=media_type,
    )  # fmt: skip


class Idempotency:
    """A request holding an ``Idempotency-Key``: its answer is stored, or the key freed."""

    def __init__(self, ledger: Any, namespace: str, key: str, request_id: str, ttl: timedelta) -> None:
        self.ledger = ledger
        self.namespace = namespace
        self.key = key
        self.request_id = request_id
        self.ttl = ttl

    async def drop(self) -> None:
        """Free the key (the request ended without an answer worth storing); never raises."""
        with anyio.CancelScope(shield=True):
            try:
                await self.ledger.drop_idempotent(self.namespace, self.key, self.request_id)
            except Exception:  # it frees itself after IDEMPOTENCY_RUNNING
                log.exception("could not free Idempotency-Key of %s", self.request_id)

    async def _finish(self, stored: dict[str, Any]) -> None:
        try:
            await self.ledger.finish_idempotent(self.namespace, self.key, self.request_id, stored, self.ttl)
        except Exception:  # the answer is the caller's either way; a repeat will be made again
            log.exception("could not store the answer of Idempotency-Key of %s", self.request_id)

    async def capture(self, response: Response) -> Response:
        """Store ``response`` under the key when it is a success (a stream once it ended), else
        free the key; returns the response to send."""
        if not 200 <= response.status_code < 300:
            await self.drop()
            return response
        stored: dict[str, Any] = {
            "status": response.status_code,
            "headers": _headers(response),
            "media_type": response.media_type,
        }
        if not isinstance(response, StreamingResponse):
            await self._finish({**stored, "body": base64.b64encode(bytes(response.body)).decode()})
            return response
        original = response.body_iterator

        async def relay() -> AsyncIterator[Any]:
            chunks: list[str] = []
            ended = False
            try:
                async for chunk in original:
                    raw = chunk if isinstance(chunk, bytes | bytearray | memoryview) else str(chunk).encode()
                    chunks.append(base64.b64encode(bytes(raw)).decode())
                    yield chunk
                ended = True
            finally:  # also when the client went away (cancelled) or the stream broke
                with anyio.CancelScope(shield=True):
                    close = getattr(original, "aclose", None)
                    if close is not None:
                        await close()  # the relay settles the call as it closes
                    if ended:
                        await self._finish({**stored, "chunks": chunks})
                    else:
                        await self.drop()

        response.body_iterator = relay()
        return response


async def begin(
    request: Request, body: bytes, key: KeyConfig, ledger: Any, request_id: str, ttl_seconds: int
) -> tuple[Idempotency | None, Response | None]:
    """Claim the request's ``Idempotency-Key``: ``(holder, None)`` when it is the first (store
    its answer with :meth:`Idempotency.capture`), ``(None, answer)`` for a repeat whose answer is
    stored, ``(None, None)`` without the header (or with ``idempotency_ttl_seconds: 0``).

    Raises:
        GatewayError: 400 for a malformed key, 409 while the first request runs, 422 when the
            key was used for a different request.
    """
    value = request.headers.get(HEADER)
    if value is None or ttl_seconds <= 0:
        return None, None
    if not _KEY.match(value):
        raise GatewayError(400, "Idempotency-Key must be 1 to 255 printable ASCII characters", param=HEADER)
    digest = _digest(request, body)
    found = await ledger.begin_idempotent(key.key_sha256, value, digest, request_id)
    if found is None:
        return Idempotency(ledger, key.key_sha256, value, request_id, timedelta(seconds=ttl_seconds)), None
    if found.body_sha256 != digest:
        raise GatewayError(
            422,
            "this Idempotency-Key was used for a different request; use a new key for a new request",
            code="idempotency_key_reused",
            param=HEADER,
        )
    if found.state != "done" or found.response is None:
        raise GatewayError(
            409,
            f"a request with this Idempotency-Key ({found.request_id}) is still running; retry when it has answered",
            code="idempotency_key_in_progress",
            param=HEADER,
            headers={"retry-after": "1"},
        )
    return None, replay(dict(found.response))
