"""Non-streamed calls bounded at their hold (sans-I/O): read the upstream as a stream, answer JSON.

An upstream that ignores the output bound answers a non-streamed call with everything it
generated, and charges for it, before tokenward sees a byte. So a call the client did not stream
is sent upstream *as a stream* (:func:`streamed`): the :class:`~tokenward.guard.wire.exchange.StreamRelay`
counts its output and stops reading at the hold, exactly as for a streamed call, and the relayed
events are put back together (:mod:`tokenward.guard.wire.assemble`) into the JSON answer the
provider would have given, ending as it ends a length-limited one when the hold cut it (chat and
completions ``finish_reason: "length"``, Responses ``status: "incomplete"`` with
``incomplete_details.reason: "max_output_tokens"``, Anthropic ``stop_reason: "max_tokens"``,
Gemini ``finishReason: "MAX_TOKENS"``, Bedrock Converse ``stopReason: "max_tokens"``), with the usage object the provider would give.

The gateway (per upstream, ``bound_non_streamed: stream | trust``) and the SDK transport drive
it the same way: :meth:`BoundedAnswer.feed` each upstream chunk until :attr:`~BoundedAnswer.done`,
then :meth:`~BoundedAnswer.upstream_ended` or :meth:`~BoundedAnswer.upstream_failed`, settle
:meth:`~BoundedAnswer.outcome`, answer :meth:`~BoundedAnswer.answer`.

Endpoints with no output to stop (embeddings, creating a Gemini context cache, images, audio:
``Endpoint.streams`` is False) keep the plain JSON path: their hold is their whole price.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Literal

from tokenward.guard.flow import Admission, Outcome
from tokenward.guard.wire.assemble import assembler_for
from tokenward.guard.wire.exchange import UNDECODABLE, PreparedCall, StreamRelay

__all__ = ["BOUND_MODES", "BoundMode", "BoundedAnswer", "bounds", "streamed"]

BoundMode = Literal["stream", "trust"]
BOUND_MODES: tuple[str, ...] = ("stream", "trust")
"""``stream``: read non-streamed calls as streams and stop them at the hold (the default);
``trust``: forward them as they are, trusting the upstream to honour the output bound (the
charge floor still applies)."""


def bounds(call: PreparedCall, mode: str) -> bool:
    """Whether a call is sent upstream as a stream to be bounded: a non-streamed call, in mode
    ``stream``, to an endpoint that streams (:attr:`~tokenward.guard.wire.endpoints.Endpoint.streams`:
    not embeddings, creating a Gemini context cache, images or audio, whose hold is their whole
    price)."""
    return mode == "stream" and not call.stream and call.endpoint.streams


def streamed(call: PreparedCall) -> PreparedCall:
    """The call as sent upstream to be bounded: the same request, asking for a stream."""
    return replace(call, body={**call.body, "stream": True}, stream=True)


class BoundedAnswer:
    """One non-streamed call read as a stream.

    Args:
        call: the call as the client sent it (not streamed).
        admission: its admission (the bound to stop at).
    """

    def __init__(self, call: PreparedCall, admission: Admission) -> None:
        self.relay = StreamRelay(streamed(call), admission, wants_usage=True)
        self.relay.decoded = {}  # events relayed as they came are decoded once, by the relay
        self.assembler = assembler_for(call.endpoint)
        self.parser = call.endpoint.stream_parser()  # SSE, or Bedrock's event stream

    @property
    def done(self) -> bool:
        """No more upstream bytes are wanted (the answer ended, was cut, or broke)."""
        return self.relay.done

    def feed(self, chunk: bytes) -> None:
        """Take an upstream chunk."""
        self._take(self.relay.feed(chunk))

    def upstream_ended(self) -> None:
        """The upstream closed the stream."""
        self._take(self.relay.upstream_ended())

    def upstream_failed(self, reason: str) -> None:
        """Reading the upstream failed."""
        self.relay.upstream_failed(reason)

    def received_after(self, chunk: bytes) -> None:
        """A chunk read after :attr:`done` (counted and charged, not answered)."""
        self.relay.received_after(chunk)

    def client_gone(self) -> None:
        """The caller went away before the answer was complete."""
        self.relay.client_gone()

    def outcome(self) -> Outcome:
        """What to settle (the relay's outcome, noted as a bounded non-streamed call)."""
        outcome = self.relay.outcome()
        metadata = {k: v for k, v in outcome.metadata.items() if k != "stream"}
        return replace(outcome, metadata={**metadata, "bounded": "stream"})

    def answer(self) -> tuple[dict[str, Any] | None, str | None]:
        """``(the JSON answer, None)``, or ``(None, why)`` when the upstream's answer broke off
        or was an error: the caller answers an error (the call is charged what was received)."""
        self._take(self.relay.tail)
        self.relay.tail = []
        if self.relay.status == "stream_broken" or self.assembler.error is not None:
            error = self.assembler.error
            detail = error.get("message") if isinstance(error, dict) else None
            return None, str(detail or "the upstream answer broke off before it was complete")
        return self.assembler.result(), None

    def _take(self, relayed: list[bytes]) -> None:
        decoded = self.relay.decoded
        assert decoded is not None
        for chunk in relayed:
            for _name, data in self.parser.feed(chunk):
                event = decoded.get(data)  # the same text decodes to the same JSON
                if event is None:  # an event the relay changed (cut, usage hidden) or wrote
                    try:
                        event = json.loads(data)
                    except UNDECODABLE:
                        continue  # [DONE]
                if isinstance(event, dict):
                    self.assembler.feed(event)
        decoded.clear()

    def body(self) -> bytes:
        """:meth:`answer` as bytes (raises ``ValueError`` on an error answer)."""
        data, error = self.answer()
        if data is None:
            raise ValueError(error)
        return json.dumps(data).encode()
