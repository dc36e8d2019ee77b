"""Google Vertex AI as an upstream: Gemini and Claude on its publisher-model endpoints, with
Google application-default credentials.

URLs (https://cloud.google.com/vertex-ai/generative-ai/docs/reference/rest, and
https://platform.claude.com/docs/en/build-with-claude/claude-on-vertex-ai, read 2026-12-07):

* Gemini: ``{base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}``
  ``:generateContent`` or ``:streamGenerateContent?alt=sse``; the body is the Gemini API's;
* Claude: ``.../publishers/anthropic/models/{model}:rawPredict`` or ``:streamRawPredict``; the body
  is the Messages API's without ``model`` (it is in the URL) and with ``anthropic_version``
  (``vertex-2023-10-16`` unless the client sent its own).

``base`` is ``https://{location}-aiplatform.googleapis.com``, or ``https://aiplatform.googleapis.com``
for ``location: global``. Authentication: ``Authorization: Bearer <OAuth access token>`` from
google-auth's ``google.auth.default()`` (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's
application-default login, the metadata server...), scope ``cloud-platform``, refreshed when it
is about to expire.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncGenerator, Generator
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from tokenward.errors import ConfigError
from tokenward.gateway.config import UpstreamConfig

__all__ = ["CLOUD_PLATFORM_SCOPE", "VERTEX_ANTHROPIC_VERSION", "VertexAuth", "vertex_content", "vertex_url"]

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"


def vertex_url(upstream: UpstreamConfig, family: str, model: str, stream: bool) -> str:
    """The publisher-model URL of a call to ``model`` on a Vertex upstream."""
    base = (upstream.base_url or "").rstrip("/")
    where = f"{base}/v1/projects/{quote(upstream.project or '', safe='')}/locations/{quote(upstream.location or '', safe='')}"
    name = quote(model, safe="@")
    if family == "anthropic":
        return f"{where}/publishers/anthropic/models/{name}:{'streamRawPredict' if stream else 'rawPredict'}"
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{where}/publishers/google/models/{name}:{method}"


def vertex_content(family: str, content: bytes) -> bytes:
    """The body Vertex expects: a Claude call's without ``model``, with ``anthropic_version``."""
    if family != "anthropic":
        return content
    try:
        body = json.loads(content)
    except ValueError:
        return content
    if not isinstance(body, dict):
        return content
    body.pop("model", None)
    body.setdefault("anthropic_version", VERTEX_ANTHROPIC_VERSION)
    return json.dumps(body).encode()


class VertexAuth(httpx.Auth):
    """Authenticates requests to Vertex AI with an OAuth access token from google-auth.

    Args:
        upstream: the Vertex upstream.
        credentials: ``google.auth.credentials.Credentials`` to use instead of
            ``google.auth.default()``.

    Raises:
        ConfigError: google-auth is not installed.
    """

    def __init__(self, upstream: UpstreamConfig, credentials: Any = None) -> None:
        try:
            import google.auth
            import google.auth.transport.requests  # noqa: F401
        except ImportError:
            raise ConfigError(
                f'upstream {upstream.name!r} (vertex) needs google-auth: pip install "tokenward[vertex]"'
            ) from None
        self.upstream = upstream
        self._credentials = credentials
        self._lock = threading.Lock()

    def bearer(self) -> str:
        """A current access token (blocking: may refresh it).

        Raises:
            httpx.HTTPError: no credentials, or the refresh failed (a ``ConnectError`` naming the
                cause, so the relay answers 502 and sends nothing unsigned).
        """
        import google.auth
        import google.auth.transport.requests

        with self._lock:
            try:
                if self._credentials is None:
                    self._credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
                credentials = self._credentials
                if not credentials.valid:  # missing, or expiring within google-auth's skew
                    credentials.refresh(google.auth.transport.requests.Request())
                return str(credentials.token)
            except Exception as exc:  # DefaultCredentialsError, RefreshError, TransportError
                raise httpx.ConnectError(f"no Google access token: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _apply(request: httpx.Request, token: str) -> httpx.Request:
        request.headers.pop("x-goog-api-key", None)
        request.headers.pop("x-api-key", None)
        request.headers["authorization"] = f"Bearer {token}"
        return request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        yield self._apply(request, self.bearer())

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        yield self._apply(request, await anyio.to_thread.run_sync(self.bearer))
