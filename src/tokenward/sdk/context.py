"""Attribution contexts: whom the calls made inside a ``with`` block are charged to.

The current attribution lives in a :class:`contextvars.ContextVar`, so it follows the work into
asyncio tasks on its own (each task starts with a copy of its creator's context), and
``asyncio.to_thread`` copies it. Threads do not copy contexts in Python: while a guard is open,
``ThreadPoolExecutor.submit`` (and so ``loop.run_in_executor``) carries it
(:mod:`tokenward.sdk.threads`); for any other thread, run the work through :func:`bind` (or
``contextvars.copy_context().run``) to keep the attribution.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from tokenward.core.budgets import Subject

__all__ = ["Attribution", "attributed", "bind", "carrying", "current"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Attribution:
    """The attribution in force.

    Attributes:
        subject: whom calls are charged to.
        held_back: a final-answer reserve by meter (tokens, USD) that ordinary calls may not use.
        final: the calls being made are the final answer: they may use the reserve.
        whole: the calls must get their whole output bound or be refused, never clamped (a batch
            record: :mod:`tokenward.batch`).
        budgets: the budgets of the session and task in force, as short forms by scope
            (``{"session": ("total_tokens=30000",)}``): what a gateway is sent to enforce them.
    """

    subject: Subject = field(default_factory=Subject)
    held_back: Mapping[str, Decimal] = field(default_factory=dict)
    final: bool = False
    whole: bool = False
    budgets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


_NONE = Attribution()  # frozen, so safe to share as the default
_current: contextvars.ContextVar[Attribution] = contextvars.ContextVar("tokenward_attribution", default=_NONE)


def current() -> Attribution:
    """The attribution in force here."""
    return _current.get()


@contextmanager
def attributed(
    *,
    held_back: Mapping[str, Decimal] | None = None,
    final: bool | None = None,
    tags: Mapping[str, str] | None = None,
    whole: bool | None = None,
    budgets: Mapping[str, tuple[str, ...]] | None = None,
    **scopes: str | None,
) -> Iterator[Attribution]:
    """Charge the calls made inside the block to a narrower subject.

    Scopes not given keep their outer value; ``tags`` are added to the outer ones. A new session
    or task drops the outer one's ``budgets``; ``budgets`` (short forms by scope) are its own.
    """
    outer = _current.get()
    changes: dict[str, Any] = {k: v for k, v in scopes.items() if v is not None}
    subject = replace(outer.subject, **changes)
    if tags:
        subject = replace(subject, tags=tuple(sorted({**dict(outer.subject.tags), **tags}.items())))
    carried = {s: v for s, v in outer.budgets.items() if s not in changes}
    carried.update(budgets or {})
    inner = Attribution(
        subject=subject,
        held_back=dict(outer.held_back) | dict(held_back or {}),
        final=outer.final if final is None else final,
        whole=outer.whole if whole is None else whole,
        budgets=carried,
    )
    token = _current.set(inner)
    try:
        yield inner
    finally:
        _current.reset(token)


def bind(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to the attribution in force now, for running in another thread::

    executor.submit(tokenward.sdk.bind(work), item)
    """
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def bound(*args: P.args, **kwargs: P.kwargs) -> R:
        return context.copy().run(fn, *args, **kwargs)  # a copy: the same context cannot run twice at once

    return bound


def carrying(attribution: Attribution, fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run with ``attribution`` in force (in whatever thread runs it), and only that:
    the thread's other context variables are left alone."""

    @functools.wraps(fn)
    def carried(*args: P.args, **kwargs: P.kwargs) -> R:
        token = _current.set(attribution)
        try:
            return fn(*args, **kwargs)
        finally:
            _current.reset(token)

    return carried
