"""The OpenAI Batch file formats: input records, output lines, and what an output file says is done.

Input (one JSON object per line, as OpenAI's Batch API takes it,
https://platform.openai.com/docs/api-reference/batch/request-input)::

    {"custom_id": "r-1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

Output (https://platform.openai.com/docs/api-reference/batch/request-output)::

    {"id": "batch_req_...", "custom_id": "r-1",
     "response": {"status_code": 200, "request_id": "...", "body": {...}}, "error": null}

or, for a record that got no answer, ``"response": null, "error": {"code": ..., "message": ...}``.

A line that is not a JSON object, or lacks ``custom_id`` or ``body``, or repeats a ``custom_id``,
makes the whole file unreadable (:class:`~tokenward.errors.ValidationError` naming the line):
nothing is sent from a file whose records cannot all be told apart. A record whose ``url`` is not
one of :data:`URLS` (or whose method is not ``POST``) is read, and answered with an error line
(code ``invalid_url``) without being sent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenward.errors import ValidationError

__all__ = [
    "URLS",
    "BatchRecord",
    "OutputState",
    "error_line",
    "read_output",
    "read_records",
    "response_line",
]

URLS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings")
"""The endpoints a batch record may name (those of OpenAI's Batch API that tokenward guards)."""


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One request of a batch file.

    Attributes:
        custom_id: the caller's id of the record (unique in the file).
        method: the HTTP method (``POST``).
        url: the endpoint path (``/v1/chat/completions``...).
        body: the request body (a JSON object).
        line: the record's line as read (without its newline), written as is to a remainder file.
        index: its position in the file (0-based, counting records only).
    """

    custom_id: str
    method: str
    url: str
    body: Mapping[str, Any]
    line: str
    index: int = 0

    @property
    def supported(self) -> bool:
        """Whether the record can be sent: ``POST`` to one of :data:`URLS`."""
        return self.method.upper() == "POST" and self.url in URLS

    @property
    def model(self) -> str:
        """The model the body names (``""`` when none)."""
        return str(self.body.get("model") or "")

    @classmethod
    def of(cls, data: Mapping[str, Any], *, index: int = 0) -> BatchRecord:
        """A record from its JSON object (the Python API's records may be dicts).

        Raises:
            ValidationError: no string ``custom_id``, or a ``body`` that is not a JSON object.
        """
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise ValidationError("a batch record needs a non-empty string 'custom_id'", field="custom_id")
        body = data.get("body")
        if not isinstance(body, Mapping):
            raise ValidationError(f"record {custom_id!r}: 'body' must be a JSON object", field="body")
        return cls(
            custom_id=custom_id,
            method=str(data.get("method") or "POST"),
            url=str(data.get("url") or ""),
            body=dict(body),
            line=json.dumps(dict(data), separators=(",", ":")),
            index=index,
        )


def read_records(path: Path | str | Iterable[str]) -> list[BatchRecord]:
    """Every record of a batch input file (or of its lines), in file order; blank lines skipped.

    Raises:
        ValidationError: a line that is not a JSON object, lacks ``custom_id`` or ``body``, or
            repeats a ``custom_id`` (the message names the line number); a file that cannot be read.
    """
    if isinstance(path, (str, Path)):
        try:
            # lines end at "\n" only (JSON Lines): str.splitlines() would also cut at U+2028, U+0085
            # and other separators a JSON string may hold as they are; a UTF-8 BOM is dropped
            lines: Iterable[str] = Path(path).read_text(encoding="utf-8-sig").split("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"cannot read batch file {str(path)!r}: {exc}", field="file") from None
    else:
        lines = path
    records: list[BatchRecord] = []
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValidationError(f"line {number}: not JSON ({exc})", field="line") from None
        if not isinstance(data, dict):
            raise ValidationError(f"line {number}: a record must be a JSON object", field="line")
        try:
            record = BatchRecord.of(data, index=len(records))
        except ValidationError as exc:
            raise ValidationError(f"line {number}: {exc}", field=exc.field) from None
        if record.custom_id in seen:
            raise ValidationError(f"line {number}: custom_id {record.custom_id!r} repeats an earlier record")
        seen.add(record.custom_id)
        records.append(
            BatchRecord(record.custom_id, record.method, record.url, record.body, text, record.index)
        )
    return records


def _line_id() -> str:
    return f"batch_req_{uuid.uuid4().hex}"


def response_line(custom_id: str, status_code: int, request_id: str | None, body: Any) -> dict[str, Any]:
    """An output line for a record that got an answer (any status)."""
    return {
        "id": _line_id(),
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": None,
    }


def error_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    """An output line for a record that got no answer (``response`` null)."""
    return {
        "id": _line_id(),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


@dataclass(frozen=True, slots=True)
class OutputState:
    """What an output file says about each record (the last line of each ``custom_id`` wins).

    Attributes:
        succeeded: custom ids whose last line is an answer with a 2xx status.
        failed: custom ids whose last line is an error line or a non-2xx answer.
        lines: how many lines the file holds.
    """

    succeeded: frozenset[str]
    failed: frozenset[str]
    lines: int

    @property
    def processed(self) -> frozenset[str]:
        """Every custom id with a line."""
        return self.succeeded | self.failed


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for raw in handle:
            if not raw.endswith("\n"):
                return  # a line cut short by a kill: its record was not finished
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("custom_id"), str):
                yield data


def read_output(path: Path | str) -> OutputState:
    """Read an output file (missing: empty). A last line without its newline (cut by a kill) is
    ignored, so its record counts as not done.

    Raises:
        ValidationError: the file cannot be read (a directory, no permission, not UTF-8 text).
    """
    path = Path(path)
    if not path.exists():
        return OutputState(frozenset(), frozenset(), 0)
    last: dict[str, bool] = {}
    count = 0
    try:
        for data in _lines(path):
            count += 1
            response = data.get("response")
            status = response.get("status_code") if isinstance(response, dict) else None
            ok = isinstance(status, int) and 200 <= status < 300
            last[data["custom_id"]] = ok and not data.get("error")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read output file {str(path)!r}: {exc}", field="out") from None
    return OutputState(
        succeeded=frozenset(k for k, v in last.items() if v),
        failed=frozenset(k for k, v in last.items() if not v),
        lines=count,
    )
