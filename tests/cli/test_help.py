"""``--help`` on every command and ``--version``, as a newcomer runs them."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest
import typer
from typer.testing import CliRunner

from tokenward.cli.main import app

runner = CliRunner()


def _paths() -> list[list[str]]:
    """Every command and group of the CLI, as the words that name it (the root is [])."""
    found: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        found.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


PATHS = _paths()


def test_the_tree_is_walked() -> None:
    names = {" ".join(p) for p in PATHS}
    assert {"", "replay", "budgets set", "keys list", "report chargeback", "report chart"} <= names
    assert len(PATHS) > 25


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "tokenward")
def test_help_works_everywhere(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.strip()) > 40
    # Classic metavars: no Python annotations (<bool>, <str>, <list[Path]>), no {argument}.
    assert not re.search(r"<(bool|str|int|float|path|list\[\w+\])>", result.output), result.output
    assert not re.search(r"\{[a-z_]+\}", result.output), result.output


def test_help_shows_the_spec_syntax_verbatim() -> None:
    for path in (["replay"], ["budgets", "set"]):
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, result.output
        assert "SCOPE[=ID]:METER=LIMIT[/WINDOW]" in result.output


def test_flags_take_no_metavar_and_values_show_their_type() -> None:
    result = runner.invoke(app, ["estimate", "--help"])
    assert "Usage: tokenward estimate [OPTIONS] REQUEST" in " ".join(result.output.split())
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ --")}
    assert lines["--json"].split()[2] == "Print"  # no metavar between the flag and its help
    assert lines["--help"].split()[2] == "Show"
    assert lines["--prices"].split()[2] == "PATH"
    assert lines["--model"].split()[2] == "TEXT"
    imported = " ".join(runner.invoke(app, ["import", "--help"]).output.split())
    assert "[OPTIONS] TRACES..." in imported and "traces... PATH" in imported


def test_events_json_help_says_what_it_prints() -> None:
    result = runner.invoke(app, ["events", "--help"])
    assert "JSON array" in result.output and "JSON lines" not in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"tokenward {version('tokenward')}"
