"""One proxied call: attribute, estimate, decide, reserve, forward, settle.

Streams are relayed event by event while their output is counted; when the count reaches the
output bound the reservation was made for, the stream is ended the way the provider ends one that
hit its own bound (see each endpoint's ``closing``), never by dropping the connection. Whatever
way a call ends (completed, cut off, upstream error, client gone) it is settled exactly once.

When an upstream fails before answering (connection error, time-out, 429 or 5xx), the next
attempt is tried: another upstream serving the model, then the configured fallback models; each
attempt is admitted against the budgets on its own, so a paid fallback behind a free primary is
checked before it is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tokenward.core.decide import Decision
from tokenward.core.events import UsageEvent
from tokenward.core.windows import Window
from tokenward.errors import BudgetExceeded, LedgerError, StoreUnavailable, UnpricedCall, ValidationError
from tokenward.gateway import idempotency
from tokenward.gateway.auth import (
    authenticate_any,
    authenticate_sigv4,
    body_user,
    signed_with_sigv4,
    subject_for,
)
from tokenward.gateway.carried import CarriedBudgets, carried_budgets
from tokenward.gateway.clouds import upstream_content, upstream_url
from tokenward.gateway.config import AUTH_MODES as CLOUD_AUTH
from tokenward.gateway.config import PROVIDERS, GatewayConfig, KeyConfig, UpstreamConfig
from tokenward.gateway.errors import GatewayError, error_response
from tokenward.gateway.logs import log_call
from tokenward.gateway.settling import SettleAfter, Settlements, defer, settle_now
from tokenward.guard import Admission, AsyncGuard, Outcome
from tokenward.guard.context import conversation_growth
from tokenward.guard.wire.azure import content_filtered, filtered_outcome
from tokenward.guard.wire.bounded import BoundedAnswer, bounds, streamed
from tokenward.guard.wire.endpoints import Endpoint
from tokenward.guard.wire.exchange import (
    PreparedCall,
    StreamRelay,
    json_outcome,
    load_body,
    prepare,
    prepare_body,
    upstream_body,
    upstream_content_type,
)
from tokenward.ledger.base import new_id
from tokenward.numbers import plain
from tokenward.throttle import Throttle

__all__ = ["GatewayState", "own_headers", "passthrough", "proxy"]

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
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "idempotency-key",  # the gateway answers repeats itself (tokenward.gateway.idempotency)
    "accept-encoding",
    "content-encoding",
}
_LARGE_BODY = 256 * 1024
"""Request bodies above this many bytes are parsed and estimated in a worker thread."""
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504, 529}


class GatewayState:
    """Everything a request handler needs: config, guard, one HTTP client per upstream, and the
    count of calls still to settle (the gateway waits for them before it exits)."""

    def __init__(
        self, config: GatewayConfig, guard: AsyncGuard, clients: Mapping[str, httpx.AsyncClient], version: str
    ) -> None:
        self.config = config
        self.guard = guard
        self.clients = dict(clients)
        self.version = version
        self.unsettled = 0
        self._settled = asyncio.Event()
        self.factory: Any = None  # builds upstream clients again on a config reload (app.py)
        self.carried = CarriedBudgets(guard.ledger, config.settings.ttl)
        """The leases held for budgets clients carry (:mod:`tokenward.gateway.carried`)."""
        self.settlements = Settlements()
        """Calls answered and waiting to settle (:mod:`tokenward.gateway.settling`)."""
        self._borrowed: dict[int, int] = {}  # id(client) -> calls using it (borrow/give_back)
        self._retired: dict[int, httpx.AsyncClient] = {}  # replaced by a reload, still in use
        self._closing: set[asyncio.Task[None]] = set()

    def client(self, upstream: UpstreamConfig) -> httpx.AsyncClient:
        """The HTTP client for an upstream."""
        return self.clients[upstream.name]

    def borrow(self, upstream: UpstreamConfig) -> httpx.AsyncClient:
        """The HTTP client for an upstream, for one call: a config reload that replaces it
        (:meth:`retire`) closes it only once every call that borrowed it gave it back."""
        client = self.clients[upstream.name]
        self._borrowed[id(client)] = self._borrowed.get(id(client), 0) + 1
        return client

    def give_back(self, client: httpx.AsyncClient) -> None:
        """A call is done with ``client`` (its upstream answer read and closed)."""
        left = self._borrowed.get(id(client), 1) - 1
        if left > 0:
            self._borrowed[id(client)] = left
            return
        self._borrowed.pop(id(client), None)
        retired = self._retired.pop(id(client), None)
        if retired is not None:
            task = asyncio.get_running_loop().create_task(retired.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def retire(self, client: httpx.AsyncClient) -> None:
        """Close ``client``, replaced by a config reload, once no call uses it any more: closing
        it at once closed the connections of the calls still reading their answers (their
        answers hung, their holds with them)."""
        if self._borrowed.get(id(client)):
            self._retired[id(client)] = client
        else:
            await client.aclose()

    async def close_clients(self) -> None:
        """Close every upstream client, the retired ones still in use included (shutdown)."""
        for client in [*self.clients.values(), *self._retired.values()]:
            await client.aclose()
        self._retired.clear()

    def opened(self) -> None:
        """A call was admitted and must be settled."""
        self.unsettled += 1
        self._settled.clear()

    def closed(self) -> None:
        """A call was settled (or released)."""
        self.unsettled -= 1
        if self.unsettled <= 0:
            self._settled.set()

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every admitted call to settle; returns how many are
        still open."""
        if self.unsettled > 0:
            with anyio.move_on_after(timeout):
                await self._settled.wait()
        return self.unsettled


