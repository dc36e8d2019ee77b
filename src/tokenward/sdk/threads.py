"""Attribution across thread pools, and calls that carry none.

Python threads do not inherit the caller's :mod:`contextvars`, so a call made in a
:class:`concurrent.futures.ThreadPoolExecutor` worker (the usual way to fan out a batch:
``pool.submit(work, item)``) would be charged to no session or task. While an SDK
:class:`~tokenward.Guard` is open, :func:`hold` patches ``ThreadPoolExecutor.submit`` so that a
function submitted inside a session or task runs with that attribution (tokenward's own context
variable only; other context variables are left as Python leaves them). ``loop.run_in_executor``
goes through ``submit`` (of the loop's default executor or the one given), so it is covered too;
``asyncio.to_thread`` copies the whole context by itself. The patch is reversible: it is removed
when the last open guard is closed (or garbage-collected), and submitting outside any session
or task runs exactly the original code path.

What still cannot be known (a raw :class:`threading.Thread`, an executor of another kind) is an
*unattributed call*: see :class:`UnattributedCalls`.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
import warnings
from typing import Any, Literal

from tokenward.core.budgets import Subject
from tokenward.errors import ConfigError, UnattributedCall, UnattributedCallWarning
from tokenward.sdk.context import Attribution, carrying, current

__all__ = ["UNATTRIBUTED_POLICIES", "UnattributedCalls", "hold", "patched", "release"]

UNATTRIBUTED_POLICIES = ("warn", "raise", "ignore")
"""What a guard does with an unattributed call (``Guard(on_unattributed=...)``)."""

_lock = threading.Lock()
_holders = 0
_original_submit = concurrent.futures.ThreadPoolExecutor.submit


def _submit(self: concurrent.futures.ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    attribution = current()
    if attribution != Attribution():
        fn = carrying(attribution, fn)
    return _original_submit(self, fn, *args, **kwargs)


def hold() -> None:
    """One more open guard: patch ``ThreadPoolExecutor.submit`` if it is the first."""
    global _holders
    with _lock:
        _holders += 1
        if _holders == 1:
            concurrent.futures.ThreadPoolExecutor.submit = _submit  # type: ignore[method-assign,assignment]


def release() -> None:
    """One guard fewer: restore the original ``submit`` after the last."""
    global _holders
    with _lock:
        _holders = max(0, _holders - 1)
        if _holders == 0:
            concurrent.futures.ThreadPoolExecutor.submit = _original_submit  # type: ignore[method-assign]


def patched() -> bool:
    """Whether ``ThreadPoolExecutor.submit`` carries the attribution now."""
    return concurrent.futures.ThreadPoolExecutor.submit is _submit


# Frames of these packages are not the call site a user wrote.
_LIBRARIES = ("tokenward", "openai", "anthropic", "httpx", "httpx2", "httpcore", "httpcore2", "h11",
              "anyio", "sniffio", "langchain", "langchain_core", "langchain_openai", "pydantic_ai",
              "agents", "concurrent", "asyncio", "threading", "contextlib", "functools",
              "contextvars")  # fmt: skip


def _call_site() -> tuple[str, int, str]:
    """``(filename, line, module)`` of the innermost frame outside the libraries on the way."""
    frame = sys._getframe(1)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module.split(".")[0] not in _LIBRARIES:
            return frame.f_code.co_filename, frame.f_lineno, module
        frame = frame.f_back  # type: ignore[assignment]
    return "<unknown>", 0, "<unknown>"


class UnattributedCalls:
    """The guard's watch for unattributed calls.

    A call is *unattributed* when no session, task or other attribution of its own is in force
    where it is made (it would be charged to the guard's defaults alone) while the guard has a
    session or task open elsewhere (another thread or task), so it probably belongs to that work
    but none of its budgets can apply. Calls made while no session or task is open (a script
    whose budgets are the guard's own) never are.

    Args:
        policy: ``warn`` (default: :class:`~tokenward.UnattributedCallWarning`, once per call
            site), ``raise`` (:class:`~tokenward.errors.UnattributedCall` from the SDK call) or
            ``ignore``.

    Raises:
        ConfigError: an unknown policy.
    """

    def __init__(self, policy: Literal["warn", "raise", "ignore"] = "warn") -> None:
        if policy not in UNATTRIBUTED_POLICIES:
            raise ConfigError(f"on_unattributed must be warn, raise or ignore, got {policy!r}")
        self.policy = policy
        self.open = 0
        self._warned: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def opened(self) -> None:
        """A session or task was entered."""
        with self._lock:
            self.open += 1

    def closed(self) -> None:
        """A session or task was left."""
        with self._lock:
            self.open = max(0, self.open - 1)

    def check(self, defaults: Subject) -> None:
        """Called by the wrapped client before each guarded call.

        Raises:
            UnattributedCall: the call is unattributed and the policy is ``raise``.
        """
        if self.policy == "ignore" or self.open == 0 or current().subject != Subject():
            return
        file, line, module = _call_site()
        who = ", ".join(f"{k}={v}" for k, v in defaults.to_dict().items() if k != "tags") or "nobody"
        message = (
            f"an LLM call made outside every session and task while the guard has {self.open} open "
            f"(in another thread or task) is charged to the guard's defaults only ({who}): the budgets "
            "of those sessions and tasks do not apply to it. Run the work in the thread with "
            "tokenward.sdk.bind(fn) (or submit it to a ThreadPoolExecutor, which carries the "
            "attribution), or inside guard.session()/guard.task(); Guard(on_unattributed='ignore') "
            "silences this"
        )
        if self.policy == "raise":
            raise UnattributedCall(message)
        with self._lock:
            if (file, line) in self._warned:
                return
            self._warned.add((file, line))
        warnings.warn_explicit(
            message, UnattributedCallWarning, os.fspath(file), line, module=module, registry={}
        )
