"""One proxied call: attribute, estimate, decide, reserve, forward, settle.

Streams are relayed event by event while their output is counted; when the count reaches the
output bound the reservation was made for, the stream is ended the way the provider ends one that
hit its own bound (see each endpoint's ``closing``), never by dropping the connection. Whatever
way a call ends (completed, cut off, upstream error, client gone) it is settled exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tokenward.errors import BudgetExceeded, LedgerError, UnpricedCall, ValidationError
from tokenward.gateway.auth import authenticate, subject_for
from tokenward.gateway.config import GatewayConfig, UpstreamConfig
from tokenward.gateway.errors import GatewayError, error_response
from tokenward.guard import Admission, AsyncGuard, Outcome
from tokenward.guard.wire.endpoints import Endpoint
from tokenward.guard.wire.exchange import PreparedCall, StreamRelay, json_outcome, prepare, upstream_body
from tokenward.ledger.base import new_id

__all__ = ["GatewayState", "proxy"]

log = logging.getLogger("tokenward.gateway")

_HOP_BY_HOP = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "authorization",
    "x-api-key",
    "cookie",
    "accept-encoding",
    "content-encoding",
}


class GatewayState:
    """Everything a request handler needs: config, guard, and one HTTP client per upstream."""

    def __init__(
        self, config: GatewayConfig, guard: AsyncGuard, clients: Mapping[str, httpx.AsyncClient], version: str
    ) -> None:
        self.config = config
        self.guard = guard
        self.clients = dict(clients)
        self.version = version

    def client(self, upstream: UpstreamConfig) -> httpx.AsyncClient:
        """The HTTP client for an upstream."""
        return self.clients[upstream.name]


def _upstream_headers(incoming: Mapping[str, str], upstream: UpstreamConfig, dialect: str) -> dict[str, str]:
    out = {
        k: v
        for k, v in incoming.items()
        if k.lower() not in _HOP_BY_HOP and not k.lower().startswith("x-tokenward-")
    }
    out["content-type"] = "application/json"
    key = upstream.api_key()
    if dialect == "anthropic-messages":
        out.setdefault("anthropic-version", "2023-06-01")
        if key:
            out["x-api-key"] = key
    elif key:
        out["authorization"] = f"Bearer {key}"
    return out


def _response_headers(upstream: httpx.Response, request_id: str, version: str) -> dict[str, str]:
    out = {
        k: v
        for k, v in upstream.headers.items()
        if k.lower() not in _HOP_BY_HOP and k.lower() != "set-cookie"
    }
    out.update(_own_headers(request_id, version))
    return out


def _own_headers(request_id: str, version: str) -> dict[str, str]:
    return {"x-tokenward-request-id": request_id, "x-tokenward-gateway": f"tokenward/{version}"}


def _denial(exc: BudgetExceeded | UnpricedCall, status: int) -> GatewayError:
    if isinstance(exc, UnpricedCall):
        return GatewayError(
            status,
            str(exc),
            type="budget_exceeded",
            code="unpriced_model",
            extra={"budget": {"budget": exc.budget, "model": exc.model}},
        )
    return GatewayError(
        status, str(exc), type="budget_exceeded", code="budget_exceeded", extra={"budget": exc.to_dict()}
    )


async def proxy(request: Request, endpoint: Endpoint, state: GatewayState) -> Response:
    """Handle one call to ``endpoint``; every failure becomes an answer in the dialect's shape."""
    request_id = request.headers.get("x-request-id") or new_id("req")
    own = _own_headers(request_id, state.version)
    try:
        return await _proxy(request, endpoint, state, request_id)
    except GatewayError as exc:
        return error_response(endpoint.dialect, exc, own)
    except (BudgetExceeded, UnpricedCall) as exc:
        return error_response(endpoint.dialect, _denial(exc, state.config.denial_status), own)
    except LedgerError as exc:
        log.error("ledger unavailable: %s", exc)
        error = GatewayError(
            503,
            "the budget ledger is unavailable; the call was not made",
            type="api_error",
            code="ledger_unavailable",
        )
        return error_response(endpoint.dialect, error, own)


async def _proxy(request: Request, endpoint: Endpoint, state: GatewayState, request_id: str) -> Response:
    config = state.config
    key = authenticate(request.headers, config)
    try:
        call = prepare(endpoint, await request.body())
    except ValidationError as exc:
        raise GatewayError(400, str(exc), param=exc.field) from None
    subject = subject_for(request.headers, key)
    upstream = config.upstream_for(endpoint.dialect, call.model)
    if upstream is None:
        raise GatewayError(
            404,
            f"no upstream is configured for model {call.model!r} on {endpoint.path}",
            code="model_not_found",
            param="model",
        )
    plan = call.plan(state.guard.prices, config.settings, upstream.provider)
    admission = await state.guard.admit(
        subject, plan, request_id=request_id, endpoint=endpoint.dialect, provider=upstream.provider
    )
    content, wants_usage = upstream_body(call, admission, upstream.provider)
    exchange = _Exchange(
        state, call, upstream, admission, _upstream_headers(request.headers, upstream, endpoint.dialect)
    )
    if call.stream:
        return await exchange.stream(content, wants_usage)
    return await exchange.json(content)


