"""The proxied endpoints, one module per dialect."""

from tokenward.gateway.endpoints.anthropic_messages import AnthropicMessages
from tokenward.gateway.endpoints.base import Endpoint, StreamState
from tokenward.gateway.endpoints.openai_chat import OpenAIChat

__all__ = ["AnthropicMessages", "Endpoint", "OpenAIChat", "StreamState"]
