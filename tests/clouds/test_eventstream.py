"""Our event-stream encoder against botocore's decoder (the reader boto3 itself uses)."""

from __future__ import annotations

import json

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st

from tokenward.guard.wire.eventstream import (
    EventStreamParser,
    encode_message,
    event_message,
    exception_message,
)

names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20)


@given(headers=st.dictionaries(names, st.text(max_size=40), max_size=4), payload=st.binary(max_size=300))
def test_botocore_decodes_what_we_encode(headers, payload) -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(encode_message(headers, payload))
    [message] = list(buffer)
    assert dict(message.headers) == headers and message.payload == payload


def test_parser_reads_messages_split_anywhere() -> None:
    wire = event_message("contentBlockDelta", json.dumps({"delta": {"text": "hi"}}).encode())
    wire += exception_message("throttlingException", "slow down")
    parser = EventStreamParser()
    got = []
    for i in range(len(wire)):
        got += parser.feed(wire[i : i + 1])
    assert [(kind, headers[":message-type"]) for kind, headers, _ in got] == [
        ("contentBlockDelta", "event"),
        ("throttlingException", "exception"),
    ]
    assert json.loads(got[0][2]) == {"delta": {"text": "hi"}}


def test_a_corrupt_message_is_refused() -> None:
    wire = bytearray(event_message("messageStop", b'{"stopReason": "end_turn"}'))
    wire[-1] ^= 0xFF
    with pytest.raises(ValueError, match="corrupt"):
        EventStreamParser().feed(bytes(wire))
