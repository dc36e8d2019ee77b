"""Azure OpenAI as an upstream: its URL layouts and its two ways to authenticate.

URLs (https://learn.microsoft.com/azure/ai-foundry/openai/reference, read 2026-12-07):

* the deployments surface, when ``api_version`` is configured:
  ``{base}/openai/deployments/{deployment}/chat/completions?api-version=...`` (likewise
  ``/completions``, ``/embeddings``, images and audio), and ``{base}/openai/responses?api-version=...``
  for the Responses API, which names the deployment in the body's ``model``;
* the v1 surface otherwise: ``{base}/openai/v1/chat/completions`` etc., the deployment in
  ``model``.

Authentication: ``auth: api-key`` sends the key read from ``api_key_env`` as the ``api-key``
header; ``auth: entra`` sends ``Authorization: Bearer <Microsoft Entra ID token>`` for the scope
``https://cognitiveservices.azure.com/.default``, from azure-identity's
``DefaultAzureCredential`` (environment, workload identity, managed identity, Azure CLI...),
refreshed five minutes before it expires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncGenerator, Generator
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from tokenward.errors import ConfigError
from tokenward.gateway.config import UpstreamConfig

__all__ = ["COGNITIVE_SCOPE", "DEPLOYMENT_PATHS", "AzureAuth", "azure_url"]

COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
"""The Entra ID scope of Azure OpenAI tokens."""

DEPLOYMENT_PATHS = frozenset(
    {
        "/completions",
        "/chat/completions",
        "/embeddings",
        "/audio/transcriptions",
        "/audio/translations",
        "/audio/speech",
        "/images/generations",
        "/images/edits",
    }
)
"""Operations the deployments surface serves under ``/openai/deployments/{deployment}``."""

_REFRESH_BEFORE = 300.0


def azure_url(upstream: UpstreamConfig, path: str, deployment: str) -> str:
    """The URL of ``path`` (``/chat/completions``...) for ``deployment`` on an Azure upstream."""
    base = (upstream.base_url or "").rstrip("/")
    if upstream.api_version is None:
        return f"{base}/openai/v1{path}"
    query = f"?api-version={quote(upstream.api_version, safe='')}"
    if path in DEPLOYMENT_PATHS:
        return f"{base}/openai/deployments/{quote(deployment, safe='')}{path}{query}"
    return f"{base}/openai{path}{query}"


class AzureAuth(httpx.Auth):
    """Authenticates requests to an Azure OpenAI resource (``api-key`` or an Entra bearer token).

    Args:
        upstream: the Azure upstream.
        credential: an ``azure.core.credentials.TokenCredential`` to use instead of
            ``DefaultAzureCredential`` (for ``auth: entra``).

    Raises:
        ConfigError: ``auth: entra`` without azure-identity installed.
    """

    def __init__(self, upstream: UpstreamConfig, credential: Any = None) -> None:
        self.upstream = upstream
        self.entra = upstream.auth == "entra"
        self._credential = credential
        if self.entra and credential is None:
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError:
                raise ConfigError(
                    f"upstream {upstream.name!r} uses auth: entra, which needs azure-identity: "
                    'pip install "tokenward[azure]"'
                ) from None
            self._credential = DefaultAzureCredential()
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def _fresh(self) -> str | None:
        token = self._token
        if token is not None and token[1] - _REFRESH_BEFORE > time.time():
            return token[0]
        return None

    def bearer(self) -> str:
        """An Entra ID token, fetched (blocking) when the cached one is about to expire.

        Raises:
            httpx.HTTPError: the credential chain could not get a token (a ``ConnectError`` naming
                the cause, so the relay answers 502 as for an upstream it could not reach).
        """
        with self._lock:
            cached = self._fresh()
            if cached is not None:
                return cached
            try:
                access = self._credential.get_token(COGNITIVE_SCOPE)
            except Exception as exc:  # azure.core.exceptions.ClientAuthenticationError and kin
                raise httpx.ConnectError(f"no Microsoft Entra ID token: {type(exc).__name__}") from exc
            self._token = (access.token, float(access.expires_on))
            return str(access.token)

    def _apply(self, request: httpx.Request, token: str | None) -> httpx.Request:
        request.headers.pop("authorization", None)
        request.headers.pop("api-key", None)
        if token is not None:
            request.headers["authorization"] = f"Bearer {token}"
        else:
            key = self.upstream.api_key()
            if key:
                request.headers["api-key"] = key
        return request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        yield self._apply(request, self.bearer() if self.entra else None)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = None
        if self.entra:
            token = self._fresh() or await anyio.to_thread.run_sync(self.bearer)
        yield self._apply(request, token)
