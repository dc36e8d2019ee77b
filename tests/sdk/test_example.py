"""The README's SDK example runs offline and ends with a partial answer within its budget."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agent_loop.py"


def test_agent_loop_example_finishes_gracefully() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "partial answer after" in result.stdout
    spent = re.search(r"tokens spent: (\d+) of 1200", result.stdout)
    assert spent and int(spent.group(1)) <= 1200
