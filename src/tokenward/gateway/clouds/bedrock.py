"""Amazon Bedrock as an upstream: its runtime URLs and its two ways to authenticate.

URLs: ``https://bedrock-runtime.{region}.amazonaws.com/model/{modelId}/converse`` (and
``/converse-stream``, ``/invoke``, ``/invoke-with-response-stream``), the model id percent-encoded
as one path segment.

Authentication (https://docs.aws.amazon.com/bedrock/latest/userguide/api-keys.html and the SigV4
reference, https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html, read
2026-12-07): ``auth: sigv4`` signs every request with AWS Signature Version 4 for the service
``bedrock`` in the upstream's region, by botocore's own signer (``botocore.auth.SigV4Auth``), with
credentials from the standard AWS chain (environment, shared files, SSO, container and instance
roles: ``botocore.session.Session().get_credentials()``), refreshed as botocore refreshes them;
``auth: api-key`` sends a Bedrock API key from ``api_key_env`` as ``Authorization: Bearer``.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

import httpx

from tokenward.errors import ConfigError
from tokenward.gateway.config import UpstreamConfig

__all__ = ["BedrockAuth", "bedrock_url"]

_CLIENT_AUTH = ("authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256")


def bedrock_url(upstream: UpstreamConfig, path: str) -> str:
    """The URL of ``path`` (``/model/{id}/converse``...) on a Bedrock upstream."""
    return (upstream.base_url or "").rstrip("/") + path


class BedrockAuth(httpx.Auth):
    """Signs requests to Bedrock (SigV4 with botocore), or sends its API key as a bearer token.

    Args:
        upstream: the Bedrock upstream.
        credentials: ``botocore.credentials.Credentials`` to use instead of the standard chain.

    Raises:
        ConfigError: ``auth: sigv4`` without botocore installed.
    """

    requires_request_body = True  # the payload's SHA-256 is signed

    def __init__(self, upstream: UpstreamConfig, credentials: Any = None) -> None:
        self.upstream = upstream
        self.sigv4 = upstream.auth == "sigv4"
        self._credentials = credentials
        self._lock = threading.Lock()
        if self.sigv4:
            try:
                import botocore.auth  # noqa: F401
            except ImportError:
                raise ConfigError(
                    f"upstream {upstream.name!r} signs with SigV4, which needs botocore: "
                    'pip install "tokenward[bedrock]"'
                ) from None

    def _frozen(self) -> Any:
        with self._lock:
            if self._credentials is None:
                import botocore.session

                self._credentials = botocore.session.Session().get_credentials()
            if self._credentials is None:
                raise httpx.ConnectError("no AWS credentials found in the standard chain")
            return self._credentials.get_frozen_credentials()

    def sign(self, request: httpx.Request) -> httpx.Request:
        """``request`` with the client's own credentials removed and our signature (or key) added.

        Raises:
            httpx.HTTPError: no credentials (a ``ConnectError``: the relay answers 502 and sends
                nothing unsigned).
        """
        for name in _CLIENT_AUTH:
            request.headers.pop(name, None)
        if not self.sigv4:
            key = self.upstream.api_key()
            if key:
                request.headers["authorization"] = f"Bearer {key}"
            return request
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        try:
            frozen = self._frozen()
        except httpx.HTTPError:
            raise
        except Exception as exc:  # a credential provider that failed (expired SSO, metadata down)
            raise httpx.ConnectError(f"no AWS credentials: {type(exc).__name__}") from exc
        signed = {k: v for k, v in request.headers.items() if k in ("host", "content-type", "accept")}
        aws = AWSRequest(method=request.method, url=str(request.url), data=request.content, headers=signed)
        SigV4Auth(frozen, "bedrock", self.upstream.region or "us-east-1").add_auth(aws)
        for name, value in aws.headers.items():
            request.headers[name] = value
        return request

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        yield self.sign(request)
