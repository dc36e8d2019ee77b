"""Guarding boto3's ``bedrock-runtime`` client: Converse, ConverseStream, InvokeModel and
InvokeModelWithResponseStream.

boto3 does not send through httpx, so the guard hooks botocore's own event system
(https://boto3.amazonaws.com/v1/documentation/api/latest/guide/events.html): ``before-call``
admits the call and writes the bounded body (before botocore signs it), ``after-call`` settles it
from the answer; a streamed answer's event stream is read through tokenward's relay (counted, cut
at the hold, ended as Bedrock ends a length-limited stream) and handed back to the caller as a
botocore ``EventStream`` over the relayed bytes, so the caller decodes it with botocore's reader as
before. A budget denial raises :class:`~tokenward.errors.BudgetExceeded` out of the boto3 call.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from tokenward.errors import ConfigError
from tokenward.guard import Admission, Outcome
from tokenward.guard.wire.endpoints import BedrockConverse, BedrockInvoke, Endpoint
from tokenward.guard.wire.exchange import StreamRelay, json_outcome, prepare_body, upstream_body
from tokenward.sdk.transport import RelayedChunks, TransportSettings

__all__ = ["wrap_bedrock_runtime"]

log = logging.getLogger("tokenward.sdk")

_OPERATIONS: dict[str, tuple[Endpoint, bool]] = {
    "Converse": (BedrockConverse(), False),
    "ConverseStream": (BedrockConverse(), True),
    "InvokeModel": (BedrockInvoke(), False),
    "InvokeModelWithResponseStream": (BedrockInvoke(), True),
}
_KEY = "tokenward"


class _RelayedRaw(RelayedChunks):
    """The raw body botocore's ``EventStream`` reads, passed through a relay; settled once."""

    def __init__(self, raw: Any, relay: StreamRelay, settle: Any) -> None:
        # any read error counts: urllib3's read errors, a corrupt frame
        super().__init__(raw.stream, raw.close, relay, settle, (Exception,))

    def stream(self) -> Iterator[bytes]:
        """The relayed bytes (botocore reads the raw body with ``stream()``)."""
        return iter(self)


def wrap_bedrock_runtime(client: Any, guard: Any, settings: TransportSettings) -> Any:
    """Register the guard's hooks on a boto3 ``bedrock-runtime`` client (in place).

    Raises:
        ConfigError: not a ``bedrock-runtime`` client.
    """
    meta = getattr(client, "meta", None)
    service = getattr(getattr(meta, "service_model", None), "service_name", None)
    if service != "bedrock-runtime":
        raise ConfigError(f"tokenward can wrap boto3's bedrock-runtime client, not {service!r}")
    if getattr(client, "_tokenward_guarded", False):
        return client

    def before(model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        endpoint, stream = _OPERATIONS[model.name]
        body = json.loads(params.get("body") or b"{}")
        model_id = context.get(_KEY + "_model") or _model_id(params)
        call = prepare_body(endpoint, {**body, "model": model_id, "stream": stream})
        try:
            settings.check()
            call, admission, _changes = guard.admit_call(
                settings.subject(), call, "aws", degrade=settings.degrade, upstream="bedrock-runtime"
            )
        except Exception as exc:
            if type(exc).__module__.startswith("tokenward"):
                raise settings.raise_as(exc) from None
            raise
        content, _ = upstream_body(call, admission, "aws")
        params["body"] = content
        params["headers"].pop("Content-Length", None)
        context[_KEY] = (call, admission)

    def after(
        http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        held = context.pop(_KEY, None)
        if held is None:
            return
        call, admission = held
        if http_response.status_code >= 300:
            outcome = Outcome(
                None, status="upstream_error", metadata={"http_status": http_response.status_code}
            )
            _settle(guard, admission, outcome)
            return
        _endpoint, stream = _OPERATIONS[model.name]
        if stream:
            key = "stream" if "stream" in parsed else "body"
            events = parsed[key]
            relay = StreamRelay(call, admission, wants_usage=True)
            raw = _RelayedRaw(events._raw_stream, relay, lambda o: _settle(guard, admission, o))
            parsed[key] = type(events)(raw, events._output_shape, events._parser, events._operation_name)
            return
        if "body" in parsed:  # InvokeModel: a StreamingBody, read here and handed back whole
            from botocore.response import StreamingBody

            content = parsed["body"].read()
            parsed["body"] = StreamingBody(io.BytesIO(content), len(content))
        else:
            content = http_response.content
        _settle(
            guard, admission, json_outcome(call.endpoint, content, call.estimate.encoding, body=call.body)
        )

    events = client.meta.events
    for name in _OPERATIONS:
        events.register(f"before-call.bedrock-runtime.{name}", before, unique_id=f"tokenward-before-{name}")
        events.register(f"after-call.bedrock-runtime.{name}", after, unique_id=f"tokenward-after-{name}")
    client._tokenward_guarded = True
    return client


def _model_id(params: dict[str, Any]) -> str:
    """The model id from the request's URL path (``/model/{modelId}/converse``)."""
    from urllib.parse import unquote

    parts = str(params.get("url_path", "")).split("/")
    return unquote(parts[2]) if len(parts) > 2 else ""


def _settle(guard: Any, admission: Admission, outcome: Outcome) -> None:
    try:
        guard.settle(admission, replace(outcome, metadata={**outcome.metadata}))
    except Exception:
        log.exception("could not settle call %s; its reservation stays held", admission.request_id)
