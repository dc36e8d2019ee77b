"""Writing exact amounts for people and JSON (a leaf: the exception tree and the core use it)."""

from __future__ import annotations

from decimal import Decimal

__all__ = ["plain"]


def plain(value: Decimal | int) -> str:
    """An amount as a plain decimal string without exponent or trailing zeros (``0E-8`` → ``"0"``,
    ``Decimal("1.50")`` → ``"1.5"``, ``Decimal("1E+2")`` → ``"100"``)."""
    if isinstance(value, int):
        return str(value)
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text
