"""The import graph of tokenward follows the layers of DESIGN.md, and has no cycles.

The contracts are import-linter's, in ``pyproject.toml`` (``[tool.importlinter]``); ``lint-imports``
checks them here. grimp, the graph under import-linter, also answers what its contracts cannot:
cycles between single modules (a package's ``__init__`` and its own parts included), and whether
the graph sees everything. Every import counts: at module level, inside functions and under
``TYPE_CHECKING`` alike.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "tokenward"

CORE_MAY_IMPORT = {"tokenward.clock", "tokenward.errors", "tokenward.numbers"}
"""What the pure core imports of ours outside itself: the exception tree, the clock and number
formatting, leaves that import nothing above them."""


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("tokenward", cache_dir=None)


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def test_the_import_contracts_are_kept() -> None:
    command = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    done = subprocess.run(  # in a process of its own: it configures logging for the whole process
        [sys.executable, "-c", command, str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in done.stdout


def test_no_module_imports_itself_back(graph: grimp.ImportGraph) -> None:
    cycles = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycle = [importer, *back[:-1]]
                start = cycle.index(min(cycle))
                cycles.add(" -> ".join([*cycle[start:], *cycle[: start + 1]]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_the_core_contract_forbids_every_other_part(graph: grimp.ImportGraph) -> None:
    parts = graph.find_children("tokenward")
    forbidden = set(_contracts()["core"]["forbidden_modules"])
    assert parts - {"tokenward.core"} - CORE_MAY_IMPORT == forbidden
    outside = {
        imported
        for module in graph.find_descendants("tokenward.core") | {"tokenward.core"}
        for imported in graph.find_modules_directly_imported_by(module)
        if imported != "tokenward.core" and not imported.startswith("tokenward.core.")
    }
    assert outside <= CORE_MAY_IMPORT  # the root package itself included, which the contract cannot name


def test_the_graph_sees_every_module_and_every_kind_of_import(graph: grimp.ImportGraph) -> None:
    files = {
        ".".join(path.relative_to(SOURCE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in SOURCE.rglob("*.py")
    }
    missing = files - set(graph.modules)
    assert not missing, f"modules the graph does not see (a folder without __init__.py?): {sorted(missing)}"
    # Inside a function: the URL registry imports a backend only when its URL is used.
    assert graph.direct_import_exists(importer="tokenward.ledger", imported="tokenward.ledger.redis")
    # Under TYPE_CHECKING: the telemetry observer names the guard's Admission.
    assert graph.direct_import_exists(importer="tokenward.observe.telemetry", imported="tokenward.guard.flow")