def _upstream_headers(incoming: Mapping[str, str], upstream: UpstreamConfig, family: str) -> dict[str, Any]:
    # header values go on as the bytes they came in (ASGI decodes them as latin-1), so a value
    # outside ASCII is forwarded unchanged rather than failing to encode
    out: dict[str, Any] = {
        k: v.encode("latin-1", errors="replace")
        for k, v in incoming.items()
        if k.lower() not in _HOP_BY_HOP and not k.lower().startswith("x-tokenward-")
    }
    out["content-type"] = "application/json"
    key = upstream.api_key()
    if family == "anthropic":
        out.setdefault("anthropic-version", "2023-06-01")
        if key:
            out["x-api-key"] = key
    elif family == "gemini":
        if key:
            out["x-goog-api-key"] = key
    elif upstream.provider in CLOUD_AUTH:
        pass  # the upstream client's auth hook signs (gateway/clouds)
    elif key:
        out["authorization"] = f"Bearer {key}"
    return out


_OWN_RESPONSE_HEADERS = {"set-cookie", "date", "server"}
"""Upstream response headers not passed on: cookies, and the ``date`` and ``server`` that the
gateway's own HTTP server writes on every answer (passed on too, they were sent twice)."""


def _response_headers(upstream: httpx.Response, own: Mapping[str, str]) -> dict[str, str]:
    out = {
        k: v
        for k, v in upstream.headers.items()
        if k.lower() not in _HOP_BY_HOP and k.lower() not in _OWN_RESPONSE_HEADERS
    }
    out.update(own)
    return out


def own_headers(request_id: str, version: str) -> dict[str, str]:
    """The headers the gateway puts on every answer: its request id and its own version."""
    return {"x-tokenward-request-id": request_id, "x-tokenward-gateway": f"tokenward/{version}"}


def _seconds_until(at: Any, now: Any) -> int | None:
    return None if at is None else max(0, math.ceil((at - now).total_seconds()))


def _budget_headers(decision: Decision, event: UsageEvent | None, now: Any) -> dict[str, str]:
    """``x-ratelimit-*``-style headers for the tightest hard budget: its limit, what remains after
    this call (its real charge once settled, else its hold), and when it resets (seconds)."""
    balance = decision.tightest
    if balance is None:
        return {}
    meter = balance.budget.meter
    used = (event.charged if event is not None else decision.amounts).get(meter, Decimal(0))
    headers = {
        "x-tokenward-budget": balance.budget.name,
        "x-tokenward-budget-meter": meter,
        "x-ratelimit-limit": plain(balance.budget.limit),
        "x-ratelimit-remaining": plain(max(Decimal(0), balance.remaining - used)),
    }
    reset = _seconds_until(balance.reset_at, now)
    if reset is not None:
        headers["x-ratelimit-reset"] = str(reset)
    return headers


def _retry_after(exc: BudgetExceeded, horizon: int, reset: int | None, now: Any) -> int | None:
    """Seconds to wait before this call can be admitted, when a retry is worth it (a 429), else
    None (a 402).

    A rolling window: the call fits once enough earlier spend stops counting
    (:attr:`BudgetExceeded.retry_at`, rounded up to whole seconds); it is always a 429 when the
    window is no longer than the retry horizon plus one bucket (right after a burst the oldest
    spend may count for the window plus a bucket), else when it fits within the horizon; never
    when the call is too big for the budget by itself. Other windows: a 429 when the window
    resets within the horizon, with ``retry-after`` its reset.
    """
    window = Window.parse(exc.window) if exc.window else None
    if window is not None and window.rolling:
        if exc.retry_at is None or window.duration is None:
            return None
        wait = max(1, _seconds_until(exc.retry_at, now) or 0)
        if window.duration <= timedelta(seconds=horizon) + window.bucket or wait <= horizon:
            return wait
        return None
    if reset is not None and reset <= horizon:
        return max(1, reset)
    return None


