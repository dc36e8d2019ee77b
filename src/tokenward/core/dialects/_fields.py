"""Reading counts out of provider JSON without turning unknowns into zeros."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenward.core.usage import MAX_COUNT
from tokenward.errors import ValidationError


def dig(raw: Any, *path: str) -> Any:
    """``raw[path[0]][path[1]]...``, or None where any step is missing, null or not a mapping."""
    node = raw
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def count(raw: Any, *path: str) -> int | None:
    """A token count at ``path``: None when absent or null.

    Raises:
        ValidationError: when present but not a whole number from 0 to ``MAX_COUNT`` (2**53 - 1,
            the largest JSON keeps exact); the field is named.
    """
    value = dig(raw, *path)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValidationError(f"{'.'.join(path)} must be a number, got {value!r}", field=path[-1])
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValidationError(
            f"{'.'.join(path)} must be a whole number from 0 to {MAX_COUNT}, got {value!r}",
            field=path[-1],
        )
    return value


def add(*values: int | None) -> int | None:
    """Sum of the known values, or None when none is known."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None
