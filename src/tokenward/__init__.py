"""tokenward: token budgets for AI agents.

Meter every LLM call from the provider's own usage, price it exactly, and enforce hard and soft
budgets, in-process or through an OpenAI/Anthropic-compatible gateway.
"""

from importlib.metadata import PackageNotFoundError, version

from tokenward.clock import Clock, ManualClock, SystemClock
from tokenward.core.budgets import Budget, Subject, parse_budget_spec
from tokenward.core.events import UsageEvent
from tokenward.core.pricebook import PriceBook
from tokenward.core.pricing import Cost, Price
from tokenward.core.usage import Usage
from tokenward.core.windows import Window
from tokenward.errors import (
    BudgetError,
    BudgetExceeded,
    ConfigError,
    ContextTooLarge,
    LedgerError,
    MissingDependency,
    PromptTooLarge,
    TokenwardError,
    UnattributedCall,
    UnattributedCallWarning,
    UnmeteredCall,
    UnpricedCall,
    ValidationError,
)
from tokenward.guard import AsyncGuard
from tokenward.ledger import open_async_ledger, open_ledger
from tokenward.sdk import Degrade, Guard, Session

try:
    __version__ = version("tokenward")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "AsyncGuard",
    "Budget",
    "BudgetError",
    "BudgetExceeded",
    "Clock",
    "ConfigError",
    "ContextTooLarge",
    "Cost",
    "Degrade",
    "Guard",
    "LedgerError",
    "ManualClock",
    "MissingDependency",
    "Price",
    "PriceBook",
    "PromptTooLarge",
    "Session",
    "Subject",
    "SystemClock",
    "TokenwardError",
    "UnattributedCall",
    "UnattributedCallWarning",
    "UnmeteredCall",
    "UnpricedCall",
    "Usage",
    "UsageEvent",
    "ValidationError",
    "Window",
    "__version__",
    "open_async_ledger",
    "open_ledger",
    "parse_budget_spec",
]