class _Exchange:
    """One admitted call on its way upstream and back."""

    def __init__(
        self,
        state: GatewayState,
        call: PreparedCall,
        upstream: UpstreamConfig,
        admission: Admission,
        headers: dict[str, str],
    ) -> None:
        self.state = state
        self.call = call
        self.upstream = upstream
        self.admission = admission
        self.headers = headers
        self.client = state.client(upstream)
        self.url = upstream.url(call.endpoint.dialect)
        self.own = _own_headers(admission.request_id, state.version)

    async def _settle(self, outcome: Outcome) -> None:
        try:
            await self.state.guard.settle(self.admission, outcome)
        except Exception:  # never lose the caller's answer over a ledger write; the hold expires
            log.exception("could not settle request %s", self.admission.request_id)

    def _headers(self, response: httpx.Response) -> dict[str, str]:
        return _response_headers(response, self.admission.request_id, self.state.version)

    async def _upstream_failed(self, exc: httpx.HTTPError) -> Response:
        timed_out = isinstance(exc, httpx.TimeoutException)
        await self._settle(Outcome(None, status="upstream_error", metadata={"error": type(exc).__name__}))
        error = GatewayError(
            504 if timed_out else 502,
            f"upstream {self.upstream.name!r} {'timed out' if timed_out else 'failed'}: {type(exc).__name__}",
            type="api_error",
            code="upstream_timeout" if timed_out else "upstream_error",
        )
        return error_response(self.call.endpoint.dialect, error, self.own)

    async def _error_status(self, response: httpx.Response, content: bytes) -> Response:
        await self._settle(
            Outcome(None, status="upstream_error", metadata={"http_status": response.status_code})
        )
        return Response(content, response.status_code, headers=self._headers(response))

    async def json(self, content: bytes) -> Response:
        """A non-streamed call: forward, read the usage (or count the text), settle, answer."""
        try:
            response = await self.client.post(self.url, content=content, headers=self.headers)
        except httpx.HTTPError as exc:
            return await self._upstream_failed(exc)
        if response.status_code >= 400:
            return await self._error_status(response, response.content)
        await self._settle(json_outcome(self.call.endpoint, response.content, self.call.estimate.encoding))
        return Response(response.content, response.status_code, headers=self._headers(response))

    async def stream(self, content: bytes, wants_usage: bool) -> Response:
        """A streamed call: relay events, count output, cut off at the bound, settle once."""
        request = self.client.build_request("POST", self.url, content=content, headers=self.headers)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            return await self._upstream_failed(exc)
        if response.status_code >= 400:
            body = await response.aread()
            await response.aclose()
            return await self._error_status(response, body)
        headers = self._headers(response)
        headers["cache-control"] = "no-cache"
        relay = StreamRelay(self.call, self.admission, wants_usage)
        return _SettledStream(self._pump(response, relay), headers=headers, media_type="text/event-stream")

    async def _pump(self, response: httpx.Response, relay: StreamRelay) -> AsyncIterator[bytes]:
        """Pass the upstream's bytes through the relay; settle before the client sees the end."""
        try:
            try:
                async for chunk in response.aiter_bytes():
                    for data in relay.feed(chunk):
                        yield data
                    if (
                        relay.done and relay.status != "ok"
                    ):  # a finished stream is read to its end, so its connection is reused
                        break
                else:
                    for data in relay.upstream_ended():
                        yield data
            except httpx.HTTPError as exc:
                log.warning("upstream stream of %s broke: %s", self.admission.request_id, exc)
                relay.upstream_failed(type(exc).__name__)
        except (asyncio.CancelledError, GeneratorExit):
            relay.client_gone()
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
                await self._settle(relay.outcome())
        for data in relay.tail:
            yield data


class _SettledStream(StreamingResponse):
    """A streaming response whose body iterator is always closed (and so settled), also when the
    client goes away between two events."""

    def __init__(self, body: AsyncIterator[bytes], *, headers: Mapping[str, str], media_type: str) -> None:
        super().__init__(body, status_code=200, headers=dict(headers), media_type=media_type)
        self._iterator = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        iterator = self._iterator
        try:
            async with anyio.create_task_group() as group:

                async def watch_disconnect() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            group.cancel_scope.cancel()
                            return

                group.start_soon(watch_disconnect)
                await send(
                    {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
                )
                async for chunk in iterator:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await iterator.aclose()  # type: ignore[attr-defined]
