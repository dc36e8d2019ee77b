"""Session-wide fixtures: the recorded traces are parsed once per test session."""

from __future__ import annotations

import pytest

from tests.support.shared import DEEPSEEK_TRACES, GEMINI_TRACES, require
from tokenward.replay import TraceCall, read_traces

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(scope="session")
def gemini_calls() -> list[TraceCall]:
    """Every call of the Gemini 3 Pro SWE-bench Verified recording (20,163 calls)."""
    return read_traces(require(GEMINI_TRACES))


@pytest.fixture(scope="session")
def deepseek_calls() -> list[TraceCall]:
    """Every call of the DeepSeek SWE-bench Lite recording (14,250 calls)."""
    return read_traces(require(DEEPSEEK_TRACES))
