"""The gateway's own cost (issue 17): a fast mock upstream called directly and through the gateway,
side by side in one run, with budgets on (bench/gateway.yaml: four budgets per call, one on
cost_usd, one rolling over a minute).

    python bench/gateway.py --quick          # a subset, about 5 minutes
    python bench/gateway.py                  # memory, SQLite and Redis; 1, 10, 50 and 200 clients
    python bench/gateway.py --soak 1000000   # then that many calls: CPU per call and RSS against a fresh process

Setup (not in CI): ``apt-get install -y wrk`` (the load generator) and ``pip install -e .``.

The mock (bench/mock_upstream.py) is raw ASGI on uvicorn with httptools and uvloop: 200 prompt and
50 completion tokens, streams of 22 chunks plus a usage chunk. The load comes from wrk (native, one
connection per client, each client sending its next request when the last one ended: a
closed-loop generator, which flatters p99 because a stalled server also slows the arrivals). Each
figure is the median of ``--reps`` interleaved repetitions of a back-to-back pair (the mock
directly, then the gateway); *added* latency is the gateway's percentile minus the direct one in
each pair. CPU per call is the CPU time of the gateway's processes (its workers too) over the run
divided by the calls answered. Streamed latency is to the last byte.

Settle lag (end of an answer to its usage event being durable) comes from the gateway's own
``tokenward_settle_lag_seconds`` histogram (/metrics, every worker added up), read before and after
each run: its p99 is the upper bound of the bucket holding the 99th percentile.

``--tree TREE`` runs the gateway from another source tree (its ``src/`` first on PYTHONPATH) with
everything else the same (uvloop, httptools, workers): an A/B of two commits. ``--before TREE``
hides uvloop and httptools and runs one process, as the gateway ran before issue 17.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import free_port, save  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PROMPT = " ".join(f"word{i % 50}" for i in range(95))  # with the framing, about 200 o200k tokens
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 100}

WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.body = [[%(body)s]]
wrk.headers["content-type"] = "application/json"
%(headers)s
local sessions = %(sessions)d
local counter = 0
if sessions > 1 then
  request = function()
    counter = counter + 1
    wrk.headers["x-tokenward-session"] = "s" .. (counter %% sessions)
    return wrk.format(nil, "%(path)s")
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "p999_us": %%d, '
    .. '"errors": %%d, "status_errors": %%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def _script(work: Path, name: str, stream: bool, headers: dict[str, str], sessions: int) -> Path:
    body = json.dumps(
        {**BODY, "stream": stream, **({"stream_options": {"include_usage": True}} if stream else {})}
    )
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    path = work / f"{name}.lua"
    path.write_text(
        WRK_SCRIPT % {"body": body, "headers": lines, "sessions": sessions, "path": "/v1/chat/completions"}
    )
    return path


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its children, from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            this, parent = int(stat.parent.name), int(fields[1])
            if this == pid or parent == pid:
                total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def _rss_mib(pid: int) -> float:
    total = 0.0
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, ValueError):
            text = status.read_text()
            parent = int(text.split("PPid:", 1)[1].split()[0])
            if int(status.parent.name) == pid or parent == pid:
                total += int(text.split("VmRSS:", 1)[1].split()[0]) / 1024
    return total


def wrk(url: str, script: Path, clients: int, seconds: float, pid: int | None) -> dict[str, float]:
    """One wrk run; ``pid``'s CPU time is measured over it."""
    threads = 1 if clients == 1 else 2
    before = _cpu_seconds(pid) if pid else 0.0
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{clients}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = (_cpu_seconds(pid) - before) if pid else float("nan")
    line = next(x for x in done.stdout.splitlines() if x.startswith('{"requests"'))
    data = json.loads(line)
    calls = max(1, data["requests"])
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "p999_ms": data["p999_us"] / 1000,
        "cpu_ms_per_call": cpu * 1000 / calls,
        "requests": data["requests"],
        "errors": data["errors"] + data["status_errors"],
    }


def settle_lag_buckets(gw_url: str) -> dict[float, float]:
    """The gateway's ``tokenward_settle_lag_seconds`` buckets (upper bound: cumulative count),
    empty when /metrics does not have them (an older tree)."""
    try:
        text = httpx.get(f"{gw_url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("tokenward_settle_lag_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(bound)] = float(line.rsplit(" ", 1)[1])
    return out


def lag_p99_ms(before: dict[float, float], after: dict[float, float]) -> float:
    """The upper bound (ms) of the bucket holding the 99th percentile of the settles between two
    readings; NaN when there were none (or no histogram)."""
    diff = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = diff[-1][1] if diff else 0.0
    if total <= 0:
        return float("nan")
    return next(bound * 1000 for bound, cumulative in diff if cumulative >= 0.99 * total)


