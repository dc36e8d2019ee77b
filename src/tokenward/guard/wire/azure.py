"""Azure OpenAI's wire rules shared by the gateway and the SDK: deployments named in place of
models, and the content filter's refusals, which Azure bills.

Azure bills a prompt its content filter refused (HTTP 400, ``code: "content_filter"``) for the
prompt and completion tokens, though the answer reports no usage: "When content filtering is
triggered for a prompt and a status 400 is received as part of the response there will be a
charge for this request as the prompt was evaluated by the service. Due to the asynchronous
nature of the content filtering system, a charge for both the prompt and completion tokens will
occur." (https://learn.microsoft.com/azure/ai-foundry/openai/concepts/content-filter, read
2026-12-07). Such a call is charged as our prompt estimate plus the whole output bound its hold
allowed (the completion that may have been generated cannot be read). A 200 answer with
``finish_reason: "content_filter"`` carries usage and is charged as any other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from tokenward.errors import ConfigError
from tokenward.guard.flow import Admission, Outcome

__all__ = ["azure_deployments", "content_filtered", "filtered_outcome", "renamed"]


def azure_deployments(raw: Mapping[str, Any] | None) -> dict[str, tuple[str, Decimal | None]]:
    """Deployments as ``{name: (model, price multiplier or None)}``, from ``{name: model}`` or
    ``{name: {"model": ..., "price_multiplier": ...}}``.

    Raises:
        ConfigError: an entry without a model name, or a multiplier that is not a positive number.
    """
    out: dict[str, tuple[str, Decimal | None]] = {}
    for name, value in (raw or {}).items():
        entry = {"model": value} if isinstance(value, str) else value
        if not isinstance(entry, Mapping) or set(entry) - {"model", "price_multiplier"}:
            raise ConfigError(f"deployment {name!r}: expected a model name or {{model, price_multiplier}}")
        model = entry.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigError(f"deployment {name!r}: model must be a model name (gpt-4o...)")
        multiplier = entry.get("price_multiplier")
        factor = None
        if multiplier is not None:
            try:
                factor = Decimal(str(multiplier))
            except ArithmeticError:
                factor = None
            if isinstance(multiplier, bool) or factor is None or not factor.is_finite() or factor <= 0:
                raise ConfigError(
                    f"deployment {name!r}: price_multiplier must be a positive number, got {multiplier!r}"
                )
        out[str(name)] = (model, factor)
    return out


def renamed(content: bytes, model: str) -> bytes:
    """A JSON request body with its ``model`` set to ``model`` (the deployment name Azure knows);
    anything that is not a JSON object is returned unchanged."""
    try:
        body = json.loads(content)
    except ValueError:
        return content
    if not isinstance(body, dict):
        return content
    return json.dumps({**body, "model": model}).encode()


def content_filtered(status: int, content: bytes) -> bool:
    """Whether an answer is Azure's refusal of a filtered prompt (400, code ``content_filter``)."""
    if status != 400:
        return False
    try:
        error = json.loads(content).get("error")
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") == "content_filter"


def filtered_outcome(admission: Admission) -> Outcome:
    """The outcome of a prompt Azure's content filter refused: the prompt estimate and the held
    output bound are charged (see the module docstring)."""
    return Outcome(
        None,
        admission.max_output_tokens,
        "ok",
        metadata={"http_status": 400, "content_filter": "prompt", "cost_basis": "held_output"},
    )
