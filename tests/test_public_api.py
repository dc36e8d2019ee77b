"""The package root exports what the docs use, and nothing it does not define."""

from __future__ import annotations

import warnings

import tokenward

ROOT = {
    "AsyncGuard", "Budget", "BudgetError", "BudgetExceeded", "Clock", "ConfigError", "ContextTooLarge", "Cost", "Degrade",
    "Guard", "LedgerError", "ManualClock", "MissingDependency", "Price", "PriceBook", "PromptTooLarge", "Session",
    "Subject", "SystemClock", "TokenwardError", "UnattributedCall", "UnattributedCallWarning",
    "UnmeteredCall", "UnpricedCall", "Usage", "UsageEvent", "ValidationError", "Window", "__version__",
    "open_async_ledger", "open_ledger", "parse_budget_spec",
}  # fmt: skip


def test_the_root_exports_the_public_names() -> None:
    assert set(tokenward.__all__) == ROOT
    for name in tokenward.__all__:
        assert getattr(tokenward, name) is not None


def test_a_subpackage_is_an_attribute_of_the_root() -> None:
    # the root's names are imported on first use; a subpackage read as an attribute still is one
    assert tokenward.sdk.Guard is tokenward.Guard
    assert "Guard" in dir(tokenward)


def test_the_unattributed_call_warning_is_a_runtime_warning() -> None:
    """Issue 15 item 2: filterable as any warning; pytest's ``error::UserWarning:tokenward``
    setting does not turn it into an error."""
    assert issubclass(tokenward.UnattributedCallWarning, RuntimeWarning)
    assert not issubclass(tokenward.UnattributedCallWarning, UserWarning)
    assert issubclass(tokenward.UnattributedCall, tokenward.TokenwardError)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tokenward.UnattributedCallWarning)
        warnings.warn("x", tokenward.UnattributedCallWarning, stacklevel=1)
