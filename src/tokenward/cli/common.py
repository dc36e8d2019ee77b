"""What every ``tokenward`` command shares: the consoles, one-line errors, JSON output and the
command classes. The command modules import from here, not from :mod:`tokenward.cli.main`, so any
of them can be imported on its own (``from tokenward.cli.reprice_cmd import reprice_report``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from tokenward.cli.helpstyle import Command, Group
from tokenward.errors import TokenwardError

__all__ = ["PIPE_WIDTH", "Command", "Group", "err", "friendly", "out", "print_json"]

PIPE_WIDTH = 1000
"""Columns a table may take when the output is not a terminal (a pipe, a file, a test)."""


class _Console(Console):
    """A Rich console that, writing to something other than a terminal, does not cut tables and
    lines at 80 columns: piped output keeps whole ids (``tokenward keys list | grep ...``). In a
    terminal it uses the terminal's width, and ``COLUMNS`` wins whenever it is set."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal or os.environ.get("COLUMNS"):
            return size
        return ConsoleDimensions(PIPE_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


# no emoji codes: ids and budget specs hold colons (``user=b:b:...`` printed a "B" emoji)
err = _Console(stderr=True, emoji=False)
out = _Console(emoji=False)

F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """Turn tokenward's own errors into a one-line message and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TokenwardError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    """Write JSON to stdout (no colour, so other tools can read it)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