def _denial(exc: BudgetExceeded | UnpricedCall, config: GatewayConfig, now: Any) -> GatewayError:
    if isinstance(exc, UnpricedCall):
        return GatewayError(
            config.denial_status,
            str(exc),
            type="budget_exceeded",
            code="unpriced_model",
            extra={"budget": {"budget": exc.budget, "model": exc.model}},
        )
    headers = {
        "x-tokenward-budget": exc.budget,
        "x-tokenward-budget-meter": exc.meter,
        "x-ratelimit-limit": plain(exc.limit),
        "x-ratelimit-remaining": plain(exc.remaining),
    }
    status = config.denial_status
    reset = _seconds_until(exc.reset_at, now)
    if reset is not None:
        headers["x-ratelimit-reset"] = str(reset)
    retry = _retry_after(exc, config.retry_horizon_seconds, reset, now)
    if retry is not None:
        status = 429  # it will fit soon: worth retrying (the official clients retry a 429, not a 402)
        headers["retry-after"] = str(retry)
    return GatewayError(
        status,
        str(exc),
        type="budget_exceeded",
        code="budget_exceeded",
        extra={"budget": exc.to_dict()},
        headers=headers,
    )


async def proxy(request: Request, endpoint: Endpoint, state: GatewayState) -> Response:
    """Handle one call to ``endpoint``; every failure becomes an answer in the dialect's shape."""
    request_id = new_id("req")  # never the client's own id: it is the ledger's idempotency key
    try:
        response = await _answer(request, endpoint, state, request_id)
    except BaseException:
        await settle_now(request.scope)  # no answer will be sent: settle what was deferred now
        raise
    # a stream is priced as it ends, after this returns: every answer settles what was deferred
    return SettleAfter(response)  # type: ignore[return-value]


async def _answer(request: Request, endpoint: Endpoint, state: GatewayState, request_id: str) -> Response:
    own = own_headers(request_id, state.version)
    try:
        return await _proxy(request, endpoint, state, request_id)
    except GatewayError as exc:
        return error_response(endpoint.error_shape or endpoint.dialect, exc, own)
    except (BudgetExceeded, UnpricedCall) as exc:
        denial = _denial(exc, state.config, state.guard.ledger.clock.now())
        fields = {"request_id": request_id, "status": "denied", "http_status": denial.status, **denial.extra}
        log.info("%s denied: %s", request_id, exc, extra={"fields": fields})
        return error_response(endpoint.error_shape or endpoint.dialect, denial, own)
    except ValidationError as exc:  # a value the ledger cannot keep (its subject), unknown stored context
        return error_response(
            endpoint.error_shape or endpoint.dialect, GatewayError(400, str(exc), param=exc.field), own
        )
    except LedgerError as exc:
        _log_unavailable(exc)
        error = GatewayError(
            503,
            "the budget ledger is unavailable; the call was not made",
            type="api_error",
            code="ledger_unavailable",
        )
        return error_response(endpoint.error_shape or endpoint.dialect, error, own)


_outage_log = Throttle()


def _log_unavailable(exc: LedgerError) -> None:
    """Log a call refused because the ledger failed: an outage of a service-backed store
    (:class:`StoreUnavailable`) at most once a minute, with how many refusals were not logged
    (the ledger alerts the outage itself); any other ledger failure every time."""
    held = _outage_log.due() if isinstance(exc, StoreUnavailable) else 0
    if held is not None:
        log.error(
            "ledger unavailable: %s%s", exc, f" ({held} more refusals since the last line)" if held else ""
        )


