"""Profile one gateway process under load: the functions that take its time, by own time.

    python bench/profile_gateway.py [--before TREE] [--clients 10] [--stream] [--seconds 15] [--soak S]

Starts bench/gateway.py's mock upstream and one gateway process (``--workers 1``, SQLite, the
budgets of bench/gateway.yaml), loads it with wrk, samples it with py-spy (``pip install py-spy``)
at 200 Hz for ``--seconds``, and prints the top functions by own time (bench/own_time.py). With
``--before TREE`` the gateway runs from an older source tree, uvloop and httptools hidden, as
``bench/gateway.py --before`` does. With ``--soak S`` it then loads the same process for ``S``
seconds more and profiles it again: what costs more once the ledger holds many calls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import free_port  # noqa: E402

from gateway import _script, running, wrk  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--tree", type=Path, default=None, help="run the gateway from this source tree")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--sessions", type=int, default=1, help="spread the calls over this many sessions")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--ledger-from", type=Path, default=None, metavar="FILE",
        help="start from a copy of this SQLite ledger (one grown by a long run) instead of an empty one",
    )  # fmt: skip
    parser.add_argument(
        "--soak", type=int, default=0, metavar="SECONDS",
        help="then load it for SECONDS more and profile it again (what grows with the ledger's age)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="keep the raw profile here")
    parser.add_argument(
        "--gil", action="store_true", help="only samples holding the GIL: Python's own CPU time, no waiting"
    )
    args = parser.parse_args()
    for tool in ("wrk", "py-spy"):
        if shutil.which(tool) is None and not (Path(sys.executable).parent / tool).exists():
            sys.exit(f"{tool} is not installed")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    work = Path(tempfile.mkdtemp(prefix="tw-profile-"))
    mock_port, port = free_port(), free_port()
    mock_url, gw_url = f"http://127.0.0.1:{mock_port}", f"http://127.0.0.1:{port}"
    (work / "gateway.yaml").write_text((HERE / "gateway.yaml").read_text().replace("${MOCK_URL}", mock_url))
    mock = [
        sys.executable, "-m", "uvicorn", "mock_upstream:app", "--app-dir", str(HERE), "--port", str(mock_port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    gateway = [
        sys.executable, "-m", "tokenward.cli", "serve", "--config", str(work / "gateway.yaml"),
        "--ledger", f"sqlite:///{work / 'ledger.db'}", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    env = {"BENCH_UPSTREAM_KEY": "sk-bench"}
    if args.before is None:
        gateway += ["--workers", "1"]
        if args.tree is not None:
            env["PYTHONPATH"] = str(args.tree.resolve() / "src")
    else:
        block = work / "blocked"
        block.mkdir()
        for name in ("uvloop", "httptools"):
            (block / f"{name}.py").write_text("raise ImportError('hidden for the before run')\n")
        env["PYTHONPATH"] = f"{args.before.resolve() / 'src'}:{block}"
    if args.ledger_from is not None:
        shutil.copyfile(args.ledger_from, work / "ledger.db")
    raw = args.out or work / "profile.raw"
    headers = {"authorization": "Bearer tw-bench", "x-tokenward-session": "bench"}
    script = _script(work, "load", args.stream, headers, args.sessions)
    label = "before" if args.before else "after"
    with (
        running(mock, f"{mock_url}/healthz", work / "mock.log"),
        running(gateway, f"{gw_url}/healthz", work / "gateway.log", env) as pid,
    ):
        url = f"{gw_url}/v1/chat/completions"
        wrk(url, script, args.clients, 3, None)  # warm up
        _profile(spy, pid, url, script, args, raw, label)
        if args.soak:
            soaked = wrk(url, script, args.clients, args.soak, pid)
            print(
                f"soak: {soaked['requests']} calls in {args.soak} s, CPU {soaked['cpu_ms_per_call']:.2f} ms per call"
            )
            _profile(spy, pid, url, script, args, raw.with_suffix(".soaked.raw"), f"{label}, after the soak")


def _profile(
    spy: str, pid: int, url: str, script: Path, args: argparse.Namespace, raw: Path, label: str
) -> None:
    """Load the gateway with wrk while py-spy samples it; print the load's figures and the top
    functions by own time."""
    result: dict[str, float] = {}
    load = threading.Thread(
        target=lambda: result.update(wrk(url, script, args.clients, args.seconds + 4, pid)), daemon=True
    )
    load.start()
    subprocess.run(
        [spy, "record", "-p", str(pid), "-d", str(args.seconds), "-r", "200", "-f", "raw", "-o", str(raw),
         "--threads", "--nonblocking", *(["--gil"] if args.gil else [])],
        check=True, capture_output=True,
    )  # fmt: skip
    load.join()
    print(
        f"{label}: {args.clients} clients, {'streamed' if args.stream else 'non-streamed'}: "
        f"{result['rps']:.0f} requests/s, p50 {result['p50_ms']:.1f} ms, CPU {result['cpu_ms_per_call']:.2f} ms per call "
        f"(load {os.getloadavg()[0]:.1f})"
    )
    subprocess.run([sys.executable, str(HERE / "own_time.py"), str(raw), "--top", str(args.top)], check=True)


if __name__ == "__main__":
    main()
