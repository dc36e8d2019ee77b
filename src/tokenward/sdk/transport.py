"""Guarded HTTP transports: where a wrapped ``openai``/``anthropic`` client's calls are enforced.

Both SDKs send every API call through an ``httpx`` (or ``httpx2``) transport. tokenward puts its
own transport in front of the client's: calls to usage-producing endpoints are estimated,
admitted (or refused with :class:`~tokenward.errors.BudgetExceeded`), sent with the clamped output
bound, relayed (streams are cut off cleanly at the hold) and settled; every other request passes
through untouched. One transport class serves both ``httpx`` generations, built per module.

When the client's base URL is a tokenward gateway (its answers carry ``x-tokenward-gateway``),
the transport sends the attribution as ``x-tokenward-*`` headers and leaves enforcement and
charging to the gateway, so a call is never charged twice; a gateway's budget denial is raised as
:class:`~tokenward.errors.BudgetExceeded` like a local one.

The budgets of the session and task in force (``guard.session(..., budget=...)``) go with every
call as ``x-tokenward-session-budget`` / ``x-tokenward-task-budget`` (short forms, comma
separated), so a gateway enforces them for the session (:mod:`tokenward.gateway.carried`). The
headers are sent from the first call on, since which host is a gateway is learnt from its answer;
a provider ignores them. A gateway whose key may not carry budgets refuses the call before
forwarding it (400 ``client_budgets_forbidden``), raised here as
:class:`~tokenward.errors.ConfigError`: a session's budget never silently stops applying.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from tokenward.core.budgets import Subject
from tokenward.errors import BudgetExceeded, ConfigError, ContextTooLarge, UnmeteredCall, ValidationError
from tokenward.guard import Admission, Outcome
from tokenward.guard.context import conversation_growth
from tokenward.guard.wire.azure import content_filtered, filtered_outcome, renamed
from tokenward.guard.wire.bounded import BoundedAnswer, bounds, streamed
from tokenward.guard.wire.degrade import Degrade
from tokenward.guard.wire.endpoints import (
    AnthropicMessages,
    Endpoint,
    OpenAIChat,
    OpenAICompletions,
    OpenAIEmbeddings,
    OpenAIImageEdits,
    OpenAIImages,
    OpenAIResponses,
    OpenAISpeech,
    OpenAITranscriptions,
)
from tokenward.guard.wire.exchange import (
    PreparedCall,
    StreamRelay,
    json_outcome,
    prepare,
    prepare_body,
    upstream_body,
    upstream_content_type,
)
from tokenward.sdk.addressed import Addressed, addressed
from tokenward.sdk.context import current
from tokenward.sdk.fit import FORMATS, fit_messages

__all__ = ["GatewayMemory", "RelayedChunks", "TransportSettings", "endpoint_for", "transport_classes"]

log = logging.getLogger("tokenward.sdk")

# Path suffixes, most specific first: "/chat/completions" must win over "/completions".
_ENDPOINTS: tuple[tuple[str, Endpoint], ...] = (
    ("/chat/completions", OpenAIChat()),
    ("/responses", OpenAIResponses()),
    ("/completions", OpenAICompletions()),
    ("/embeddings", OpenAIEmbeddings()),
    ("/images/generations", OpenAIImages()),
    ("/images/edits", OpenAIImageEdits()),
    ("/audio/transcriptions", OpenAITranscriptions()),
    ("/audio/speech", OpenAISpeech()),
    ("/messages", AnthropicMessages()),
)
_MEDIA_DIALECTS = {"openai-images", "openai-transcription", "openai-speech"}
"""Endpoints whose requests are refused when tokenward cannot read them (an audio file whose
duration is unreadable): their price could not be held, and letting them through unguarded
would leave them uncharged."""
_UNMETERED = re.compile(
    r"/(?:audio/translations|images/variations|responses/compact|videos(?:/[^/]+/remix)?"
    r"|threads(?:/[^/]+)?/runs(?:/[^/]+/submit_tool_outputs)?|batches|fine_tuning/jobs"
    r"|messages/batches"
    r"|models/[^/:]+:(?:batchGenerateContent|embedContent|batchEmbedContents|asyncBatchEmbedContent"
    r"|predict|predictLongRunning))$"
)
"""POST paths (suffixes) a provider bills that tokenward does not meter, from the ``openai``,
``anthropic`` and ``google-genai`` packages' resources: audio translations, image variations,
Responses compaction, videos and their remixes, Assistants runs, batches, fine-tuning jobs,
Anthropic message batches; Gemini and Vertex AI batches, embeddings, and the ``:predict`` and
``:predictLongRunning`` methods (Imagen images, Veo videos, Vertex embeddings).
A wrapped client refuses them (:class:`~tokenward.errors.UnmeteredCall`) unless wrapped with
``unmetered="allow"``: passing them on untouched would leave them uncharged under every budget."""
_THREAD_MESSAGES = re.compile(r"/threads/[^/]+/messages$")
"""OpenAI Assistants' ``POST /threads/{id}/messages`` (adding a message, not billed), which ends
like Anthropic's ``/messages``."""
_KNOWN_HOSTS = {"api.openai.com": "openai", "api.anthropic.com": "anthropic"}
_AZURE_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")
_DROP_RESPONSE_HEADERS = {"content-length", "content-encoding", "transfer-encoding"}


