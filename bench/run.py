"""Run every benchmark: ``python bench/run.py``. Figures are ratios measured side by side."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

for name in ("gateway", "sdk", "replay", "accounting", "report", "ledger", "backends", "batch", "dashboard"):
    print(f"== {name}")
    sys.argv = [str(HERE / f"{name}.py")]
    runpy.run_path(str(HERE / f"{name}.py"), run_name="__main__")
