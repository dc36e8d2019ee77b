"""The proxied endpoints, one module per dialect."""

from tokenward.guard.wire.endpoints.anthropic_messages import AnthropicMessages
from tokenward.guard.wire.endpoints.base import Endpoint, StreamState
from tokenward.guard.wire.endpoints.bedrock import BedrockConverse, BedrockInvoke
from tokenward.guard.wire.endpoints.gemini import Gemini
from tokenward.guard.wire.endpoints.gemini_caches import GeminiCachedContents
from tokenward.guard.wire.endpoints.openai_chat import OpenAIChat
from tokenward.guard.wire.endpoints.openai_media import (
    OpenAIImageEdits,
    OpenAIImages,
    OpenAISpeech,
    OpenAITranscriptions,
)
from tokenward.guard.wire.endpoints.openai_responses import OpenAIResponses
from tokenward.guard.wire.endpoints.openai_text import OpenAICompletions, OpenAIEmbeddings

__all__ = [
    "AnthropicMessages",
    "BedrockConverse",
    "BedrockInvoke",
    "Endpoint",
    "Gemini",
    "GeminiCachedContents",
    "OpenAIChat",
    "OpenAICompletions",
    "OpenAIEmbeddings",
    "OpenAIImageEdits",
    "OpenAIImages",
    "OpenAIResponses",
    "OpenAISpeech",
    "OpenAITranscriptions",
    "StreamState",
]
