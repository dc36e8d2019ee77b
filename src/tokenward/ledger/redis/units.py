"""Exact conversions between amounts (Decimal) and the Redis ledger's integer sub-units.

An amount is held in Redis as an integer number of 10^-18 of its meter's unit (tokens, USD,
calls), so ``Decimal("0.0884")`` is ``88400000000000000``. Conversions are exact for every amount
with at most 18 decimals; a finer one (which no price table produces) is rounded *up* for holds
and charges (never under-counted) and *down* for limits (never loosened), and the usage event keeps
the exact figure.
"""

from __future__ import annotations

import json
from decimal import Decimal

from tokenward.ledger.redis.lua import SCALE

__all__ = ["field", "from_units", "to_units", "unfield"]

_ONE: int = 10**SCALE


def to_units(amount: Decimal | int, *, up: bool = True) -> int:
    """``amount`` in sub-units, exactly (rounded up, or down with ``up=False``, past 18 decimals).

    Raises:
        ValueError: a non-finite amount.
    """
    if isinstance(amount, int):
        return amount * _ONE
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {amount}")
    sign, digits, exponent = amount.as_tuple()
    value = int("".join(map(str, digits)) or "0")
    shift = int(exponent) + SCALE
    if shift >= 0:
        units: int = value * pow(10, shift)
    else:
        whole, rest = divmod(value, pow(10, -shift))
        # the ceiling with ``up``, the floor without (for either sign)
        units = whole + (1 if rest and (up != bool(sign)) else 0)
    return -units if sign else units


def from_units(units: int | str) -> Decimal:
    """The exact amount of ``units`` sub-units (``88400000000000000`` -> ``Decimal("0.0884")``)."""
    number = int(units)
    negative, number = number < 0, abs(number)
    whole, rest = divmod(number, _ONE)
    text = str(whole) if not rest else f"{whole}.{rest:0{SCALE}d}".rstrip("0")
    return Decimal(f"-{text}" if negative else text)


def field(*parts: str) -> str:
    """The hash field of a balance row (``budget, subject_id, window_key``) or a stop marker
    (``scope, id``): a compact JSON array, unambiguous whatever the strings hold."""
    return json.dumps(parts, separators=(",", ":"), ensure_ascii=False)


def unfield(text: str) -> tuple[str, ...]:
    """Inverse of :func:`field`."""
    return tuple(json.loads(text))
