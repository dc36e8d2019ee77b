"""One proxied call: attribute, estimate, decide, reserve, forward, settle.

Streams are relayed event by event while their output is counted; when the count reaches the
output bound the reservation was made for, the stream is ended the way the provider ends one that
hit its own bound (see each endpoint's ``closing``), never by dropping the connection. Whatever
way a call ends (completed, cut off, upstream error, client gone) it is settled exactly once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tokenward.core.estimate import count_tokens
from tokenward.core.usage import Usage
from tokenward.errors import BudgetExceeded, LedgerError, UnpricedCall, ValidationError
from tokenward.gateway.auth import authenticate, subject_for
from tokenward.gateway.config import GatewayConfig, UpstreamConfig
from tokenward.gateway.endpoints import Endpoint, StreamState
from tokenward.gateway.errors import GatewayError, error_response
from tokenward.gateway.sse import format_event, parse_events
from tokenward.guard import Admission, AsyncGuard, Outcome, plan_call
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
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GatewayError(400, "the request body is not valid JSON", param="body") from None
    try:
        endpoint.validate(body)
    except ValidationError as exc:
        raise GatewayError(400, str(exc), param=exc.field) from None
    subject = subject_for(request.headers, key)
    model = body["model"]
    upstream = config.upstream_for(endpoint.dialect, model)
    if upstream is None:
        raise GatewayError(
            404,
            f"no upstream is configured for model {model!r} on {endpoint.path}",
            code="model_not_found",
            param="model",
        )

    estimate = endpoint.estimate(body, model)
    choices = endpoint.choices(body)
    per_choice = endpoint.requested_max(body) or config.settings.default_max_output_tokens
    plan = plan_call(
        model,
        estimate.input_tokens,
        per_choice * choices,
        state.guard.prices,
        config.settings,
        provider=upstream.provider,
        may_write_cache=endpoint.may_write_cache(body),
    )
    admission = await state.guard.admit(
        subject, plan, request_id=request_id, endpoint=endpoint.dialect, provider=upstream.provider
    )
    bound = max(1, admission.max_output_tokens // choices)
    upstream_body = endpoint.with_bound(body, bound, upstream.provider)
    headers = _upstream_headers(request.headers, upstream, endpoint.dialect)
    call = _Call(state, endpoint, upstream, admission, estimate.encoding, headers)
    if body.get("stream") is True:
        return await call.stream(upstream_body, choices)
    return await call.json(upstream_body)


class _Call:
    """One admitted call on its way upstream."""

    def __init__(
        self,
        state: GatewayState,
        endpoint: Endpoint,
        upstream: UpstreamConfig,
        admission: Admission,
        encoding: str,
        headers: dict[str, str],
    ) -> None:
        self.state = state
        self.endpoint = endpoint
        self.upstream = upstream
        self.admission = admission
        self.encoding = encoding
        self.headers = headers
        self.client = state.client(upstream)
        self.url = upstream.url(endpoint.dialect)
        self.own = _own_headers(admission.request_id, state.version)

    async def _settle(self, outcome: Outcome) -> None:
        try:
            await self.state.guard.settle(self.admission, outcome)
        except Exception:  # never lose the caller's answer over a ledger write; the hold expires
            log.exception("could not settle request %s", self.admission.request_id)

    async def _upstream_failed(self, exc: httpx.HTTPError) -> Response:
        timed_out = isinstance(exc, httpx.TimeoutException)
        await self._settle(Outcome(None, status="upstream_error", metadata={"error": type(exc).__name__}))
        error = GatewayError(
            504 if timed_out else 502,
            f"upstream {self.upstream.name!r} {'timed out' if timed_out else 'failed'}: {type(exc).__name__}",
            type="api_error",
            code="upstream_timeout" if timed_out else "upstream_error",
        )
        return error_response(self.endpoint.dialect, error, self.own)

    async def _error_status(self, response: httpx.Response, content: bytes) -> Response:
        await self._settle(
            Outcome(None, status="upstream_error", metadata={"http_status": response.status_code})
        )
        return Response(
            content,
            response.status_code,
            headers=_response_headers(response, self.admission.request_id, self.state.version),
        )

    async def json(self, body: dict[str, Any]) -> Response:
        """A non-streamed call: forward, read the usage (or count the text), settle, answer."""
        try:
            response = await self.client.post(self.url, content=json.dumps(body), headers=self.headers)
        except httpx.HTTPError as exc:
            return await self._upstream_failed(exc)
        if response.status_code >= 400:
            return await self._error_status(response, response.content)
        try:
            data = response.json()
        except ValueError:
            data = None
        usage = self.endpoint.usage(data) if isinstance(data, dict) else None
        counted = None
        if isinstance(data, dict) and (usage is None or usage.output_tokens is None):
            counted = count_tokens(self.endpoint.response_text(data), self.encoding)
        served, tier = self.endpoint.served(data) if isinstance(data, dict) else (None, None)
        metadata = {"response_id": data.get("id")} if isinstance(data, dict) and data.get("id") else {}
        await self._settle(Outcome(usage, counted, "ok", served, tier, metadata))
        return Response(
            response.content,
            response.status_code,
            headers=_response_headers(response, self.admission.request_id, self.state.version),
        )

    async def stream(self, body: dict[str, Any], choices: int) -> Response:
        """A streamed call: relay events, count output, cut off at the bound, settle once."""
        body, wants_usage = self.endpoint.prepare_stream(body)
        request = self.client.build_request("POST", self.url, content=json.dumps(body), headers=self.headers)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            return await self._upstream_failed(exc)
        if response.status_code >= 400:
            content = await response.aread()
            await response.aclose()
            return await self._error_status(response, content)
        stream = StreamState(self.endpoint.reader(), wants_usage, choices)
        headers = _response_headers(response, self.admission.request_id, self.state.version)
        headers["cache-control"] = "no-cache"
        return _SettledStream(self._relay(response, stream), headers=headers, media_type="text/event-stream")

    async def _relay(self, response: httpx.Response, stream: StreamState) -> AsyncIterator[bytes]:
        """Relay, count, cut off at the bound; settle *before* the client sees the stream's end, so
        the ledger is up to date when the client's call returns."""
        endpoint, bound = self.endpoint, self.admission.max_output_tokens
        status, beyond, settled = "stream_broken", 0, False
        tail: list[bytes] = []
        try:
            async for name, data in parse_events(response.aiter_bytes()):
                if endpoint.is_end(name, data, None):
                    stream.finished, tail = True, [format_event(data, name)]
                    break
                try:
                    event = json.loads(data)
                except json.JSONDecodeError:
                    event = None
                if not isinstance(event, dict):
                    yield format_event(data, name)
                    continue
                text = stream.reader.feed(event)
                tokens = count_tokens(text, self.encoding) if text else 0
                if stream.counted + tokens > bound:
                    keep = bound - stream.counted
                    if keep > 0:
                        yield endpoint.encode(name, endpoint.truncate(event, keep, self.encoding))
                    beyond, stream.counted, status = tokens - max(keep, 0), bound, "cut_off"
                    tail = endpoint.closing(
                        stream,
                        model=self.admission.plan.model,
                        input_tokens=self._input_tokens(stream),
                        reason="budget",
                    )
                    break
                stream.counted += tokens
                relayed = endpoint.relay(name, data, event, stream)
                if endpoint.is_end(name, data, event):
                    stream.finished, tail = True, [relayed] if relayed is not None else []
                    break
                if relayed is not None:
                    yield relayed
            if stream.finished:
                status = "ok"
            elif status != "cut_off":
                tail = [endpoint.error_event("the upstream stream ended before it finished")]
        except httpx.HTTPError as exc:
            log.warning("upstream stream of %s broke: %s", self.admission.request_id, exc)
            status = "stream_broken"
            tail = [endpoint.error_event(f"the upstream stream broke: {type(exc).__name__}")]
        except (asyncio.CancelledError, GeneratorExit):
            status = "client_aborted"
            raise
        finally:
            if not settled:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
                    await self._settle(self._stream_outcome(stream, status, beyond))
                    settled = True
        for chunk in tail:
            yield chunk

    def _input_tokens(self, stream: StreamState) -> int:
        usage = stream.reader.usage
        if usage is not None and usage.input_tokens is not None:
            return usage.input_tokens
        return self.admission.plan.input_tokens

    def _stream_outcome(self, stream: StreamState, status: str, beyond: int) -> Outcome:
        usage: Usage | None = stream.reader.usage
        if usage is not None and status != "ok":
            # running or opening counts of an unfinished stream are not the final output
            usage = replace(usage, output_tokens=None, reasoning_tokens=None, output_source="none")
        metadata: dict[str, Any] = {"stream": True}
        if stream.reader.response_id:
            metadata["response_id"] = stream.reader.response_id
        if stream.reader.finish_reason:
            metadata["finish_reason"] = stream.reader.finish_reason
        if status == "cut_off":
            metadata["cut_off"] = "budget"
            if beyond:
                metadata["received_beyond_cut_tokens"] = beyond
        return Outcome(usage, stream.counted, status, stream.reader.model, None, metadata)  # type: ignore[arg-type]


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
