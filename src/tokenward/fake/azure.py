"""Azure OpenAI's side of the fake provider: its URL layouts, its two ways to authenticate, and
its content filter.

Routes (served by :mod:`tokenward.fake.provider` with the OpenAI handlers):

* ``POST /openai/deployments/{deployment}/chat/completions``, ``/completions``, ``/embeddings``
  (the deployments surface; ``?api-version=`` required, the deployment is the model);
* ``POST /openai/responses?api-version=...`` and ``POST /openai/v1/chat/completions``,
  ``/openai/v1/responses``, ``/openai/v1/embeddings`` (the deployment in the body's ``model``);
* ``GET /_fake/azure/identity``: a managed-identity token endpoint as App Service serves one
  (azure-identity's ``ManagedIdentityCredential`` reads it from ``IDENTITY_ENDPOINT`` and sends
  ``X-IDENTITY-HEADER`` from ``IDENTITY_HEADER``): it answers
  ``{"access_token", "expires_on", "resource", "token_type"}`` when the header equals
  ``FakeSettings.azure_identity_secret``.

Authentication, when ``FakeSettings.api_key`` is set: ``api-key: <key>``, or
``Authorization: Bearer <token>`` with a token the identity endpoint issued (else 401, as Azure
answers). A request carrying ``x-fake-azure-content-filter: prompt`` is refused as Azure refuses
a filtered prompt: 400 with ``code: "content_filter"``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["CONTENT_FILTER_HEADER", "AzureIdentity", "content_filter_error"]

CONTENT_FILTER_HEADER = "x-fake-azure-content-filter"

_FILTERED = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry."
)


def content_filter_error() -> Response:
    """Azure's answer to a prompt its content filter refused."""
    body = {
        "error": {
            "message": _FILTERED,
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation"},
        }
    }
    return JSONResponse(body, status_code=400)


def _unauthorized() -> Response:
    message = (
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
        "valid key for an active subscription and use a correct regional API endpoint for your resource."
    )
    return JSONResponse({"error": {"code": "401", "message": message}}, status_code=401)


class AzureIdentity:
    """The tokens the fake's managed-identity endpoint issued, and the Azure request checks."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.issued: set[str] = set()

    def token(self, request: Request) -> Response:
        """``GET /_fake/azure/identity?resource=...&api-version=2019-08-01``."""
        given = request.headers.get("x-identity-header", "")
        if self.secret is None or not secrets.compare_digest(given.encode(), self.secret.encode()):
            return JSONResponse({"error": "invalid_request", "error_description": "bad identity header"}, 400)
        resource = request.query_params.get("resource")
        if not resource:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "resource is required"}, 400
            )
        token = "fake-entra-" + secrets.token_hex(16)
        self.issued.add(token)
        return JSONResponse(
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + 3600),
                "resource": resource,
                "token_type": "Bearer",
            }
        )

    def check(self, request: Request, key: str | None) -> Response | None:
        """Azure's gate: the ``api-key`` or an issued bearer token, the ``api-version`` of the
        deployments surface, then the content filter."""
        if key is not None:
            api_key = request.headers.get("api-key", "").encode()
            auth = request.headers.get("authorization", "")
            bearer = auth[7:] if auth[:7].lower() == "bearer " else ""
            if not (secrets.compare_digest(api_key, key.encode()) or bearer in self.issued):
                return _unauthorized()
        path = request.url.path
        if not path.startswith("/openai/v1/") and not request.query_params.get("api-version"):
            return JSONResponse(
                {"error": {"code": "404", "message": "Resource not found (api-version is missing)"}}, 404
            )
        if request.headers.get(CONTENT_FILTER_HEADER) == "prompt":
            return content_filter_error()
        return None


def with_deployment(body: dict[str, Any], deployment: str | None) -> dict[str, Any]:
    """The body as the OpenAI handlers read it: a deployment in the URL is its model."""
    return body if deployment is None else {**body, "model": deployment}
