"""The gateway: an OpenAI- and Anthropic-compatible proxy that enforces budgets."""

from tokenward.gateway.app import create_app
from tokenward.gateway.config import GatewayConfig

__all__ = ["GatewayConfig", "create_app"]