async def _body(request: Request, endpoint: Endpoint, config: GatewayConfig) -> PreparedCall:
    raw = await request.body()

    def model_of(name: str) -> str:
        """The model a call naming ``name`` is estimated as: an Azure deployment's model (so its
        tokenizer is known before the first estimate), else ``name``."""
        upstream = config.upstream_for(endpoint.family, name)
        return upstream.served_model(name) if upstream is not None else name

    try:
        if "target" in request.path_params and endpoint.family == "anthropic":  # Claude on Vertex AI
            return prepare_body(endpoint, _vertex_claude(load_body(raw), request.path_params["target"]))
        if "target" in request.path_params:  # Gemini: the model and streaming are in the URL
            body = load_body(raw)
            target = request.path_params.get("target", "")
            model, _, method = target.rpartition(":")
            if method not in ("generateContent", "streamGenerateContent") or not model:
                raise GatewayError(404, f"unknown Gemini method {target!r}", code="not_found")
            stream = method == "streamGenerateContent"
            if stream and request.query_params.get("alt") != "sse":
                raise GatewayError(400, "streamGenerateContent is served as server-sent events: add ?alt=sse")
            if isinstance(body, dict):
                body = {**body, "model": model, "stream": stream}
            return prepare_body(endpoint, body)
        if "model_id" in request.path_params:  # Bedrock: the model and streaming are in the URL
            body = load_body(raw)
            if isinstance(body, dict):
                stream = request.url.path.endswith(("-stream", "/invoke-with-response-stream"))
                body = {**body, "model": request.path_params["model_id"], "stream": stream}
            return prepare_body(endpoint, body)
        if "deployment" in request.path_params:  # Azure's deployments surface: the model is in the URL
            body = load_body(raw)
            if isinstance(body, dict):
                body = {**body, "model": request.path_params["deployment"]}
            return prepare_body(endpoint, body, model_of)
        content_type = request.headers.get("content-type")
        if len(raw) > _LARGE_BODY or (content_type and content_type.lower().startswith("multipart/")):
            # uploads and large bodies are parsed and estimated off the event loop: tiktoken takes
            # seconds on pathological text (20 MB of one character: about 33 s), and would stall
            # every other call of this worker meanwhile (it releases the GIL while it counts)
            return await anyio.to_thread.run_sync(prepare, endpoint, raw, content_type, model_of)
        return prepare(endpoint, raw, content_type, model_of)
    except ValidationError as exc:
        raise GatewayError(400, str(exc), param=exc.field) from None
    except ValueError:
        raise GatewayError(400, "the request body is not valid JSON", param="body") from None


def _vertex_claude(body: Any, target: str) -> Any:
    """A Vertex ``rawPredict``/``streamRawPredict`` body as the Messages API reads it: the model
    and streaming from the URL, without Vertex's ``anthropic_version`` (an upstream of another
    kind would refuse it; a Vertex upstream writes it back).

    Raises:
        GatewayError: 404 for a method that is not one of the two.
    """
    model, _, method = target.rpartition(":")
    if method not in ("rawPredict", "streamRawPredict") or not model:
        raise GatewayError(404, f"unknown Vertex AI method {target!r}", code="not_found")
    if not isinstance(body, dict):
        return body
    out = {k: v for k, v in body.items() if k != "anthropic_version"}
    return {**out, "model": model, "stream": method == "streamRawPredict"}


async def _proxy(request: Request, endpoint: Endpoint, state: GatewayState, request_id: str) -> Response:
    config = state.config
    if signed_with_sigv4(request.headers):  # boto3: the key's name as access key, its SigV4 secret
        raw = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string") or b""
        url = f"{request.url.scheme}://{request.headers.get('host', '')}{raw.decode('latin-1')}"
        url += f"?{query.decode('latin-1')}" if query else ""
        key = authenticate_sigv4(request.method, url, request.headers, await request.body(), config)
    else:
        key = await authenticate_any(request.headers, config, state.guard.ledger, request.query_params)
    call = await _body(request, endpoint, config)
    holder, stored = await idempotency.begin(
        request, await request.body(), key, state.guard.ledger, request_id, config.idempotency_ttl_seconds
    )
    if stored is not None:  # a repeat of an answered request: its answer again, nothing called
        return stored
    if holder is None:
        return await _forward(request, endpoint, state, request_id, key, call)
    try:
        response = await _forward(request, endpoint, state, request_id, key, call)
    except BaseException:
        await holder.drop()
        raise
    return await holder.capture(response)


