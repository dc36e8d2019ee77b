"""The README's "Try it", run as a newcomer runs it (issue 15 items 10 and 11).

``tokenward serve --config examples/tokenward.yaml`` runs as a real process on a fresh ledger (the
example config copied into a temporary folder, so ``examples/tokenward.db`` is new), and must
print one ready line with its URL, ledger and numbers of budgets and keys. Then every fenced
``python`` and ``sh`` block of the README's "Try it" section runs verbatim, in order, from that
folder, with the virtual environment's ``python`` and ``tokenward`` first on the PATH (as the
README assumes); the only change made to a block is the gateway's port, since 8080 may be taken
on a shared machine. The blocks set a budget, make calls until one is refused, create a key and
read the ledger: what they print is checked against the README's own numbers.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port
from tokenward.gateway.workers import default_workers

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def try_it_blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block of the README's "Try it" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Try it\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, str]]:
    """``tokenward serve`` on the example config, in a fresh folder: (folder, port, ready line)."""
    folder = tmp_path_factory.mktemp("try-it")
    (folder / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "tokenward.yaml", folder / "examples" / "tokenward.yaml")
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("TOKENWARD_LEDGER", None)
    process = subprocess.Popen(
        [str(BIN / "tokenward"), "serve", "--config", "examples/tokenward.yaml", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True)
    reader.start()  # read in a thread: a gateway that never says it is ready cannot hang the test
    try:
        ready, seen = None, []
        deadline = time.monotonic() + 60
        while ready is None and time.monotonic() < deadline and (process.poll() is None or not lines.empty()):
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(line)
            if "tokenward gateway ready" in line:
                ready = line.strip()
        assert ready is not None, "".join(seen)
        yield folder, port, ready
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()


def test_serve_prints_one_ready_line(gateway: tuple[Path, int, str]) -> None:
    folder, port, ready = gateway
    ledger = folder / "examples" / "tokenward.db"
    workers = default_workers()  # the README's command runs one worker per core (SQLite ledger)
    assert ready == (
        f"tokenward gateway ready on http://127.0.0.1:{port} - ledger sqlite:///{ledger} - "
        "2 budgets, 1 key, 1 admin key - upstreams: fake (in-process fake)"
        + (f" - {workers} workers" if workers > 1 else "")
    )
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"


def test_the_readme_try_it_blocks_run_verbatim(gateway: tuple[Path, int, str]) -> None:
    folder, port, _ = gateway
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "200"}
    for name in ("TOKENWARD_LEDGER", "TOKENWARD_GATEWAY", "TOKENWARD_ADMIN_KEY"):
        env.pop(name, None)
    outputs = []
    blocks = try_it_blocks()
    assert [lang for lang, _ in blocks] == ["sh", "python", "text", "json", "python", "sh", "sh", "sh"]
    for lang, code in blocks:
        if lang not in ("python", "sh"):
            continue
        code = code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        command = ["python", "-c", code] if lang == "python" else ["bash", "-e", "-c", code]
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (code, result.stdout, result.stderr)
        outputs.append(result.stdout)
    budget_set, spend, anthropic_call, curl, ledger_reads, keys = outputs
    assert "budget try-it-tokens set: session=try-it total_tokens limit 100" in budget_set
    # The README's numbers: three calls of 6 + 20 = 26 tokens, then the budget refuses the fourth.
    lines = spend.strip().splitlines()
    assert [line.split(" tokens:")[0] for line in lines[:3]] == ["1 26", "2 26", "3 26"]
    assert lines[3].startswith(
        "4 402 budget 'try-it-tokens' (session 'try-it', total_tokens) exceeded: limit 100, used 78, held 0"
    )
    assert len(lines) == 4
    assert "hello" in anthropic_call and '"usage"' in curl
    # events: 3 + 1 + 1 calls; balances of the session: 78 of 100 spent
    assert ledger_reads.count("gpt-4o-mini") == 4 and "claude-sonnet-4-6" in ledger_reads
    row = next(line for line in ledger_reads.splitlines() if "try-it-tokens" in line)
    assert re.search(r"│\s*100\s*│\s*78\s*│\s*0\s*│\s*22\s*│", row), row
    assert "key key_" in keys and "(my-agent) created" in keys and "try-it-tokens" in keys
