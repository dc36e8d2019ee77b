"""The command classes every ``tokenward`` command and group is built with, so that ``--help``
shows the usual metavars whatever Typer version is installed.

Recent Typer releases label each option with its Python annotation in angle brackets
(``--json <bool>``, ``--help <bool>``, ``TRACES <list[Path]>``) and write required arguments as
``{request}``. tokenward's help follows the common command-line convention instead: a flag takes
no value and shows none, a value shows ``TEXT``, ``INTEGER``, ``FLOAT`` or ``PATH``, and the usage
line names arguments in capitals (``REQUEST``, ``TRACES...``, ``[NAME]`` when optional).

Typer builds its own option and argument objects, so :class:`Command` and :class:`Group` give
each parameter the classic display when the command lists its parameters (for help, usage and
errors). The parameter classes below only override how a parameter is displayed; parsing,
defaults and values are Typer's own. With Typer releases that still render help through Click's
metavars these overrides are simply never called.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePath
from typing import Any, get_args, get_origin

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["Command", "Group", "classic_metavar"]

_NAMES: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "FLOAT", bool: "BOOLEAN", datetime: "DATETIME"}


def classic_metavar(param: Any) -> str:
    """The metavar Click would show for a Typer parameter's type (``TEXT``, ``PATH``, ``[a|b]``)."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None:  # a Typer that renders Click's metavars never asks
        return str(param.name).upper()
    choices = descriptor.choices
    if choices:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in choices) + "]"
    annotation = descriptor.annotation
    if get_origin(annotation) in (list, tuple) and get_args(annotation):
        annotation = get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "PATH"
    if annotation in _NAMES:
        return _NAMES[annotation]
    return str(getattr(annotation, "__name__", "VALUE")).upper()


class _ClassicOption(TyperOption):
    """An option displayed the classic way: flags show no metavar, values their type's."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return str(self.metavar)
        return classic_metavar(self) + ("..." if self.nargs != 1 else "")


class _ClassicArgument(TyperArgument):
    """An argument displayed the classic way: ``PATH`` in the type column, ``REQUEST`` in usage."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return classic_metavar(self)

    def _usage_display_name(self) -> str:
        name = str(self.metavar or self.name or "").upper()
        if not self.required:
            name = f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")


def _classic(params: list[Any]) -> list[Any]:
    for param in params:
        # The subclasses add no state, only display methods, so the object is switched in place
        # (Typer constructs the parameters itself and offers no hook to choose their class).
        if type(param) is TyperOption:
            param.__class__ = _ClassicOption
        elif type(param) is TyperArgument:
            param.__class__ = _ClassicArgument
    return params


class Command(TyperCommand):
    """A tokenward command: Typer's, with classic metavars in its help."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _classic(list(super().get_params(ctx)))


class Group(TyperGroup):
    """A tokenward command group: Typer's, with classic metavars in its help."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _classic(list(super().get_params(ctx)))