async def _forward(
    request: Request,
    endpoint: Endpoint,
    state: GatewayState,
    request_id: str,
    key: KeyConfig,
    call: PreparedCall,
) -> Response:
    config = state.config
    subject = subject_for(request.headers, key, call.body)
    await state.carried.apply(carried_budgets(request.headers, key, subject))
    attempts = config.attempts(endpoint.family, call.model)
    if not attempts:
        raise GatewayError(
            404,
            f"no upstream is configured for model {call.model!r} on {endpoint.path}",
            code="model_not_found",
            param="model",
        )
    end_user = body_user(call.body)
    failures: list[str] = []  # the attempts that failed so far, for the last one's error message
    for index, (model, upstream) in enumerate(attempts):
        await state.settlements.room()  # a ledger falling behind slows admissions (gateway.settling)
        attempt = call if model == call.model else prepare_body(endpoint, {**call.body, "model": model})
        served, degrade = upstream.served_model(model), config.degrade
        if served != model:  # an Azure deployment: held, priced and recorded as the model it runs
            attempt = prepare_body(endpoint, {**attempt.body, "model": served})
            runnable = {d.model for d in upstream.deployments}  # degrade only to a deployed model
            degrade = replace(degrade, models={k: v for k, v in degrade.models.items() if v in runnable})
        provider = upstream.pricing_provider(endpoint.family, model)
        # stored context the ledger does not know (ValidationError) is a 400 (:func:`proxy`)
        attempt, admission, changes = await state.guard.admit_call(
            subject,
            attempt,
            provider,
            request_id=request_id if index == 0 else f"{request_id}-{index + 1}",
            degrade=degrade,
            upstream=upstream.name,
            default_tier=upstream.service_tier,
        )
        target = model if attempt.model == served else upstream.deployment_of(attempt.model)
        state.opened()
        content, wants_usage = upstream_body(attempt, admission, upstream.provider)
        metadata: dict[str, Any] = {"upstream": upstream.name}
        if end_user is not None and replace(subject, user=end_user).namespaced().user != subject.user:
            metadata["end_user"] = end_user
        client_id = request.headers.get("x-request-id")
        if client_id:
            metadata["client_request_id"] = client_id[:200]
        if index:
            metadata["fallback_of"] = call.model
        if changes:
            metadata["degraded"] = changes
        last = index + 1 == len(attempts)
        if bounds(attempt, upstream.bound_non_streamed):  # read as a stream, stopped at the hold
            content, _ = upstream_body(streamed(attempt), admission, upstream.provider)
            exchange = _Exchange(state, streamed(attempt), upstream, admission, request, metadata, target)
            exchange.failures = failures
            answering = exchange.bounded(attempt, content, last)
        else:
            exchange = _Exchange(state, attempt, upstream, admission, request, metadata, target)
            exchange.failures = failures
            answering = (
                exchange.stream(content, wants_usage, last)
                if attempt.stream
                else exchange.json(content, last)
            )
        try:
            response = await answering
        except Exception:
            # an error no path above expected (a provider answer of a shape nothing reads): the
            # call reached the provider, so it is settled now, at its whole output bound (a no-op
            # when it was settled already), never left held until its reservation expires
            await exchange.interrupted()
            raise
        if response is not None:
            return response
        log.warning("upstream %s failed for %s; trying the next attempt", upstream.name, request_id)
    raise AssertionError("the last attempt always answers")  # pragma: no cover


