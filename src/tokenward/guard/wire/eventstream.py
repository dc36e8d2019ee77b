"""Amazon's binary event-stream framing (``application/vnd.amazon.eventstream``), as Bedrock
streams ConverseStream and InvokeModelWithResponseStream answers.

A message is: total length (4 bytes, big-endian), headers length (4), a CRC-32 of those eight
bytes (4), the headers, the payload, and a CRC-32 of everything before it (4). A header is its
name's length (1 byte), the name, a value type (1 byte; 7 = string: a 2-byte length then UTF-8)
and the value (https://docs.aws.amazon.com/transcribe/latest/dg/streaming-setting-up.html, "Event
stream encoding", read 2026-12-07).

Reading uses botocore's own decoder (``botocore.eventstream.EventStreamBuffer``, which checks both
CRCs); writing (the events tokenward sends when it ends a stream, and every event it relays) uses
:func:`encode_message`, tested against that decoder.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from typing import Any

from tokenward.errors import ConfigError

__all__ = ["EventStreamParser", "encode_message", "event_message", "exception_message"]

_STRING = 7


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", _STRING, len(raw_value)) + raw_value
    )


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message with string ``headers`` and ``payload``."""
    encoded = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + encoded + payload
    return body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def event_message(event_type: str, payload: bytes, content_type: str = "application/json") -> bytes:
    """An ``event`` message (``:message-type: event``) of type ``event_type``."""
    return encode_message(
        {":event-type": event_type, ":content-type": content_type, ":message-type": "event"}, payload
    )


def exception_message(exception_type: str, message: str) -> bytes:
    """An ``exception`` message, as Bedrock ends a stream that failed (boto3 raises it as
    ``EventStreamError`` with that code)."""
    import json

    payload = json.dumps({"message": message}).encode()
    return encode_message(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        payload,
    )


class EventStreamParser:
    """An incremental event-stream reader on botocore's decoder: feed it bytes however they are
    split; it returns ``(event type, headers, payload)`` for each message completed.

    Raises:
        ConfigError: botocore is not installed (``pip install "tokenward[bedrock]"``).
    """

    def __init__(self) -> None:
        try:
            from botocore.eventstream import EventStreamBuffer
        except ImportError:
            raise ConfigError(
                'reading Amazon event streams needs botocore: pip install "tokenward[bedrock]"'
            ) from None
        self._buffer: Any = EventStreamBuffer()

    def feed(self, chunk: bytes) -> list[tuple[str, dict[str, Any], bytes]]:
        """The messages completed by ``chunk``.

        Raises:
            ValueError: a corrupt message (botocore's ``ParserError``: a bad CRC or length).
        """
        from botocore.eventstream import ParserError

        self._buffer.add_data(chunk)
        out = []
        try:
            for message in self._buffer:
                headers = dict(message.headers)
                kind = headers.get(":event-type") or headers.get(":exception-type") or ""
                out.append((str(kind), headers, bytes(message.payload)))
        except ParserError as exc:
            raise ValueError(f"corrupt event-stream message: {exc}") from None
        return out
