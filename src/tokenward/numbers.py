"""Writing exact amounts for people and JSON (a leaf: the exception tree and the core use it)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal

__all__ = ["plain"]


def plain(value: Decimal | int, *, places: int | None = None) -> str:
    """An amount as a plain decimal string without exponent or trailing zeros (``0E-8`` → ``"0"``,
    ``Decimal("1.50")`` → ``"1.5"``, ``Decimal("1E+2")`` → ``"100"``): how every amount a person
    reads is written (money, tokens, shares). Exact whatever its number of digits (no rounding to
    the decimal context's precision).

    Args:
        value: the amount.
        places: round to this many decimal places first (half up), for display; exact otherwise.
    """
    if isinstance(value, int):
        return str(value)
    if places is not None and value.is_finite():
        digits = len(value.as_tuple().digits) + abs(int(value.as_tuple().exponent)) + places
        context = Context(prec=max(28, digits + 2))
        value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP, context=context)
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "0", "") else text
