"""Fixtures of the observe tests: the recorded traces imported once per test session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.shared import DEEPSEEK_TRACES, GEMINI_TRACES, require
from tokenward.clock import ManualClock
from tokenward.ledger import Ledger, open_ledger


def _import(path: Path, tag: str) -> Ledger:
    import tokenward.cli.main  # noqa: F401  (the CLI package, imported in its usual order)
    from tokenward.cli.import_cmd import import_traces

    ledger = open_ledger("memory://", clock=ManualClock())
    import_traces([path], ledger, tags={"dataset": tag})
    return ledger


@pytest.fixture(scope="session")
def raw_traces() -> dict[str, list[dict[str, Any]]]:
    """Both recordings as plain JSON rows, read without any tokenward code."""
    out = {}
    for name, path in (("deepseek", DEEPSEEK_TRACES), ("gemini", GEMINI_TRACES)):
        with require(path).open(encoding="utf-8") as handle:
            out[name] = [json.loads(line) for line in handle if line.strip()]
    return out


@pytest.fixture(scope="session")
def imported() -> dict[str, Ledger]:
    """Both recordings imported into memory ledgers (tag ``dataset`` = deepseek / gemini)."""
    return {
        "deepseek": _import(require(DEEPSEEK_TRACES), "deepseek"),
        "gemini": _import(require(GEMINI_TRACES), "gemini"),
    }