def unmetered(method: str, path: str) -> bool:
    """Whether a request is a billed call tokenward cannot meter (:data:`_UNMETERED`)."""
    return method.upper() == "POST" and _UNMETERED.search(path.rstrip("/")) is not None


def endpoint_for(method: str, path: str) -> Endpoint | None:
    """The guarded endpoint a request goes to, or None for anything else."""
    if method.upper() != "POST":
        return None
    path = path.rstrip("/")
    if _THREAD_MESSAGES.search(path):  # an Assistants thread's message, not Anthropic's Messages
        return None
    found = next((endpoint for suffix, endpoint in _ENDPOINTS if path.endswith(suffix)), None)
    if found is None and (route := addressed(method, path)) is not None:
        return route.endpoint  # Gemini, Claude on Vertex AI: the model is in the URL
    return found


@dataclass
class GatewayMemory:
    """Which servers (``host:port``) turned out to be tokenward gateways (told by the
    ``x-tokenward-gateway`` header), so calls to them are charged by the gateway alone. Keyed by
    host and port: a gateway on ``localhost:8787`` says nothing about a provider on
    ``localhost:8000``."""

    hosts: set[str] = field(default_factory=set)

    @staticmethod
    def key(url: Any) -> str:
        """The ``host:port`` a request URL goes to (the scheme's default port when none)."""
        port = url.port or (443 if url.scheme == "https" else 80)
        return f"{url.host}:{port}"


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """What a guarded transport needs besides the guard.

    Attributes:
        degrade: the degrade policy, or None.
        provider: the provider kind for price lookups (``openai``, ``anthropic``); by default
            taken from the host (``api.openai.com``...).
        raise_as: wraps a tokenward error in the SDK's own error type, so the SDK passes it to the
            caller unchanged (see :mod:`tokenward.sdk.clients`).
        subject: whom the call in progress is charged to (the attribution context over the
            guard's defaults).
        check: called before each guarded call (the guard's watch for unattributed calls); may
            raise a tokenward error, passed to the caller like a denial.
        bound_non_streamed: ``stream`` (default): a call the client did not stream is read from
            the provider as a stream, stopped at its hold, and answered as JSON; ``trust``: it is
            sent as it is (:mod:`tokenward.guard.wire.bounded`).
        deployments: Azure deployment names mapped to (model, price multiplier or None).
        resign: signs a guarded request again after tokenward rewrote its body (the client's own
            request signer: ``AnthropicBedrock._prepare_request``, sync or async), or None.
    """

    degrade: Degrade | None = None
    provider: str | None = None
    raise_as: Callable[[Exception], Exception] = field(default=lambda exc: exc)
    subject: Callable[[], Subject] = field(default=lambda: current().subject)
    check: Callable[[], None] = field(default=lambda: None)
    bound_non_streamed: str = "stream"
    carried: Callable[[], Mapping[str, tuple[str, ...]]] = field(default=lambda: current().budgets)
    """The budgets of the session and task in force, as short forms by scope (sent to gateways)."""
    deployments: Mapping[str, tuple[str, Decimal | None]] = field(default_factory=dict)
    resign: Callable[[Any], Any] | None = None
    unmetered: str = "deny"
    """``deny``: a billed call tokenward cannot meter is refused (:func:`unmetered`); ``allow``:
    it is made, uncharged."""


def _provider(settings: TransportSettings, host: str, endpoint: Endpoint) -> str:
    if settings.provider:
        return settings.provider
    if host.endswith(_AZURE_HOSTS):
        return "azure"
    return _KNOWN_HOSTS.get(
        host, "anthropic" if endpoint.dialect == "anthropic-messages" else "openai-compatible"
    )


