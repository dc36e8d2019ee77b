"""How the gateway reaches the cloud platforms that resell models: Azure OpenAI, Google Vertex
AI and Amazon Bedrock. Each kind of upstream gets an :class:`httpx.Auth` (:func:`upstream_auth`) that
authenticates every request the gateway sends it, so the relay itself never handles a platform
credential; :func:`upstream_url` places a call on the platform's URL layout and
:func:`upstream_content` writes its body the way the platform wants it.
"""

from __future__ import annotations

from typing import Any

import httpx

from tokenward.gateway.config import UpstreamConfig

__all__ = ["upstream_auth", "upstream_content", "upstream_url"]


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
    if upstream.provider == "vertex":
        from tokenward.gateway.clouds.vertex import VertexAuth

        return VertexAuth(upstream, credential)
    if upstream.provider == "bedrock":
        from tokenward.gateway.clouds.bedrock import BedrockAuth

        return BedrockAuth(upstream, credential)
    return None


def upstream_url(upstream: UpstreamConfig, family: str, path: str, target: str, stream: bool) -> str:
    """The URL of a call to ``path`` (relative to the family's base) naming model ``target``
    (streamed or not: Vertex names the method in the URL)."""
    if upstream.provider == "azure":
        from tokenward.gateway.clouds.azure import azure_url

        return azure_url(upstream, path, target)
    if upstream.provider == "vertex":
        from tokenward.gateway.clouds.vertex import vertex_url

        return vertex_url(upstream, family, target, stream)
    if upstream.provider == "bedrock":
        from tokenward.gateway.clouds.bedrock import bedrock_url

        return bedrock_url(upstream, path)
    return upstream.url(family, path)


def upstream_content(upstream: UpstreamConfig, family: str, content: bytes, target: str | None) -> bytes:
    """The JSON body to send: an Azure deployment named as the model, a Claude call on Vertex
    without its model and with ``anthropic_version``; others unchanged."""
    if upstream.provider == "azure" and target is not None:
        from tokenward.guard.wire.azure import renamed

        return renamed(content, target)
    if upstream.provider == "vertex":
        from tokenward.gateway.clouds.vertex import vertex_content

        return vertex_content(family, content)
    return content
