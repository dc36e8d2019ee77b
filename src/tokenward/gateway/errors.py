"""Error answers in each provider's own shape.

OpenAI (https://platform.openai.com/docs/guides/error-codes): ``{"error": {"message", "type",
"param", "code"}}``. Anthropic (https://docs.anthropic.com/en/api/errors): ``{"type": "error",
"error": {"type", "message"}}``. A budget denial adds the structured fields of
:class:`~tokenward.errors.BudgetExceeded` under ``error.budget``.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

__all__ = ["GatewayError", "error_response"]

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "budget_exceeded_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


class GatewayError(Exception):
    """An answer the gateway gives instead of forwarding (bad request, auth, budget...)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.extra = extra or {}
        self.headers = headers or {}


def error_response(dialect: str, error: GatewayError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error as a JSON response in the dialect's shape."""
    if dialect == "anthropic-messages":
        inner: dict[str, Any] = {
            "type": _ANTHROPIC_TYPES.get(error.status, error.type),
            "message": error.message,
        }
        if error.code:
            inner["code"] = error.code
        inner.update(error.extra)
        body: dict[str, Any] = {"type": "error", "error": inner}
    else:
        inner = {"message": error.message, "type": error.type, "param": error.param, "code": error.code}
        inner.update(error.extra)
        body = {"error": inner}
    return JSONResponse(body, status_code=error.status, headers={**error.headers, **(headers or {})})