def _deployed(
    settings: TransportSettings, call: PreparedCall, provider: str
) -> tuple[PreparedCall, str | None, str, Degrade | None]:
    """An Azure call naming a deployment, held and priced as the model the deployment runs:
    (the call as admitted, the deployment name or None, the price provider id, the degrade policy
    without model swaps, which would price a model the deployment does not run)."""
    found = settings.deployments.get(call.model)
    if found is None:
        return call, None, provider, settings.degrade
    model, multiplier = found
    priced = prepare_body(call.endpoint, {**call.body, "model": model})
    provider = f"azure:{call.model}" if multiplier is not None else "azure"
    degrade = replace(settings.degrade, models={}) if settings.degrade is not None else None
    return priced, call.model, provider, degrade


def _attribution_headers(
    subject: Subject, carried: Mapping[str, tuple[str, ...]] | None = None
) -> dict[str, str]:
    """The ``x-tokenward-*`` headers a gateway reads the attribution from, and the budgets the
    session and task carry (``x-tokenward-session-budget: total_tokens=30000``)."""
    headers = {
        f"x-tokenward-{scope}": value
        for scope in ("session", "agent", "task")
        if (value := subject.value(scope))
    }
    if subject.user:
        headers["x-tokenward-user"] = subject.user
    for scope, specs in (carried or {}).items():
        if specs and subject.value(scope):
            headers[f"x-tokenward-{scope}-budget"] = ", ".join(specs)
    return headers


def _upstream_headers(
    call: PreparedCall, subject: Subject, carried: Mapping[str, tuple[str, ...]] | None = None
) -> dict[str, str]:
    """The headers a guarded call adds: the attribution, and the body's content type (a form
    written again with a changed model keeps its boundary, but say it all the same)."""
    return {**_attribution_headers(subject, carried), "content-type": upstream_content_type(call)}


_REFUSALS = ("client_budgets_forbidden", "carried_budget_conflict")
"""Error codes of a gateway refusing the budgets a call carries."""


def _gateway_refusal(status: int, content: bytes) -> ConfigError | None:
    """A gateway's 400 refusing the session's or task's budgets, as the error it stands for."""
    if status != 400:
        return None
    try:
        error = json.loads(content).get("error") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict) or error.get("code") not in _REFUSALS:
        return None
    return ConfigError(
        f"the tokenward gateway refused this call (nothing was sent to the provider): {error.get('message')}"
    )


def _gateway_denial(status: int, content: bytes) -> BudgetExceeded | None:
    """A gateway's 402/429 budget answer as the exception it stands for."""
    if status not in (402, 429):
        return None
    try:
        error = json.loads(content).get("error") or {}
    except (ValueError, AttributeError):
        return None
    fields = error.get("budget") if isinstance(error, dict) else None
    if not isinstance(fields, dict) or "limit" not in fields:
        return None
    from datetime import datetime

    def instant(name: str) -> datetime | None:
        value = fields.get(name)
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None

    return BudgetExceeded(
        budget=str(fields.get("budget")),
        scope=str(fields.get("scope")),
        subject_id=fields.get("subject_id"),
        meter=str(fields.get("meter")),
        limit=Decimal(str(fields["limit"])),
        used=Decimal(str(fields.get("used", 0))),
        held=Decimal(str(fields.get("held", 0))),
        requested=Decimal(str(fields.get("requested", 0))),
        reset_at=instant("reset_at"),
        retry_at=instant("retry_at"),
    )


def _annotated(content: bytes, admission: Admission, extra: dict[str, Any]) -> bytes:
    """A JSON answer with a ``tokenward`` field when a budget clamped or degraded the call, so the
    SDK's result object says so (``completion.tokenward``)."""
    clamped = admission.decision.clamped_by
    if not clamped and not extra:
        return content
    try:
        data = json.loads(content)
    except ValueError:
        return content
    if not isinstance(data, dict):
        return content
    note: dict[str, Any] = dict(extra)
    if clamped:
        note |= {"clamped_by": clamped, "max_output_tokens": admission.decision.output_tokens}
    data["tokenward"] = note
    return json.dumps(data).encode()


def _answered(call: PreparedCall, response: Any, content: bytes) -> Outcome:
    """What a whole (not streamed) answer reports, read by the call's endpoint."""
    return json_outcome(
        call.endpoint,
        content,
        call.estimate.encoding,
        body=call.body,
        content_type=response.headers.get("content-type"),
    )


def _bounded_json(answer: BoundedAnswer, admission: Admission, extra: dict[str, Any]) -> bytes | None:
    """The JSON answer of a bounded call (annotated as :func:`_annotated` does), or None when the
    upstream's answer broke off."""
    data, _ = answer.answer()
    if data is None:
        return None
    return _annotated(json.dumps(data).encode(), admission, extra)


