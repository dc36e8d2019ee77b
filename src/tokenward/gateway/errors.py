"""Error answers in each provider's own shape.

OpenAI (https://platform.openai.com/docs/guides/error-codes): ``{"error": {"message", "type",
"param", "code"}}``. Anthropic (https://docs.anthropic.com/en/api/errors): ``{"type": "error",
"error": {"type", "message"}}``. Gemini (https://ai.google.dev/gemini-api/docs/troubleshooting,
the Google API error model): ``{"error": {"code": <HTTP status>, "message", "status":
"INVALID_ARGUMENT"..., "details": [{"@type": ".../google.rpc.ErrorInfo", "reason", "domain"}]}}``.
A budget denial adds the structured fields of
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


# google.rpc.Code names by HTTP status (https://cloud.google.com/apis/design/errors#handling_errors).
_GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
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


_AWS_ERRORS = {
    400: "ValidationException",
    401: "UnrecognizedClientException",
    402: "BudgetExceededException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
}
"""AWS error codes of the gateway's statuses on Bedrock's paths (Bedrock Runtime's own names,
https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html#API_runtime_Converse_Errors;
402 is tokenward's)."""


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
    elif dialect == "bedrock":  # the AWS JSON protocol: boto3 reads the code from the header
        body = {"message": error.message, **error.extra}
        kind = _AWS_ERRORS.get(
            error.status, "ServiceUnavailableException" if error.status >= 500 else "ValidationException"
        )
        if error.code == "budget_exceeded":
            kind = "BudgetExceededException"
        return JSONResponse(
            body, status_code=error.status,
            headers={**error.headers, **(headers or {}), "x-amzn-errortype": kind},
        )  # fmt: skip
    elif dialect == "gemini":
        inner = {
            "code": error.status,
            "message": error.message,
            "status": _GOOGLE_STATUSES.get(error.status, "UNKNOWN"),
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": (error.code or error.type).upper(),
                    "domain": "tokenward",
                }
            ],
        }
        inner.update(error.extra)
        body = {"error": inner}
    else:
        inner = {"message": error.message, "type": error.type, "param": error.param, "code": error.code}
        inner.update(error.extra)
        body = {"error": inner}
    return JSONResponse(body, status_code=error.status, headers={**error.headers, **(headers or {})})
