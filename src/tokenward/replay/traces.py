"""Recorded calls: the JSON-lines trace format of ``shared/data/traces`` (one call per line).

Each line carries the provider's own usage object (``raw_usage``) in the dialect named by
``provider`` (``openai``: OpenAI-compatible chat usage; ``anthropic``: Anthropic Messages usage),
plus ids (``session_id``, ``task_id``, ``agent_id``, ``step``), the call's ``timestamp`` and, for
comparison only, the cost the source recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokenward.errors import ConfigError

__all__ = ["TraceCall", "read_traces"]

_DIALECTS = {"openai": "openai-chat", "anthropic": "anthropic-messages"}


@dataclass(frozen=True, slots=True)
class TraceCall:
    """One recorded LLM call.

    Attributes:
        session_id, task_id, agent_id: attribution (task and agent may be None).
        step: 1-based position of the call in its session.
        at: when the call happened (UTC).
        dialect: the usage object's dialect (``openai-chat`` or ``anthropic-messages``).
        model: the model the response names.
        raw_usage: the provider's usage object, unmodified.
        recorded_cost_usd: the source's own cost of the call (for comparison only), or None.
        recorded_cost_kind: ``billed`` (the provider's invoice) or ``computed`` (a client's price
            table), or None.
        session_resolved: whether the session solved its task, when known.
        response_id: the provider's response id.
        line: line number in the file (1-based).
    """

    session_id: str
    task_id: str | None
    agent_id: str | None
    step: int
    at: datetime
    dialect: str
    model: str
    raw_usage: Mapping[str, Any]
    recorded_cost_usd: Decimal | None
    recorded_cost_kind: str | None
    session_resolved: bool | None
    response_id: str | None
    line: int


def _parse(row: Any, line: int, where: str) -> TraceCall:
    if not isinstance(row, dict):
        raise ConfigError(f"{where}:{line}: expected a JSON object")
    try:
        provider = str(row["provider"])
        if provider not in _DIALECTS:
            raise ConfigError(f"{where}:{line}: unknown provider {provider!r}; known: {', '.join(_DIALECTS)}")
        at = datetime.fromisoformat(str(row["timestamp"]).replace("Z", "+00:00"))
        cost = row.get("recorded_cost_usd")
        return TraceCall(
            session_id=str(row["session_id"]),
            task_id=None if row.get("task_id") is None else str(row["task_id"]),
            agent_id=None if row.get("agent_id") is None else str(row["agent_id"]),
            step=int(row["step"]),
            at=at,
            dialect=_DIALECTS[provider],
            model=str(row["model"]),
            raw_usage=row.get("raw_usage") or {},
            recorded_cost_usd=None if cost is None else Decimal(str(cost)),
            recorded_cost_kind=row.get("recorded_cost_kind"),
            session_resolved=row.get("session_resolved"),
            response_id=None if row.get("response_id") is None else str(row["response_id"]),
            line=line,
        )
    except KeyError as exc:
        raise ConfigError(f"{where}:{line}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}:{line}: {exc}") from None


def iter_traces(path: str | Path) -> Iterator[TraceCall]:
    """Recorded calls of a JSON-lines file, in file order.

    Raises:
        ConfigError: the file cannot be read, or a line is not a valid record (file:line named).
    """
    file = Path(path)
    try:
        handle = file.open(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read it: {exc.strerror}") from None
    with handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{file}:{number}: not valid JSON ({exc.msg})") from None
            yield _parse(row, number, str(file))


def read_traces(path: str | Path) -> list[TraceCall]:
    """Every recorded call of a JSON-lines file (see :func:`iter_traces`)."""
    return list(iter_traces(path))