def _streamed_back(call: PreparedCall, response: Any) -> bool:
    """Whether the upstream answered as the endpoint streams (SSE, or Bedrock's event stream)."""
    return str(response.headers.get("content-type", "")).startswith(call.endpoint.stream_media_type)


def _conversation_call(request: Any, response: Any) -> bool:
    """Whether a request is a successful ``POST`` that made or grew an OpenAI conversation (not
    through a gateway, which records it itself)."""
    if request.method != "POST" or response.status_code >= 300 or "x-tokenward-gateway" in response.headers:
        return False
    path = request.url.path.rstrip("/")
    return path.endswith("/conversations") or ("/conversations/" in path and path.endswith("/items"))


def _growth(request: Any, content: bytes) -> tuple[str, int, bool] | None:
    """What the conversation call did (:func:`~tokenward.guard.context.conversation_growth`)."""
    try:
        sent = json.loads(request.content or b"{}")
        answered = json.loads(content)
    except ValueError:
        return None
    return conversation_growth(request.url.path, sent, answered)


def _held_back() -> dict[str, Decimal] | None:
    """The final-answer reserve in force, unless the call is the final answer."""
    attribution = current()
    return None if attribution.final or not attribution.held_back else dict(attribution.held_back)


class RelayedChunks:
    """A guarded stream as its reader sees it (sync): the upstream's chunks passed through a
    :class:`StreamRelay`, the upstream closed and the call settled once however the reading ends
    (to the end, cut at the hold, an upstream read error of one of ``errors``, or the reader
    leaving). A stream cut at the hold stops reading the upstream; a finished one is read to its
    end, so its connection can be reused. Shared by the httpx transports and the boto3 hooks."""

    def __init__(
        self,
        chunks: Callable[[], Iterable[bytes]],
        close_upstream: Callable[[], None],
        relay: StreamRelay,
        settle: Callable[[Outcome], None],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self._chunks, self._close_upstream, self._errors = chunks, close_upstream, errors
        self.relay, self._settle = relay, settle
        self.settled = False

    def _finish(self) -> None:
        if not self.settled:
            self.settled = True
            self._close_upstream()
            self._settle(self.relay.outcome())

    def __iter__(self) -> Iterator[bytes]:
        relay = self.relay
        try:
            try:
                for chunk in self._chunks():
                    yield from relay.feed(chunk)
                    if relay.done and relay.status != "ok":
                        break
                else:
                    yield from relay.upstream_ended()
            except self._errors as exc:
                relay.upstream_failed(type(exc).__name__)
        except GeneratorExit:
            relay.client_gone()
            raise
        finally:
            self._finish()
        yield from relay.tail

    def close(self) -> None:
        """The reader leaves: the call is settled on what was relayed so far."""
        if not self.settled:
            self.relay.client_gone()
        self._finish()


def transport_classes(module: Any) -> tuple[type, type]:
    """(sync transport class, async transport class) for an ``httpx``-like module (``httpx`` or
    ``httpx2``), subclassing its ``BaseTransport`` / ``AsyncBaseTransport``."""

    class RelayedStream(RelayedChunks, module.SyncByteStream):  # type: ignore[misc,name-defined]
        """The client's view of a guarded stream: relayed bytes; settled once however it ends."""

        def __init__(self, response: Any, relay: StreamRelay, settle: Callable[[Outcome], None]) -> None:
            super().__init__(response.iter_bytes, response.close, relay, settle, (module.HTTPError,))

    class AsyncRelayedStream(module.AsyncByteStream):  # type: ignore[misc,name-defined]
        """The async twin of ``RelayedStream``."""

        def __init__(self, response: Any, relay: StreamRelay, settle: Callable[[Outcome], Any]) -> None:
            self.response, self.relay, self._settle = response, relay, settle
            self.settled = False

        async def _finish(self) -> None:
            if not self.settled:
                self.settled = True
                await self.response.aclose()
                await self._settle(self.relay.outcome())

        async def __aiter__(self) -> AsyncIterator[bytes]:
            relay = self.relay
            try:
                try:
                    async for chunk in self.response.aiter_bytes():
                        for data in relay.feed(chunk):
                            yield data
                        if (
                            relay.done and relay.status != "ok"
                        ):  # a finished stream is read to its end, so its connection is reused
                            break
                    else:
                        for data in relay.upstream_ended():
                            yield data
                except module.HTTPError as exc:
                    relay.upstream_failed(type(exc).__name__)
            except GeneratorExit:
                relay.client_gone()
                raise
            finally:
                await self._finish()
            for data in relay.tail:
                yield data

        async def aclose(self) -> None:
            if not self.settled:
                self.relay.client_gone()
            await self._finish()

    def rebuilt(
        request: Any,
        content: bytes | None = None,
        extra: dict[str, str] | None = None,
        route: Addressed | None = None,
        stream: bool = False,
    ) -> Any:
        replaced = {"content-length", *(k.lower() for k in (extra or {}))}
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in replaced]
        headers += list((extra or {}).items())
        url = request.url
        if route is not None:  # a URL-addressed call: the platform's body, the streaming method
            content = route.content(content, request.content) if content is not None else None
            url = url.copy_with(path=route.path(url.path, stream))
            if stream and not (route.vertex_claude or route.bedrock) and url.params.get("alt") != "sse":
                url = url.copy_merge_params({"alt": "sse"})
        return module.Request(
            request.method,
            url,
            headers=headers,
            content=request.content if content is None else content,
            extensions=request.extensions,
        )

    def answer(
        response: Any, *, content: bytes | None = None, stream: Any = None, json_body: bool = False
    ) -> Any:
        drop = _DROP_RESPONSE_HEADERS | ({"content-type", "cache-control"} if json_body else set())
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in drop]
        if json_body:
            headers.append(("content-type", "application/json"))
        if stream is not None:
            return module.Response(
                response.status_code, headers=headers, stream=stream, extensions=response.extensions
            )
        return module.Response(
            response.status_code, headers=headers, content=content, extensions=response.extensions
        )

    class Base:
        def __init__(
            self, inner: Any, guard: Any, settings: TransportSettings, gateways: GatewayMemory
        ) -> None:
            self.inner, self.guard, self.settings, self.gateways = inner, guard, settings, gateways

        def _model_of(self, name: str) -> str:
            """The model a call naming ``name`` is estimated as: an Azure deployment's model (its
            tokenizer known before the first estimate), else ``name``."""
            found = self.settings.deployments.get(name)
            return found[0] if found is not None else name

        def _prepare(self, request: Any) -> tuple[Endpoint, PreparedCall, Addressed | None] | None:
            endpoint = endpoint_for(request.method, request.url.path)
            if endpoint is None or GatewayMemory.key(request.url) in self.gateways.hosts:
                return None
            route = addressed(request.method, request.url.path.rstrip("/"))
            try:
                if route is not None:
                    return endpoint, prepare_body(endpoint, route.body(request.content)), route
                content_type = request.headers.get("content-type")
                return endpoint, prepare(endpoint, request.content, content_type, self._model_of), None
            except ValidationError as exc:
                # a batch record (``whole``) is never sent unguarded: the job's budget must hold
                if endpoint.dialect in _MEDIA_DIALECTS or current().whole:
                    raise self.settings.raise_as(exc) from None
                log.warning(
                    "not guarding a request tokenward cannot read (%s); the provider will judge it", exc
                )
                return None

        def _fit(self, request: Any) -> tuple[Any, dict[str, Any] | None]:
            """Fit the history of a call whose session an anomaly ``fit`` action named
            (:mod:`tokenward.observe.actions`): the request with the fitted messages, and what was
            done (recorded on the call's usage event as ``metadata.fitted``), or the request as it
            is and None."""
            endpoint = endpoint_for(request.method, request.url.path)
            if endpoint is None or endpoint.dialect not in FORMATS:
                return request, None
            session = self.settings.subject().session
            order = None
            if session:
                for observer in self.guard.observers.items:
                    take = getattr(observer, "fit_order", None)
                    if take is not None and (order := take(session)) is not None:
                        break
            if order is None:
                return request, None
            try:
                body = json.loads(request.content)
            except ValueError:
                return request, None
            key = "input" if endpoint.dialect == "openai-responses" else "messages"
            if not isinstance(body, dict) or not isinstance(body.get(key), list):
                return request, None
            note: dict[str, Any] = {
                "max_input_tokens": order["max_input_tokens"],
                "finding": order["finding"],
            }
            try:
                fitted = fit_messages(
                    body[key], model=str(body.get("model") or ""), bound=order["max_input_tokens"],
                    what="the anomaly fit action", fmt=endpoint.dialect, keep_last=order["keep_last"],
                    system=body.get("system") if endpoint.dialect == "anthropic-messages" else None,
                    tools=body.get("tools"),
                )  # fmt: skip
            except (ContextTooLarge, ValidationError) as exc:
                log.warning("could not fit session %s's history: %s", session, exc)
                return request, {**note, "failed": str(exc)}
            note |= {"dropped": fitted.dropped, "input_tokens": fitted.tokens}
            if not fitted.dropped:
                return request, note
            return rebuilt(request, json.dumps({**body, key: list(fitted)}).encode()), note

        def _check(self, request: Any) -> None:
            """The unattributed-call check for an LLM call sent on untouched (to a gateway, which
            charges it by the attribution headers); the refusal of a billed call tokenward cannot
            meter, sent anywhere but a gateway (which refuses it itself).

            Raises:
                UnmeteredCall: see :func:`unmetered` (in the SDK's own error type).
            """
            if (
                self.settings.unmetered != "allow"
                and unmetered(request.method, request.url.path)
                and GatewayMemory.key(request.url) not in self.gateways.hosts
            ):
                raise self.settings.raise_as(UnmeteredCall(request.method, request.url.path))
            if endpoint_for(request.method, request.url.path) is None:
                return
            try:
                self.settings.check()
            except Exception as exc:
                if type(exc).__module__.startswith("tokenward"):
                    raise self.settings.raise_as(exc) from None
                raise

        def _settle(self, admission: Admission, outcome: Outcome) -> None:
            """Settle a call that has been answered. A ledger failure here is logged, not raised:
            the caller has its answer (raising would invite a retry that pays twice) and the
            reservation stays held until it expires, so the budget is never under-counted."""
            try:
                self.guard.settle(admission, outcome)
            except Exception:
                log.exception("could not settle call %s; its reservation stays held", admission.request_id)

        async def _asettle(self, admission: Admission, outcome: Outcome) -> None:
            """The async twin of :meth:`_settle`."""
            try:
                await self.guard.settle(admission, outcome)
            except Exception:
                log.exception("could not settle call %s; its reservation stays held", admission.request_id)

        def _gateway_answer(self, request: Any, response: Any, content: bytes | None) -> Any:
            """Note a gateway host; raise its budget denial as ours."""
            if "x-tokenward-gateway" in response.headers:
                self.gateways.hosts.add(GatewayMemory.key(request.url))
            if content is not None and "x-tokenward-gateway" in response.headers:
                denial = _gateway_denial(response.status_code, content) or _gateway_refusal(
                    response.status_code, content
                )
                if denial is not None:
                    raise self.settings.raise_as(denial)

    class GuardedTransport(Base, module.BaseTransport):  # type: ignore[misc,name-defined]
        """A sync transport that enforces the guard's budgets on LLM API calls."""

        def handle_request(self, request: Any) -> Any:
            request.read()
            request, fitted = self._fit(request)
            prepared = self._prepare(request)
            if prepared is None:
                return self._passthrough(request)
            endpoint, call, route = prepared
            provider = (
                route.provider()
                if route is not None
                else _provider(self.settings, request.url.host, endpoint)
            )
            call, deployment, provider, degrade = _deployed(self.settings, call, provider)
            subject = self.settings.subject()
            try:
                self.settings.check()
                call, admission, changes = self.guard.admit_call(
                    subject,
                    call,
                    provider,
                    degrade=degrade,
                    held_back=_held_back(),
                    upstream=GatewayMemory.key(request.url),
                    whole=current().whole,
                )
            except Exception as exc:
                if type(exc).__module__.startswith("tokenward"):
                    raise self.settings.raise_as(exc) from None
                raise
            bounded = bounds(call, self.settings.bound_non_streamed)
            content, wants_usage = upstream_body(streamed(call) if bounded else call, admission, provider)
            extra = {"degraded": changes} if changes else {}
            if fitted is not None:
                extra["fitted"] = fitted
            if deployment is not None:
                extra["deployment"] = deployment
                if upstream_content_type(call) == "application/json":
                    content = renamed(content, deployment)
            try:
                outgoing = rebuilt(
                    request,
                    content,
                    _upstream_headers(call, subject, self.settings.carried()),
                    route,
                    bounded or call.stream,
                )
                if self.settings.resign is not None:
                    self.settings.resign(outgoing)
                response = self.inner.handle_request(outgoing)
            except BaseException:
                self._settle(admission, Outcome(None, status="upstream_error", metadata=extra))
                raise
            if bounded and response.status_code < 400 and _streamed_back(call, response):
                return self._bounded(request, call, admission, response, extra)
            return self._respond(request, call, admission, response, wants_usage, extra)

        def _bounded(
            self, request: Any, call: PreparedCall, admission: Admission, response: Any, extra: dict[str, Any]
        ) -> Any:
            """A non-streamed call read as a stream: stop at the hold, settle, answer JSON (from a
            tokenward gateway, which charges the call itself: release the hold instead)."""
            charged_here = "x-tokenward-gateway" not in response.headers
            if not charged_here:
                self.guard.release(admission)
                self._gateway_answer(request, response, None)
            bounded = BoundedAnswer(call, admission)
            try:
                try:
                    for chunk in response.iter_bytes():
                        bounded.feed(chunk)
                        if bounded.done:
                            break
                    else:
                        bounded.upstream_ended()
                except module.HTTPError as exc:
                    bounded.upstream_failed(type(exc).__name__)
            except BaseException:
                bounded.client_gone()
                raise
            finally:
                response.close()
                if charged_here:
                    outcome = bounded.outcome()
                    self._settle(admission, replace(outcome, metadata={**outcome.metadata, **extra}))
            content = _bounded_json(bounded, admission, extra)
            if content is None:
                raise module.RemoteProtocolError("the provider's answer broke off before it was complete")
            return answer(response, content=content, json_body=True)

        def _passthrough(self, request: Any) -> Any:
            self._check(request)
            headers = _attribution_headers(self.settings.subject(), self.settings.carried())
            response = self.inner.handle_request(rebuilt(request, None, headers))
            if "x-tokenward-gateway" in response.headers and response.status_code in (400, 402, 429):
                content = response.read()
                self._gateway_answer(request, response, content)
                return answer(response, content=content)
            self._gateway_answer(request, response, None)
            if not _conversation_call(request, response):
                return response
            content = response.read()
            if (found := _growth(request, content)) is not None:
                try:
                    self.guard.record_conversation(self.settings.subject(), *found)
                except Exception:
                    log.exception("could not record conversation %s", found[0])
            return answer(response, content=content)

        def _respond(
            self,
            request: Any,
            call: PreparedCall,
            admission: Admission,
            response: Any,
            wants_usage: bool,
            extra: dict[str, Any],
        ) -> Any:
            if "x-tokenward-gateway" in response.headers:
                self.guard.release(admission)  # the gateway charges this call
                content = response.read()
                self._gateway_answer(request, response, content)
                return answer(response, content=content)
            if response.status_code >= 400 or not call.stream:
                try:
                    content = response.read()
                except BaseException:  # the body broke off: what was sent is still owed
                    self._settle(admission, Outcome(None, status="upstream_error", metadata=extra))
                    raise
                if "deployment" in extra and content_filtered(response.status_code, content):
                    outcome = filtered_outcome(admission)  # Azure bills it (guard.wire.azure)
                    self._settle(admission, replace(outcome, metadata={**outcome.metadata, **extra}))
                    return answer(response, content=content)
                if response.status_code >= 400:
                    status = {"http_status": response.status_code, **extra}
                    self._settle(admission, Outcome(None, status="upstream_error", metadata=status))
                    return answer(response, content=content)
                outcome = _answered(call, response, content)
                self._settle(admission, replace(outcome, metadata={**outcome.metadata, **extra}))
                return answer(response, content=_annotated(content, admission, extra))
            relay = StreamRelay(call, admission, wants_usage)

            def settle(outcome: Outcome) -> None:
                self._settle(admission, replace(outcome, metadata={**outcome.metadata, **extra}))

            return answer(response, stream=RelayedStream(response, relay, settle))

        def close(self) -> None:
            self.inner.close()

    class AsyncGuardedTransport(Base, module.AsyncBaseTransport):  # type: ignore[misc,name-defined]
        """The async twin of ``GuardedTransport``."""

        async def handle_async_request(self, request: Any) -> Any:
            await request.aread()
            request, fitted = self._fit(request)
            prepared = self._prepare(request)
            if prepared is None:
                return await self._passthrough(request)
            endpoint, call, route = prepared
            provider = (
                route.provider()
                if route is not None
                else _provider(self.settings, request.url.host, endpoint)
            )
            call, deployment, provider, degrade = _deployed(self.settings, call, provider)
            subject = self.settings.subject()
            try:
                self.settings.check()
                call, admission, changes = await self.guard.admit_call(
                    subject,
                    call,
                    provider,
                    degrade=degrade,
                    held_back=_held_back(),
                    upstream=GatewayMemory.key(request.url),
                    whole=current().whole,
                )
            except Exception as exc:
                if type(exc).__module__.startswith("tokenward"):
                    raise self.settings.raise_as(exc) from None
                raise
            bounded = bounds(call, self.settings.bound_non_streamed)
            content, wants_usage = upstream_body(streamed(call) if bounded else call, admission, provider)
            extra = {"degraded": changes} if changes else {}
            if fitted is not None:
                extra["fitted"] = fitted
            if deployment is not None:
                extra["deployment"] = deployment
                if upstream_content_type(call) == "application/json":
                    content = renamed(content, deployment)
            try:
                outgoing = rebuilt(
                    request,
                    content,
                    _upstream_headers(call, subject, self.settings.carried()),
                    route,
                    bounded or call.stream,
                )
                if self.settings.resign is not None:
                    await self.settings.resign(outgoing)
                response = await self.inner.handle_async_request(outgoing)
            except BaseException:
                await self._asettle(admission, Outcome(None, status="upstream_error", metadata=extra))
                raise
            if bounded and response.status_code < 400 and _streamed_back(call, response):
                return await self._bounded(request, call, admission, response, extra)
            return await self._respond(request, call, admission, response, wants_usage, extra)

        async def _bounded(
            self, request: Any, call: PreparedCall, admission: Admission, response: Any, extra: dict[str, Any]
        ) -> Any:
            """The async twin of ``GuardedTransport._bounded``."""
            charged_here = "x-tokenward-gateway" not in response.headers
            if not charged_here:
                await self.guard.release(admission)
                self._gateway_answer(request, response, None)
            bounded = BoundedAnswer(call, admission)
            try:
                try:
                    async for chunk in response.aiter_bytes():
                        bounded.feed(chunk)
                        if bounded.done:
                            break
                    else:
                        bounded.upstream_ended()
                except module.HTTPError as exc:
                    bounded.upstream_failed(type(exc).__name__)
            except BaseException:
                bounded.client_gone()
                raise
            finally:
                await response.aclose()
                if charged_here:
                    outcome = bounded.outcome()
                    await self._asettle(admission, replace(outcome, metadata={**outcome.metadata, **extra}))
            content = _bounded_json(bounded, admission, extra)
            if content is None:
                raise module.RemoteProtocolError("the provider's answer broke off before it was complete")
            return answer(response, content=content, json_body=True)

        async def _passthrough(self, request: Any) -> Any:
            self._check(request)
            headers = _attribution_headers(self.settings.subject(), self.settings.carried())
            response = await self.inner.handle_async_request(rebuilt(request, None, headers))
            if "x-tokenward-gateway" in response.headers and response.status_code in (400, 402, 429):
                content = await response.aread()
                self._gateway_answer(request, response, content)
                return answer(response, content=content)
            self._gateway_answer(request, response, None)
            if not _conversation_call(request, response):
                return response
            content = await response.aread()
            if (found := _growth(request, content)) is not None:
                try:
                    await self.guard.record_conversation(self.settings.subject(), *found)
                except Exception:
                    log.exception("could not record conversation %s", found[0])
            return answer(response, content=content)

        async def _respond(
            self,
            request: Any,
            call: PreparedCall,
            admission: Admission,
            response: Any,
            wants_usage: bool,
            extra: dict[str, Any],
        ) -> Any:
            if "x-tokenward-gateway" in response.headers:
                await self.guard.release(admission)
                content = await response.aread()
                self._gateway_answer(request, response, content)
                return answer(response, content=content)
            if response.status_code >= 400 or not call.stream:
                try:
                    content = await response.aread()
                except BaseException:  # the body broke off: what was sent is still owed
                    await self._asettle(admission, Outcome(None, status="upstream_error", metadata=extra))
                    raise
                if "deployment" in extra and content_filtered(response.status_code, content):
                    outcome = filtered_outcome(admission)  # Azure bills it (guard.wire.azure)
                    await self._asettle(admission, replace(outcome, metadata={**outcome.metadata, **extra}))
                    return answer(response, content=content)
                if response.status_code >= 400:
                    status = {"http_status": response.status_code, **extra}
                    await self._asettle(admission, Outcome(None, status="upstream_error", metadata=status))
                    return answer(response, content=content)
                outcome = _answered(call, response, content)
                await self._asettle(admission, replace(outcome, metadata={**outcome.metadata, **extra}))
                return answer(response, content=_annotated(content, admission, extra))
            relay = StreamRelay(call, admission, wants_usage)

            async def settle(outcome: Outcome) -> None:
                await self._asettle(admission, replace(outcome, metadata={**outcome.metadata, **extra}))

            return answer(response, stream=AsyncRelayedStream(response, relay, settle))

        async def aclose(self) -> None:
            await self.inner.aclose()

    return GuardedTransport, AsyncGuardedTransport
