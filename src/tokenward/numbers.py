"""Writing exact amounts for people and JSON (a leaf: the exception tree and the core use it)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

__all__ = ["plain"]


def plain(value: Decimal | int, *, places: int | None = None) -> str:
    """An amount as a plain decimal string without exponent or trailing zeros (``0E-8`` → ``"0"``,
    ``Decimal("1.50")`` → ``"1.5"``, ``Decimal("1E+2")`` → ``"100"``): how every amount a person
    reads is written (money, tokens, shares).

    Args:
        value: the amount.
        places: round to this many decimal places first (half up), for display; exact otherwise.
    """
    if isinstance(value, int):
        return str(value)
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text
