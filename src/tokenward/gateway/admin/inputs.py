"""Checks of what the admin API is sent: amounts, meters, subjects and ids.

Every value is checked before it reaches the ledger, so a bad one is a 400 naming the field and
never a database error: an amount is a finite number of at most :data:`MAX_AMOUNT` in size with at
most :data:`MAX_PLACES` decimal places (so every backend stores and adds it exactly: 15 + 12
digits fit Python's 28-digit decimal context, SQLite's text columns, PostgreSQL's ``numeric`` and
Redis's 10^-18 sub-units); a meter is a built-in one or the meter of an existing budget; a subject
names known scopes with well-formed values; an id is a string; free text (a reason, a key's
name or user) holds no control characters (PostgreSQL refuses U+0000 in text and JSON).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from tokenward.core.budgets import METERS, SCOPES, Budget, Subject

__all__ = [
    "MAX_AMOUNT",
    "MAX_PLACES",
    "InputError",
    "amount",
    "amounts",
    "identifier",
    "subject",
    "text",
    "whole_number",
]

MAX_AMOUNT = Decimal(10) ** 15
"""The largest amount (tokens, USD, calls) an adjustment or a budget limit may name."""

MAX_PLACES = 12
"""The most decimal places an amount may have."""

_VALUE = re.compile(r"^[\w.:@/=\-]{1,200}$")
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")


class InputError(ValueError):
    """A value the admin API refuses (400), naming the field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message, self.field = message, field


def amount(value: Any, field: str) -> Decimal:
    """``value`` (a JSON number or a decimal string) as an exact amount.

    Raises:
        InputError: not a number, not finite, too large or too finely divided.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InputError(f"{field} must be a number (or a decimal string), got {type(value).__name__}", field)
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InputError(f"{field} must be a number, got {str(value)[:40]!r}", field) from None
    if not number.is_finite() or abs(number) > MAX_AMOUNT:
        raise InputError(f"{field} must be a finite number of at most 10^15 in size", field)
    exponent = number.normalize().as_tuple().exponent  # 0.10 has one place, not two
    if isinstance(exponent, int) and exponent < -MAX_PLACES:
        raise InputError(f"{field} must have at most {MAX_PLACES} decimal places", field)
    return number + 0  # a plain value: 1E+3 stays exact, signs and zeros normalised by addition


def amounts(raw: Any, budgets: Iterable[Budget], target: Budget | None) -> dict[str, Decimal]:
    """An adjustment's ``amounts``: meters mapped to signed amounts.

    A meter must be a built-in one (:data:`~tokenward.core.budgets.METERS`) or the meter of an
    existing budget (a custom meter); an adjustment of one named budget may only name that
    budget's meter, since it changes nothing else.

    Raises:
        InputError: not a non-empty mapping, an unknown meter, or a bad amount.
    """
    if not isinstance(raw, Mapping) or not raw:
        raise InputError("amounts must map meters to signed amounts", "amounts")
    known = set(METERS) | {b.meter for b in budgets}
    out = {}
    for meter, value in raw.items():
        if target is not None and meter != target.meter:
            raise InputError(f"amounts.{meter}: budget {target.name!r} counts {target.meter} only", "amounts")
        if meter not in known:
            raise InputError(
                f"amounts: unknown meter {str(meter)[:40]!r}; known: {', '.join(sorted(known))}", "amounts"
            )
        out[meter] = amount(value, f"amounts.{meter}")
    return out


def text(value: Any, field: str, *, longest: int = 200, lines: bool = False) -> str | None:
    """An optional piece of free text: None, or a string of 1 to ``longest`` characters without
    control characters (tabs and line breaks allowed with ``lines``).

    Raises:
        InputError: any other value.
    """
    if value is None:
        return None
    allowed = "\t\n\r" if lines else ""
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > longest
        or any((ord(c) < 0x20 or ord(c) == 0x7F) and c not in allowed for c in value)
    ):
        raise InputError(f"{field} must be text of 1-{longest} characters without control characters", field)
    return value


def whole_number(value: str) -> int | None:
    """A whole number written in a query parameter, or None when it is not one: 1 to 18 ASCII
    digits, so below 10^18 and within a 64-bit database integer (``str.isdigit`` also accepts
    ``²`` and other digits ``int`` refuses, and ``int`` refuses more than 4,300 digits)."""
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def identifier(value: Any, field: str) -> str | None:
    """An optional id (an adjustment's idempotency key, a budget's instance): None or a string
    of 1-200 letters, digits and ``_.:-`` (``subject_id`` may also hold ``/``, ``@`` and ``=``).

    Raises:
        InputError: any other value (an integer id would otherwise be ignored, and a retried
            request applied twice).
    """
    if value is None:
        return None
    pattern = _VALUE if field == "subject_id" else _ID
    if not isinstance(value, str) or not pattern.match(value):
        raise InputError(f"{field} must be a string of 1-200 letters, digits and _.:-", field)
    return value


def subject(raw: Any) -> Subject:
    """An adjustment's ``subject``: scopes mapped to values, and optional ``tags``.

    Raises:
        InputError: not a mapping, an unknown scope, a malformed value, or no scope at all.
    """
    if not isinstance(raw, Mapping):
        raise InputError("subject must map scopes to values", "subject")
    unknown = set(raw) - set(SCOPES) - {"tags"}
    if unknown:
        raise InputError(
            f"subject: unknown scopes {sorted(map(str, unknown))}; known: {', '.join(SCOPES)}, tags",
            "subject",
        )
    tags = raw.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise InputError("subject.tags must map tag names to values", "subject")
    for name, value in [*((s, raw[s]) for s in SCOPES if s in raw), *tags.items()]:
        if not isinstance(value, str) or not _VALUE.match(value) or not _VALUE.match(str(name)):
            raise InputError(f"subject.{name}: use 1-200 letters, digits and _.:@/=-", "subject")
    if not any(s in raw for s in SCOPES) and not tags:
        raise InputError("subject names no scope", "subject")
    return Subject.from_dict(raw)
