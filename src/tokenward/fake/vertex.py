"""Google Vertex AI's side of the fake provider: its publisher-model paths and its OAuth tokens.

Routes (served by :mod:`tokenward.fake.provider` with the Gemini and Anthropic handlers):

* ``POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent``
  and ``:streamGenerateContent?alt=sse`` (also under ``/v1beta1``, where google-genai sends them):
  Gemini;
* ``POST .../publishers/anthropic/models/{model}:rawPredict`` and ``:streamRawPredict``: Claude; the
  body must carry ``anthropic_version`` and no ``model`` (Vertex takes it from the URL), else 400;
* ``POST /_fake/google/token``: an OAuth 2.0 token endpoint for the JWT-bearer grant (RFC 7523),
  as google-auth's service-account credentials call their ``token_uri``: the ``assertion`` must
  be a JWT signed (RS256) with the private key whose public key is
  ``FakeSettings.google_service_account_key``, addressed to Google's token endpoint (``aud``
  ``https://oauth2.googleapis.com/token``, which google-auth writes whatever the ``token_uri``)
  and not expired, checked with google-auth's own ``jwt.decode``; it then issues a bearer token, else
  answers 400 ``invalid_grant``.

Authentication, when ``FakeSettings.api_key`` is set: ``Authorization: Bearer <token>`` with a
token the token endpoint issued; otherwise 401 ``UNAUTHENTICATED`` as Google answers.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tokenward.errors import ValidationError
from tokenward.fake import gemini

__all__ = ["GOOGLE_TOKEN_AUDIENCE", "GoogleTokens", "claude_body"]

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def claude_body(body: dict[str, Any], target: str) -> dict[str, Any]:
    """A Vertex Claude body as the Messages handler reads it (model and streaming from the URL).

    Raises:
        ValidationError: a ``model`` in the body, no ``anthropic_version``, or an unknown method.
    """
    model, _, method = target.rpartition(":")
    if method not in ("rawPredict", "streamRawPredict") or not model:
        raise ValidationError(f"unknown method {target!r}", field="url")
    if "model" in body:
        raise ValidationError(
            "model: Extra inputs are not permitted (Vertex takes it from the URL)", field="model"
        )
    if not isinstance(body.get("anthropic_version"), str):
        raise ValidationError("anthropic_version: Field required", field="anthropic_version")
    out = {k: v for k, v in body.items() if k != "anthropic_version"}
    return {**out, "model": model, "stream": method == "streamRawPredict"}


class GoogleTokens:
    """The access tokens the fake's token endpoint issued, and the Vertex request check."""

    def __init__(self, public_key: str | None) -> None:
        self.public_key = public_key
        self.issued: set[str] = set()

    def _signed(self, assertion: str, audience: str) -> bool:
        if self.public_key is None or not assertion:
            return False
        try:
            from google.auth import jwt
        except ImportError:  # the fake verifies with google-auth: tokenward[vertex]
            return False
        try:
            jwt.decode(assertion, certs=self.public_key, audience=audience)  # type: ignore[no-untyped-call]
        except (ValueError, KeyError):
            return False
        return True

    async def token(self, request: Request) -> Response:
        """``POST /_fake/google/token`` (form: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``
        and ``assertion=<JWT>``)."""
        form = await request.form()
        grant = form.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        if not grant or not self._signed(str(form.get("assertion", "")), GOOGLE_TOKEN_AUDIENCE):
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, 400
            )
        token = "ya29.fake-" + secrets.token_hex(16)
        self.issued.add(token)
        return JSONResponse({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def check(self, request: Request, key: str | None) -> Response | None:
        """Vertex's gate: a bearer token the endpoint issued."""
        if key is None:
            return None
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and auth[7:] in self.issued:
            return None
        return gemini.error_response(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
            "cookie or other valid authentication credential.",
        )