class _Exchange:
    """One admitted attempt on its way upstream and back."""

    def __init__(
        self,
        state: GatewayState,
        call: PreparedCall,
        upstream: UpstreamConfig,
        admission: Admission,
        request: Request,
        metadata: dict[str, Any],
        target: str | None = None,
    ) -> None:
        self.state = state
        self.call = call
        self.upstream = upstream
        self.admission = admission
        self.request = request
        self.metadata = metadata
        self.headers = _upstream_headers(request.headers, upstream, call.endpoint.family)
        self.headers["content-type"] = upstream_content_type(call)  # JSON, or a multipart form
        # the model name the upstream knows the call by (an Azure deployment), when not the model
        self.target = target if target is not None and target != call.model else None
        if self.target is not None:
            metadata["deployment"] = self.target
        path = call.endpoint.upstream_path(call.body)
        self.url = upstream_url(
            upstream, call.endpoint.family, path, self.target or call.model, call.body.get("stream") is True
        )
        self.own = own_headers(admission.request_id, state.version)
        self.settled = False
        self.started = time.monotonic()
        self.failures: list[str] = []
        self.client = state.borrow(upstream)  # given back when the call settles

    async def _settle(self, outcome: Outcome) -> UsageEvent | None:
        if self.settled:
            return None
        self.settled = True
        outcome = replace(outcome, metadata={**self.metadata, **outcome.metadata})
        try:
            event = await self.state.guard.settle(self.admission, outcome)
        except Exception:  # never lose the caller's answer over a ledger write; the hold expires
            log.exception("could not settle request %s", self.admission.request_id)
            return None
        finally:
            self.state.closed()
            self.state.give_back(self.client)
        log_call(event, self.started)
        return event

    def _settle_after(self, outcome: Outcome) -> UsageEvent | None:
        """Price ``outcome`` now (the answer's headers are computed from it) and settle it once
        the answer has been sent (:mod:`tokenward.gateway.settling`); the hold counts meanwhile.
        Returns the event the settle will record (None: already settled, or it could not be
        priced, in which case it is settled now by :meth:`_settle` when the answer ends)."""
        if self.settled:
            return None
        self.settled = True
        outcome = replace(outcome, metadata={**self.metadata, **outcome.metadata})
        try:
            event: UsageEvent | None = self.state.guard.usage_event(self.admission, outcome)
        except Exception:  # settled without a priced event: guard.settle raises and logs the same
            event = None
        self.state.settlements.waiting()

        async def settle(ended: float) -> None:
            stored = None
            try:
                stored = await self.state.guard.settle(self.admission, outcome, event=event)
            except Exception:  # never lose the caller's answer over a ledger write; the hold expires
                log.exception("could not settle request %s", self.admission.request_id)
            finally:
                self.state.closed()
                self.state.give_back(self.client)
                self.state.settlements.settled(ended)
            if stored is not None:  # None: logged above (log_call(None) raised out of the settle)
                log_call(stored, self.started)

        defer(self.request.scope, settle)
        return event

    def _headers(self, event: UsageEvent | None) -> dict[str, str]:
        now = self.state.guard.ledger.clock.now()
        return {**self.own, **_budget_headers(self.admission.decision, event, now)}

    async def _failed(self, exc: httpx.HTTPError, last: bool) -> Response | None:
        timed_out = isinstance(exc, httpx.TimeoutException)
        await self._settle(Outcome(None, status="upstream_error", metadata={"error": type(exc).__name__}))
        what = f"{'timed out' if timed_out else 'failed'}: {type(exc).__name__}"
        self.failures.append(f"{self.upstream.name!r} {what}")
        if not last:
            return None
        message = f"upstream {self.upstream.name!r} {what}"
        if len(self.failures) > 1:
            message = f"every upstream tried failed: {'; '.join(self.failures)}"
        error = GatewayError(
            504 if timed_out else 502,
            message,
            type="api_error",
            code="upstream_timeout" if timed_out else "upstream_error",
        )
        return error_response(
            self.call.endpoint.error_shape or self.call.endpoint.dialect, error, {**self.own, **self._named()}
        )

    def _named(self) -> dict[str, str]:
        """The header naming the upstream an error answer came from (or that failed)."""
        return {"x-tokenward-upstream": self.upstream.name}

    async def _error_status(self, response: httpx.Response, content: bytes, last: bool) -> Response | None:
        if self.upstream.provider == "azure" and content_filtered(response.status_code, content):
            # billed by Azure though it reports no usage (tokenward.guard.wire.azure)
            await self._settle(filtered_outcome(self.admission))
            return Response(
                content, 400, headers=_response_headers(response, {**self._headers(None), **self._named()})
            )
        await self._settle(
            Outcome(None, status="upstream_error", metadata={"http_status": response.status_code})
        )
        if not last and response.status_code in _RETRYABLE_STATUS:
            self.failures.append(f"{self.upstream.name!r} answered {response.status_code}")
            return None
        return Response(
            content,
            response.status_code,
            headers=_response_headers(response, {**self._headers(None), **self._named()}),
        )

    async def interrupted(self) -> None:
        """The call was cut short after admission (shutdown, a client gone before the answer, an
        unexpected error): settle it from what is known, charging the full output bound since the
        upstream may have generated all of it."""
        with anyio.CancelScope(shield=True):
            await self._settle(
                Outcome(
                    None, self.admission.max_output_tokens, "client_aborted", metadata={"interrupted": True}
                )
            )

    async def _open(self, content: bytes, last: bool) -> httpx.Response | Response | None:
        """Send the call upstream and return its answer with the body still to read; or, when
        sending failed, the answer for the client (None: the next attempt may fix it)."""
        if self.headers.get("content-type") == "application/json":
            content = upstream_content(self.upstream, self.call.endpoint.family, content, self.target)
        try:
            request = self.client.build_request("POST", self.url, content=content, headers=self.headers)
            return await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            return await self._failed(exc, last)
        except BaseException:
            await self.interrupted()
            raise

    async def json(self, content: bytes, last: bool) -> Response | None:
        """A non-streamed call forwarded as it is (``bound_non_streamed: trust``, embeddings):
        forward, read the usage (or count the text), settle, answer. None when it failed in a way
        the next attempt may fix."""
        response = await self._open(content, last)
        if not isinstance(response, httpx.Response):
            return response
        return await self._whole(response, self.call, last)

    async def _whole(self, response: httpx.Response, call: PreparedCall, last: bool) -> Response | None:
        """Read a whole answer, settle it, pass it on. One that breaks off after its status line
        is charged the whole output bound: it was generated, and what it held cannot be read."""
        try:
            body = await response.aread()
        except httpx.HTTPError as exc:
            return await self._broken_body(response, exc)
        except BaseException:
            await self.interrupted()
            raise
        finally:
            await response.aclose()
        if response.status_code >= 400:
            return await self._error_status(response, body, last)
        event = self._settle_after(
            json_outcome(
                call.endpoint,
                body,
                call.estimate.encoding,
                body=call.body,
                content_type=response.headers.get("content-type"),
            )
        )
        return Response(body, response.status_code, headers=_response_headers(response, self._headers(event)))

    async def _broken_body(self, response: httpx.Response, exc: httpx.HTTPError) -> Response:
        """The upstream's answer broke off mid-body: charge what it may have generated (the
        output bound; the error status of a failed call stays a known zero) and answer 502."""
        if response.status_code >= 400:
            await self._settle(
                Outcome(None, status="upstream_error", metadata={"http_status": response.status_code})
            )
        else:
            await self._settle(
                Outcome(
                    None,
                    self.admission.max_output_tokens,
                    "stream_broken",
                    metadata={"cost_basis": "held_output", "error": type(exc).__name__},
                )
            )
        error = GatewayError(
            502,
            f"upstream {self.upstream.name!r} broke off its answer: {type(exc).__name__}",
            type="api_error",
            code="upstream_broken",
        )
        return error_response(self.call.endpoint.error_shape or self.call.endpoint.dialect, error, self.own)

    async def bounded(self, call: PreparedCall, content: bytes, last: bool) -> Response | None:
        """A non-streamed call read from the upstream as a stream, stopped at its hold, and
        answered as the JSON the provider would have sent (:mod:`tokenward.guard.wire.bounded`).
        An upstream that answers JSON all the same is taken as :meth:`json` takes it."""
        response = await self._open(content, last)
        if not isinstance(response, httpx.Response):
            return response
        if response.status_code >= 400 or not response.headers.get("content-type", "").startswith(
            call.endpoint.stream_media_type
        ):
            return await self._whole(response, call, last)
        answer = BoundedAnswer(call, self.admission)
        upstream = _UpstreamReader(response)
        try:
            try:
                while True:
                    chunk = await upstream.next()
                    if chunk is None:
                        answer.upstream_ended()
                        break
                    answer.feed(chunk)
                    # a finished answer is read to its end (the chunked terminator), so its
                    # connection goes back to the pool instead of being closed: closing it cost a
                    # new TCP connection per call (issue 17)
                    if answer.done and answer.relay.status != "ok":
                        break
            except httpx.HTTPError as exc:
                log.warning("upstream answer of %s broke: %s", self.admission.request_id, exc)
                answer.upstream_failed(type(exc).__name__)
        except BaseException:
            answer.client_gone()
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.close(answer.received_after)
            event = self._settle_after(answer.outcome())
        data, error = answer.answer()
        if data is None:
            failure = GatewayError(
                502, f"upstream {self.upstream.name!r}: {error}", type="api_error", code="upstream_broken"
            )
            return error_response(
                call.endpoint.error_shape or call.endpoint.dialect, failure, self._headers(event)
            )
        headers = _response_headers(response, self._headers(event))
        headers.pop("cache-control", None)
        headers["content-type"] = "application/json"
        return Response(json.dumps(data).encode(), 200, headers=headers)

    async def stream(self, content: bytes, wants_usage: bool, last: bool) -> Response | None:
        """A streamed call: relay events, count output, cut off at the bound, settle once."""
        response = await self._open(content, last)
        if not isinstance(response, httpx.Response):
            return response
        if response.status_code >= 400 or response.headers.get("content-type", "").startswith(
            "application/json"
        ):
            # an error, or one JSON object answering a stream request: read whole and passed on
            # as such; a body that breaks off is settled as :meth:`_whole` settles it (it was an
            # unhandled error: a bare 500, the call never settled, its hold left to expire)
            return await self._whole(response, self.call, last)
        headers = _response_headers(response, self._headers(None))
        headers["cache-control"] = "no-cache"
        relay = StreamRelay(self.call, self.admission, wants_usage)
        media = self.call.endpoint.stream_media_type
        return _SettledStream(self._pump(response, relay), headers=headers, media_type=media)

    async def _pump(self, response: httpx.Response, relay: StreamRelay) -> AsyncIterator[bytes]:
        """Pass the upstream's bytes through the relay; the call is priced when the upstream's
        stream ends and settled once the answer's last byte is sent (:meth:`_settle_after`).

        The upstream is read by a task of its own into a small queue, so a client that goes away
        (which cancels this generator) does not cut the upstream read: for the grace period the
        gateway keeps reading, so the real usage can still arrive, then settles with what is known.
        """
        upstream = _UpstreamReader(response)
        try:
            try:
                while True:
                    chunk = await upstream.next()
                    if chunk is None:
                        for data in relay.upstream_ended():
                            yield data
                        break
                    for data in relay.feed(chunk):
                        yield data
                    if (
                        relay.done and relay.status != "ok"
                    ):  # a finished stream is read to its end (connection reuse)
                        break
            except httpx.HTTPError as exc:
                log.warning("upstream stream of %s broke: %s", self.admission.request_id, exc)
                relay.upstream_failed(type(exc).__name__)
        except (asyncio.CancelledError, GeneratorExit):
            relay.client_gone()
            with anyio.CancelScope(shield=True):
                await self._grace(upstream, relay)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.close(relay.received_after)
            self._settle_after(relay.outcome())
        for data in relay.tail:
            yield data

    async def _grace(self, upstream: _UpstreamReader, relay: StreamRelay) -> None:
        grace = self.state.config.disconnect_grace_seconds
        if grace <= 0:
            return
        with anyio.move_on_after(grace):
            try:
                while (chunk := await upstream.next()) is not None:
                    if relay.observe(chunk):
                        return
            except httpx.HTTPError:
                return


