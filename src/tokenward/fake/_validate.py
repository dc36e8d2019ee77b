"""Type checks of request bodies: each failure is a :class:`ValidationError` naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenward.errors import ValidationError

__all__ = ["json_type", "optional_bool", "optional_int", "optional_list", "optional_object", "required_str"]


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def required_str(body: Mapping[str, Any], name: str, missing: str) -> str:
    """``body[name]`` as a non-empty string; ``missing`` is the message when it is absent."""
    value = body.get(name)
    if value is None or value == "":
        raise ValidationError(missing, field=name)
    if not isinstance(value, str):
        raise ValidationError(f"{name}: expected a string, got {json_type(value)}", field=name)
    return value


def optional_bool(body: Mapping[str, Any], name: str) -> bool | None:
    """``body[name]`` as a boolean, or None when absent or null."""
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise ValidationError(f"{name}: expected a boolean, got {json_type(value)}", field=name)
    return value


def optional_int(body: Mapping[str, Any], name: str, low: int) -> int | None:
    """``body[name]`` as a whole number >= ``low``, or None when absent or null."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name}: expected an integer, got {json_type(value)}", field=name)
    if value < low:
        raise ValidationError(f"{name}: must be >= {low}, got {value}", field=name)
    return value


def optional_list(body: Mapping[str, Any], name: str) -> list[Any] | None:
    """``body[name]`` as an array, or None when absent or null."""
    value = body.get(name)
    if value is not None and not isinstance(value, list):
        raise ValidationError(f"{name}: expected an array, got {json_type(value)}", field=name)
    return value


def optional_object(body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """``body[name]`` as an object, or None when absent or null."""
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        raise ValidationError(f"{name}: expected an object, got {json_type(value)}", field=name)
    return value


def optional_choice(body: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str | None:
    """``body[name]`` as one of ``choices``, or None when absent or null."""
    value = body.get(name)
    if value is not None and value not in choices:
        raise ValidationError(f"{name}: expected one of {', '.join(choices)}, got {value!r}", field=name)
    return value
