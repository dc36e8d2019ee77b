"""Private Redis and PostgreSQL servers for the fault tests, and gateway replicas as processes.

Each private server runs from a temporary directory of its own on a free port, so a test can stop,
restart or slow it without touching the machine's shared servers (which the rest of the suite and
CI use). Nothing here imitates our own code: these are the real servers and the real ``tokenward
serve`` command.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "PrivatePostgres",
    "PrivateRedis",
    "RedisClusterNodes",
    "Replica",
    "free_port",
    "gateway_config",
    "postgres_bin",
    "replicas",
]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Died(Exception):
    """A server exited while starting (its port was taken meanwhile)."""


def _wait(check: Any, what: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if proc is not None and proc.poll() is not None:
            raise _Died(what)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout}s")
        time.sleep(0.05)


class PrivateRedis:
    """``redis-server`` on its own port and directory.

    Args:
        root: its directory (data, log).
        persistent: ``appendonly yes`` with ``appendfsync always`` (its data survives a restart),
            or no persistence at all (it comes back empty).
    """

    def __init__(self, root: Path, *, persistent: bool, port: int | None = None) -> None:
        self.root = root
        self.persistent = persistent
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, same_port: bool = False) -> None:
        """Start it (on another free port if its own was taken meanwhile, unless ``same_port``)."""
        for _ in range(5):
            try:
                return self._start()
            except _Died:
                if same_port:
                    raise
                self.port = free_port()
        raise RuntimeError("redis-server would not start")

    def _start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root)]
        args += ["--save", "", "--daemonize", "no", "--logfile", str(self.root / "redis.log")]
        args += ["--enable-debug-command", "local"]  # DEBUG SLEEP: a slow server
        args += (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        )
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(self._ping, f"redis-server on {self.port}", proc=self.proc)

    def _ping(self) -> bool:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, timeout=2
        )
        return out.stdout.strip() == "PONG"

    def slow(self, seconds: float) -> subprocess.Popen[bytes]:
        """Make the server stall for ``seconds`` (``DEBUG SLEEP``), from now; returns at once."""
        return subprocess.Popen(
            ["redis-cli", "-p", str(self.port), "debug", "sleep", str(seconds)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Stop it (as a crash would: SIGKILL; with persistence every write is already on disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start(same_port=True)


def postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (``/usr/lib/postgresql/<version>/bin``), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """A PostgreSQL cluster of its own (``initdb`` + ``pg_ctl``) on its own port.

    Run as the ``postgres`` user when the tests run as root (PostgreSQL refuses root).
    """

    def __init__(self, port: int | None = None) -> None:
        binary = postgres_bin()
        if binary is None:
            raise RuntimeError("initdb not found")
        self.bin = binary
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="tw-pg-"))
        self.data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"]
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str]) -> None:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(args, check=True, capture_output=True, timeout=60)

    def _ctl(self, *args: str) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-o",
                options,
                "-w",
                *args,
            ]
        )

    def start(self, *, same_port: bool = False) -> None:
        """Start it (on another free port if its own was taken meanwhile, unless ``same_port``)."""
        for attempt in range(5):
            try:
                return self._ctl("start")
            except subprocess.CalledProcessError:
                if same_port or attempt == 4:
                    raise
                self.port = free_port()

    def stop(self) -> None:
        """Stop at once (``-m immediate``: as a crash; its committed data survives)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("-m", "immediate", "stop")

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start(same_port=True)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisClusterNodes:
    """A small Redis Cluster (three masters, no replicas) on free ports, made with
    ``redis-cli --cluster create``."""

    def __init__(self, root: Path, masters: int = 3) -> None:
        self.root = root
        self.ports = [free_port() for _ in range(masters)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        for _ in range(5):
            try:
                return self._start()
            except _Died:  # a port was taken meanwhile: all over again on fresh ones
                self.stop()
                self.procs = []
                self.ports = [free_port() for _ in self.ports]
        raise RuntimeError("the cluster would not start")

    def _start(self) -> None:
        for port in self.ports:
            folder = self.root / str(port)
            folder.mkdir(parents=True, exist_ok=True)
            args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--save", ""]
            args += ["--appendonly", "no", "--logfile", str(folder / "redis.log")]
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port, proc in zip(self.ports, self.procs, strict=True):
            _wait(
                lambda p=port: (
                    subprocess.run(
                        ["redis-cli", "-p", str(p), "ping"], capture_output=True, text=True, timeout=2
                    ).stdout.strip()
                    == "PONG"
                ),
                f"cluster node {port}",
                proc=proc,
            )
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "0",
             "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        for port in self.ports:
            _wait(
                lambda p=port: (
                    "cluster_state:ok"
                    in subprocess.run(
                        ["redis-cli", "-p", str(p), "cluster", "info"],
                        capture_output=True,
                        text=True,
                        timeout=2,
                    ).stdout
                ),
                f"cluster state on {port}",
            )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def gateway_config(
    path: Path,
    ledger: str,
    *,
    budgets: list[dict[str, Any]],
    keys: list[dict[str, Any]],
    max_output_tokens: int = 20,
    ttl_seconds: int = 600,
) -> Path:
    """A gateway config on ``ledger`` in front of the in-process fake provider; reservations
    live ``ttl_seconds``."""
    defaults = {
        "max_output_tokens": max_output_tokens,
        "min_output_tokens": 1,
        "reservation_ttl_seconds": ttl_seconds,
    }
    path.write_text(
        json.dumps(
            {
                "ledger": ledger,
                "defaults": defaults,
                "upstreams": [{"name": "fake", "provider": "fake", "models": ["*"]}],
                "keys": keys,
                "budgets": budgets,
                "observe": {"prometheus": False},
            }
        )
    )
    return path


class Replica:
    """One ``tokenward serve`` process on a free port."""

    def __init__(self, config: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        args = [
            sys.executable,
            "-m",
            "tokenward.cli",
            "serve",
            "--config",
            str(config),
            "--port",
            str(self.port),
        ]
        # one process per replica: these tests count replicas (and kill them) one by one;
        # several workers per process are tested in tests/gateway/test_workers.py
        args += ["--log-level", "warning", "--workers", "1"]
        self.proc = subprocess.Popen(
            args, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"gateway did not start: {log.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (open calls are settled, the spool is flushed), then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
        return self.proc.returncode


@contextlib.contextmanager
def replicas(configs: list[Path], logs: Path) -> Iterator[list[Replica]]:
    """Run one replica per config for the block; stop them all (gracefully) after it."""
    started: list[Replica] = []
    try:
        for index, config in enumerate(configs):
            started.append(Replica(config, logs / f"replica-{index}.log"))
        yield started
    finally:
        for replica in started:
            with contextlib.suppress(Exception):
                replica.stop()