@contextlib.contextmanager
def running(args: list[str], ready: str, log: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run a command until the block ends, once ``ready`` answers; yields its pid."""
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            deadline = time.monotonic() + 90
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(ready, timeout=1).status_code < 500:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{args} did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            time.sleep(1.5)  # every worker up
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()


def _redis_up() -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 6379), timeout=1):
        return True
    return False


def _ledger_url(backend: str, work: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{work / 'ledger.db'}"
    prefix = f"twbench{os.getpid()}"
    return f"redis://127.0.0.1:6379/0?prefix={prefix}&spool={work / 'spool.db'}&events=sqlite:///{work / 'events.db'}"


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a subset: about 5 minutes")
    parser.add_argument("--backends", nargs="+", default=None, help="memory sqlite redis")
    parser.add_argument("--clients", type=int, nargs="+", default=None)
    parser.add_argument("--sessions", type=int, nargs="+", default=None, help="1 and/or 1000")
    parser.add_argument("--seconds", type=float, default=None, help="length of each wrk run")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="gateway workers (memory: always 1)")
    parser.add_argument(
        "--soak", type=int, default=0, help="then this many calls, and CPU/RSS before and after"
    )
    parser.add_argument(
        "--tree", type=Path, default=None, help="run the gateway from this source tree (A/B of commits)"
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="run the gateway from this older source tree (its src/ first on PYTHONPATH), in one "
        "process, with uvloop and httptools hidden from it: the figures before issue 17",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:  # not an exit: bench/run.py goes on with the other benchmarks
        print("bench/gateway.py: wrk is not installed (apt-get install -y wrk); skipped")
        return
    quick = args.quick
    backends = args.backends or (["sqlite", "memory", "redis"])
    if "redis" in backends and not _redis_up():
        print("Redis is not reachable on 127.0.0.1:6379: skipped")
        backends.remove("redis")
    clients = args.clients or ([1, 10, 50] if quick else [1, 10, 50, 200])
    sessions_list = args.sessions or ([1] if quick else [1, 1000])
    seconds = args.seconds or (3.0 if quick else 8.0)
    work = Path(tempfile.mkdtemp(prefix="tw-bench-gw-"))
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    config = (HERE / "gateway.yaml").read_text().replace("${MOCK_URL}", mock_url)
    (work / "gateway.yaml").write_text(config)
    print(f"load before: {os.getloadavg()}; cores: {len(os.sched_getaffinity(0))}; work dir {work}")
    mock_args = [
        sys.executable, "-m", "uvicorn", "mock_upstream:app", "--app-dir", str(HERE), "--port", str(mock_port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    rows: list[dict[str, Any]] = []
    soak: dict[str, Any] = {}
    with running(mock_args, f"{mock_url}/healthz", work / "mock.log") as mock_pid:
        for backend in backends:
            if quick and backend != "sqlite":
                plan = [(1, c, s) for c in (50,) for s in (False, True)]
            else:
                plan = [(n, c, s) for n in sessions_list for s in (False, True) for c in clients]
            port = free_port()
            workers = 1 if backend == "memory" else (args.workers or len(os.sched_getaffinity(0)))
            gw_args = [
                sys.executable, "-m", "tokenward.cli", "serve", "--config", str(work / "gateway.yaml"),
                "--ledger", _ledger_url(backend, work), "--port", str(port), "--log-level", "warning",
            ]  # fmt: skip
            env = {"BENCH_UPSTREAM_KEY": "sk-bench"}
            if args.before is None:
                gw_args += ["--workers", str(workers)]
                if args.tree is not None:
                    env["PYTHONPATH"] = str(args.tree.resolve() / "src")
            else:
                workers = 1
                block = work / "blocked"
                block.mkdir(exist_ok=True)
                for name in ("uvloop", "httptools"):
                    (block / f"{name}.py").write_text("raise ImportError('hidden for the before run')\n")
                env["PYTHONPATH"] = f"{args.before.resolve() / 'src'}:{block}"
            gw_url = f"http://127.0.0.1:{port}"
            with running(gw_args, f"{gw_url}/healthz", work / f"gateway-{backend}.log", env) as gw_pid:
                headers = {"authorization": "Bearer tw-bench", "x-tokenward-session": "bench"}
                for stream in (False, True):  # warm up
                    wrk(f"{gw_url}/v1/chat/completions", _script(work, "w", stream, headers, 1), 10, 2, None)
                for sessions, c, stream in plan:
                    direct_s = _script(work, "direct", stream, {}, 1)
                    gw_s = _script(work, "gw", stream, headers, sessions)
                    pairs, lags = [], []
                    for _ in range(args.reps):
                        d = wrk(f"{mock_url}/v1/chat/completions", direct_s, c, seconds, mock_pid)
                        before_lag = settle_lag_buckets(gw_url)
                        g = wrk(f"{gw_url}/v1/chat/completions", gw_s, c, seconds, gw_pid)
                        lags.append(lag_p99_ms(before_lag, settle_lag_buckets(gw_url)))
                        pairs.append((d, g))
                    row = {
                        "backend": backend,
                        "workers": workers,
                        "sessions": sessions,
                        "stream": stream,
                        "clients": c,
                        "direct_rps": _med([d["rps"] for d, _ in pairs]),
                        "rps": _med([g["rps"] for _, g in pairs]),
                        "p50_ms": _med([g["p50_ms"] for _, g in pairs]),
                        "p99_ms": _med([g["p99_ms"] for _, g in pairs]),
                        "p999_ms": _med([g["p999_ms"] for _, g in pairs]),
                        "added_p50_ms": _med([g["p50_ms"] - d["p50_ms"] for d, g in pairs]),
                        "added_p99_ms": _med([g["p99_ms"] - d["p99_ms"] for d, g in pairs]),
                        "cpu_ms_per_call": _med([g["cpu_ms_per_call"] for _, g in pairs]),
                        "errors": sum(g["errors"] + d["errors"] for d, g in pairs),
                        "settle_lag_p99_ms": _med([x for x in lags if x == x] or [float("nan")]),
                    }
                    rows.append(row)
                    _print_row(row, header=len(rows) == 1)
                if args.soak and backend == backends[0]:

                    @contextlib.contextmanager
                    def fresh(
                        gw_args: list[str] = gw_args, env: dict[str, str] = env, backend: str = backend
                    ) -> Iterator[tuple[str, int]]:
                        port = free_port()
                        args2 = [
                            *gw_args[: gw_args.index("--port") + 1],
                            str(port),
                            *gw_args[gw_args.index("--port") + 2 :],
                        ]
                        url = f"http://127.0.0.1:{port}"
                        with running(
                            args2, f"{url}/healthz", work / f"gateway-{backend}-fresh.log", env
                        ) as pid:
                            yield url, pid

                    soak = _soak(gw_url, work, headers, gw_pid, args.soak, fresh)
    print(f"load after: {os.getloadavg()}")
    if soak:
        print(json.dumps(soak))
    print(f"results in {save('gateway', {'rows': rows, 'soak': soak})}")


def _print_row(row: dict[str, Any], header: bool) -> None:
    if header:
        print(
            f"{'backend':<8}{'w':>2}{'sess':>5} {'mode':<7}{'c':>4}{'direct/s':>10}{'gw/s':>8}{'p50':>8}{'p99':>8}"
            f"{'p99.9':>8}{'+p50':>8}{'+p99':>8}{'p99/p50':>8}{'cpu/call':>9}{'err':>5}{'lag99':>7}"
        )
    print(
        f"{row['backend']:<8}{row['workers']:>2}{row['sessions']:>5} {'stream' if row['stream'] else 'json':<7}"
        f"{row['clients']:>4}{row['direct_rps']:>10.0f}{row['rps']:>8.0f}{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}"
        f"{row['p999_ms']:>8.2f}{row['added_p50_ms']:>8.2f}{row['added_p99_ms']:>8.2f}"
        f"{row['p99_ms'] / row['p50_ms']:>8.1f}{row['cpu_ms_per_call']:>8.2f}m{row['errors']:>5}"
        f"{row['settle_lag_p99_ms']:>7.2f}",
        flush=True,
    )


def _soak(
    url: str,
    work: Path,
    headers: dict[str, str],
    pid: int,
    calls: int,
    fresh: Callable[[], AbstractContextManager[tuple[str, int]]],
) -> dict[str, Any]:
    """CPU per call and RSS of a gateway that served ``calls`` calls against a fresh one.

    The process under test is measured at its start (5 runs of 3 s, 10 clients), then loaded with
    ``calls`` more (50 clients), then compared with a second, fresh process (``fresh()``: the same
    command on another port, the same ledger, so both see the same grown ledger and full rolling
    windows) in 5 interleaved pairs of runs: the medians, and the change of the soaked process
    against the fresh one (what the target "within 10 % of a fresh process" asks)."""
    target = f"{url}/v1/chat/completions"
    script = _script(work, "soak", False, headers, 1000)
    at_start = [wrk(target, script, 10, 3, pid) for _ in range(5)]
    rss0 = _rss_mib(pid)
    done = 0
    while done < calls:
        done += int(wrk(target, script, 50, 30, None)["requests"])
    with fresh() as (fresh_url, fresh_pid):
        fresh_target = f"{fresh_url}/v1/chat/completions"
        wrk(fresh_target, script, 10, 5, None)  # warm up
        soaked, new = [], []
        for _ in range(5):
            soaked.append(wrk(target, script, 10, 3, pid)["cpu_ms_per_call"])
            new.append(wrk(fresh_target, script, 10, 3, fresh_pid)["cpu_ms_per_call"])
        fresh_rss = _rss_mib(fresh_pid)
    cpu_start = _med([r["cpu_ms_per_call"] for r in at_start])
    cpu_soaked, cpu_fresh = _med(soaked), _med(new)
    return {
        "calls": done,
        "cpu_ms_per_call_at_start": cpu_start,
        "cpu_ms_per_call_soaked": cpu_soaked,
        "cpu_ms_per_call_fresh_process": cpu_fresh,
        "cpu_change_vs_fresh_process": cpu_soaked / cpu_fresh - 1,
        "cpu_change_vs_own_start": cpu_soaked / cpu_start - 1,
        "rss_mib_at_start": rss0,
        "rss_mib_soaked": _rss_mib(pid),
        "rss_mib_fresh_process": fresh_rss,
    }


if __name__ == "__main__":
    main()
