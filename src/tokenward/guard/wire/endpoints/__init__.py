"""The proxied endpoints, one module per dialect."""

from tokenward.guard.wire.endpoints.anthropic_messages import AnthropicMessages
from tokenward.guard.wire.endpoints.base import Endpoint, StreamState
from tokenward.guard.wire.endpoints.openai_chat import OpenAIChat

__all__ = ["AnthropicMessages", "Endpoint", "OpenAIChat", "StreamState"]
