"""How the gateway reaches the cloud platforms that resell models: Azure OpenAI (and the rest as
they are added). Each kind of upstream gets an :class:`httpx.Auth` (:func:`upstream_auth`) that
authenticates every request the gateway sends it, so the relay itself never handles a platform
credential; and :func:`upstream_url` places a call on the platform's URL layout.
"""

from __future__ import annotations

from typing import Any

import httpx

from tokenward.gateway.config import UpstreamConfig

__all__ = ["upstream_auth", "upstream_url"]


def upstream_auth(upstream: UpstreamConfig, credential: Any = None) -> httpx.Auth | None:
    """The auth hook of ``upstream``'s kind, or None for the kinds whose key the relay sets in a
    header (OpenAI, Anthropic, Gemini, compatible servers, the fake).

    Args:
        upstream: the upstream.
        credential: a platform credential object to use instead of the standard chain (an
            ``azure.core.credentials.TokenCredential`` for Azure's ``auth: entra``).

    Raises:
        ConfigError: the platform's extra is not installed (the message names it).
    """
    if upstream.provider == "azure":
        from tokenward.gateway.clouds.azure import AzureAuth

        return AzureAuth(upstream, credential)
    return None


def upstream_url(upstream: UpstreamConfig, family: str, path: str, target: str) -> str:
    """The URL of a call to ``path`` (relative to the family's base) naming model ``target``."""
    if upstream.provider == "azure":
        from tokenward.gateway.clouds.azure import azure_url

        return azure_url(upstream, path, target)
    return upstream.url(family, path)
