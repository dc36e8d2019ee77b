"""tokenward: token budgets for AI agents.

Meter every LLM call from the provider's own usage, price it exactly, and enforce hard and soft
budgets, in-process or through an OpenAI/Anthropic-compatible gateway.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from tokenward.clock import Clock, ManualClock, SystemClock
    from tokenward.core.budgets import Budget, Subject, parse_budget_spec
    from tokenward.core.events import UsageEvent
    from tokenward.core.pricebook import PriceBook
    from tokenward.core.pricing import Cost, Price
    from tokenward.core.usage import Usage
    from tokenward.core.windows import Window
    from tokenward.guard import AsyncGuard
    from tokenward.ledger import open_async_ledger, open_ledger
    from tokenward.sdk import Degrade, Guard, Session

# The rest of the root's names are imported when first read (PEP 562): ``import tokenward`` stays
# cheap, which the pytest plugin (loaded by every pytest run where tokenward is installed, used or
# not) relies on; importing the guard, ledger and SDK took about 0.6 s.
_LAZY = {
    "Clock": "tokenward.clock",
    "ManualClock": "tokenward.clock",
    "SystemClock": "tokenward.clock",
    "Budget": "tokenward.core.budgets",
    "Subject": "tokenward.core.budgets",
    "parse_budget_spec": "tokenward.core.budgets",
    "UsageEvent": "tokenward.core.events",
    "PriceBook": "tokenward.core.pricebook",
    "Cost": "tokenward.core.pricing",
    "Price": "tokenward.core.pricing",
    "Usage": "tokenward.core.usage",
    "Window": "tokenward.core.windows",
    "AsyncGuard": "tokenward.guard",
    "open_async_ledger": "tokenward.ledger",
    "open_ledger": "tokenward.ledger",
    "Degrade": "tokenward.sdk",
    "Guard": "tokenward.sdk",
    "Session": "tokenward.sdk",
}


def __getattr__(name: str) -> Any:
    """A root name imported on first use, or a subpackage read as an attribute
    (``tokenward.sdk`` after ``import tokenward``).

    Raises:
        AttributeError: no such name.
    """
    where = _LAZY.get(name)
    if where is not None:
        value = getattr(import_module(where), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