class _UpstreamReader:
    """Reads an upstream response body one chunk at a time, on demand, in a task of its own.

    Nothing is read ahead of what the relay asked for, so an upstream that generates as it is
    read has generated only what the relay took (and is charged for). A caller cancelled while it
    waits (a client gone) does not cut the read short: the chunk it waited for is handed to the
    next :meth:`next`, and :meth:`close` returns one that was read but never taken.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._want = asyncio.Event()
        self._asked = False
        self._got: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(1)
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        chunks = self.response.aiter_bytes()
        try:
            while True:
                await self._want.wait()
                self._want.clear()
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    await self._got.put(None)
                    return
                await self._got.put(chunk)
        except httpx.HTTPError as exc:
            await self._got.put(exc)

    async def next(self) -> bytes | None:
        """The next chunk, or None at the end.

        Raises:
            httpx.HTTPError: reading the upstream failed.
        """
        if not self._asked:
            self._asked = True
            self._want.set()
        item = await self._got.get()
        self._asked = False
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self, received: Callable[[bytes], None]) -> None:
        """Stop reading and close the upstream response; a chunk that was read but never taken
        was received all the same: it is handed to ``received`` (to be counted)."""
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if not self._got.empty():
            item = self._got.get_nowait()
            if isinstance(item, bytes) and item:
                received(item)
        await self.response.aclose()


async def passthrough(
    request: Request, family: str, path: str, state: GatewayState, *, record: bool = False
) -> Response:
    """Forward an uncharged request (token counting, the model list, a Gemini cache's reads) to
    the family's first upstream, after checking the caller's key. With ``record``, a successful
    answer that made or grew an OpenAI conversation is recorded (:func:`_record_conversation`)."""
    dialect = {"anthropic": "anthropic-messages", "gemini": "gemini"}.get(family, "openai-chat")
    own = own_headers(new_id("req"), state.version)
    try:
        key = await authenticate_any(request.headers, state.config, state.guard.ledger, request.query_params)
        upstream = next((u for u in state.config.upstreams if family in PROVIDERS[u.provider].families), None)
        if upstream is None:
            raise GatewayError(404, f"no {family} upstream is configured", code="not_found")
        own = {**own, "x-tokenward-upstream": upstream.name}
        headers = _upstream_headers(request.headers, upstream, family)
        url = upstream.url(family, path)
        if "{" in path:  # a path with parameters (a cached content's or a conversation's id)
            url = upstream.url(family, request.url.path.removeprefix("/v1" if family == "openai" else ""))
        content = None if request.method in ("GET", "DELETE") else await request.body()
        client = state.borrow(upstream)
        try:
            response = await client.request(request.method, url, content=content, headers=headers)
        finally:
            state.give_back(client)
    except GatewayError as exc:
        return error_response(dialect, exc, own)
    except httpx.HTTPError as exc:
        name = own.get("x-tokenward-upstream", "?")
        error = GatewayError(
            502, f"upstream {name!r} failed: {type(exc).__name__}", type="api_error", code="upstream_error"
        )
        return error_response(dialect, error, own)
    if record and response.is_success:
        await _record_conversation(request, key, response, state)
    return Response(response.content, response.status_code, headers=_response_headers(response, own))


async def _record_conversation(
    request: Request, key: Any, response: httpx.Response, state: GatewayState
) -> None:
    """Record a conversation made or grown through the gateway, so calls adding to it are held
    for its items (:meth:`~tokenward.guard.AsyncGuard.record_conversation`); a failure is
    logged, never the caller's problem."""
    import json

    try:
        sent, answered = json.loads(await request.body() or b"{}"), response.json()
    except ValueError:
        return
    growth = conversation_growth(request.url.path, sent, answered)
    if growth is None:
        return
    try:
        await state.guard.record_conversation(subject_for(request.headers, key, {}), *growth)
    except Exception:
        log.exception("could not record conversation %s", growth[0])


class _SettledStream(StreamingResponse):
    """A streaming response whose body iterator is always closed (and so settled), also when the
    client goes away between two events."""

    def __init__(self, body: AsyncIterator[bytes], *, headers: Mapping[str, str], media_type: str) -> None:
        super().__init__(body, status_code=200, headers=dict(headers), media_type=media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        iterator = self.body_iterator  # as set, or wrapped since (tokenward.gateway.idempotency)
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
