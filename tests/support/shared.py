"""The shared data beside the project (``../shared``): cases and recorded traces.

Tests that need it skip with a reason when it is absent (a user's clone has no ``../shared``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CASES_FILE = SHARED / "cases" / "cases.jsonl"
TRACES = SHARED / "data" / "traces"
GEMINI_TRACES = TRACES / "gemini3pro-swebench-verified.jsonl"
DEEPSEEK_TRACES = TRACES / "deepseek-swebench-lite.jsonl"


def require(path: Path) -> Path:
    """``path``, or skip the test with a reason when the shared data is not there."""
    if not path.exists():
        pytest.skip(f"{path} is not available (the shared data sits beside the project in CI)")
    return path


@cache
def cases() -> dict[str, dict[str, Any]]:
    """Every worked case by id."""
    if not CASES_FILE.exists():
        return {}
    return {case["id"]: case for case in map(json.loads, CASES_FILE.read_text().splitlines()) if case}


def case(case_id: str) -> dict[str, Any]:
    """One case, or skip when the cases file is absent."""
    require(CASES_FILE)
    return cases()[case_id]


def variant(base: dict[str, Any], label: str) -> dict[str, Any]:
    """A case's variant with the inheritance the cases README defines (null removes a field)."""
    found = next(v for v in base.get("variants", []) if v.get("label") == label)
    merged = {k: v for k, v in base.items() if k != "variants"}
    for key, value in found.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
