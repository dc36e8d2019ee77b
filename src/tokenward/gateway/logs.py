"""Structured logs: one JSON object per line, with the request id on every call's line.

``tokenward serve --log-format json`` installs :class:`JSONFormatter` on the root logger. Each
settled call is logged on ``tokenward.calls`` with its request id, subject, model, status,
tokens, cost and duration; fields given in ``extra={"fields": {...}}`` become top-level keys.
Upstream credentials never reach a log line (the gateway never puts them in a record), and a
key passed in the query string (Gemini's ``?key=``) is masked in uvicorn's access lines.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from tokenward.core.events import UsageEvent
from tokenward.numbers import plain

__all__ = [
    "JSONFormatter",
    "MaskQueryKeys",
    "call_fields",
    "configure_logging",
    "log_call",
    "mask_query_keys",
]

calls = logging.getLogger("tokenward.calls")


class JSONFormatter(logging.Formatter):
    """Formats records as single-line JSON: ``ts``, ``level``, ``logger``, ``message``, ``pid``
    (the process: one of the workers of ``tokenward serve --workers N``) and the record's
    ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker of ``tokenward serve --workers N``
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, separators=(",", ":"))


_SECRET_PARAMS = {"key", "api_key", "api-key"}


def mask_query_keys(target: str) -> str:
    """``target`` (a path with its query string) with the value of every key-like parameter
    replaced by ``***``, however the name is spelled: ``key``, ``%6Bey``, ``KEY``, ``api%5Fkey``
    (names are compared percent-decoded, ``+`` as a space, stripped and in lower case, as a
    server reading the query would)."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = []
    for part in query.split("&"):
        name, eq, _value = part.partition("=")
        if eq and unquote_plus(name).strip().lower() in _SECRET_PARAMS:
            part = f"{name}=***"
        parts.append(part)
    return f"{path}?{'&'.join(parts)}"


class MaskQueryKeys(logging.Filter):
    """Masks ``key=`` (and ``api_key=``) query values in uvicorn's access lines, whose third
    argument is the request's path with its query string: Gemini clients send their key there
    (https://ai.google.dev/api/generate-content, ``?key=``). A name written with percent escapes
    (``?%6Bey=``) authenticates just the same, so it is masked just the same."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's path argument; never drops a record."""
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], mask_query_keys(args[2]), *args[3:])
        return True


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    """Log to stderr as ``text`` or ``json`` at ``level``; keys in access lines are masked."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, MaskQueryKeys) for f in access.filters):
        access.addFilter(MaskQueryKeys())
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every upstream request at INFO (with the in-process fake's loopback port); the
    # gateway logs each call itself on tokenward.calls. Shown with --log-level debug.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level.lower() == "debug" else logging.WARNING)


def call_fields(event: UsageEvent, started: float, http_status: int | None = None) -> dict[str, Any]:
    """The fields of a call's log line (tokens, USD, milliseconds)."""
    fields: dict[str, Any] = {
        "request_id": event.request_id,
        "status": event.status,
        "endpoint": event.endpoint,
        "model": event.model,
        "subject": event.subject.to_dict(),
        "input_tokens": event.usage.input_tokens,
        "output_tokens": event.usage.output_tokens,
        "cost_usd": None if event.cost_usd is None else plain(event.cost_usd),
        "cost_estimated": event.cost_estimated,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    if http_status is not None:
        fields["http_status"] = http_status
    for key in ("upstream", "cut_off", "clamped_by", "fallback_of"):
        if key in event.metadata:
            fields[key] = event.metadata[key]
    return fields


def log_call(event: UsageEvent, started: float) -> None:
    """Log one settled call on ``tokenward.calls``."""
    fields = call_fields(event, started, event.metadata.get("http_status"))
    calls.info("%s %s %s", event.request_id, event.status, event.model, extra={"fields": fields})
