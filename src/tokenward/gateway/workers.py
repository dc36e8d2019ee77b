"""Running the gateway on every core: ``tokenward serve --workers N``.

One supervisor process binds the listening socket and starts ``N`` worker processes (spawned,
not forked) that accept on it, each a complete gateway (its own event loop, upstream clients and
ledger connection). Every worker enforces the same budgets because they share one persistent
ledger (SQLite file, PostgreSQL, Redis); a ``memory://`` ledger is refused with more than one
worker (each would keep its own budgets).

Signals to the supervisor:

- ``SIGHUP``: sent on to every worker, each of which reloads the config file in place
  (:func:`tokenward.gateway.app.reload_config`: open streams continue, nothing restarts). A
  reload through the admin API (``POST /admin/reload``) in one worker asks the supervisor to do
  the same for all of them.
- ``SIGTERM`` / ``SIGINT``: sent on to every worker, each of which stops accepting, lets its open
  streams finish within uvicorn's grace period and settles every admitted call; the supervisor
  exits once they all have.

A worker that dies on its own (a crash, the OOM killer) is started again; the calls it had in
flight are reclaimed by the ledger (its owner is dead).

``/metrics`` reaches one worker per scrape, so the workers share their Prometheus series through
prometheus-client's multiprocess mode: the supervisor makes a private directory, names it in
``PROMETHEUS_MULTIPROC_DIR`` for the workers it spawns (before they import ``prometheus_client``)
and removes it when it exits (one the user set is used and kept); a worker's ``/metrics`` adds up
every worker's series, a dead worker's included (:mod:`tokenward.observe.multiprocess`). If the supervisor itself is killed
(``SIGKILL``), the kernel kills its workers too (``PR_SET_PDEATHSIG`` on Linux), so no orphan
keeps serving on the port.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenward.errors import ConfigError
from tokenward.gateway.supervised import SUPERVISOR_ENV, ask_supervisor_to_reload
from tokenward.observe.multiprocess import mark_process_dead, shared_metrics_dir

__all__ = [
    "SUPERVISOR_ENV",
    "ServeOptions",
    "ask_supervisor_to_reload",
    "default_workers",
    "ready_server",
    "run_workers",
]

log = logging.getLogger("tokenward.gateway")


_STOP_TIMEOUT = 75.0
"""Seconds the supervisor waits for its workers to drain after SIGTERM (uvicorn's 30-second grace
for open streams, then up to 30 seconds to settle), before killing what is left."""


def default_workers() -> int:
    """The number of cores this process may run on (``os.sched_getaffinity``), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ServeOptions:
    """What ``tokenward serve`` was asked for; picklable, handed to each worker."""

    config: str
    ledger: str | None
    host: str
    port: int
    log_level: str
    log_format: str


def ready_server(app: Any, options: ServeOptions, announce: Callable[[str], None] | None) -> Any:
    """A ``uvicorn.Server`` for the gateway ``app`` that, when ``announce`` is given, passes it the
    ready line (:func:`tokenward.gateway.app.ready_line`) once the socket listens."""
    import uvicorn

    from tokenward.ledger import DEFAULT_LEDGER_URL

    url = f"http://{options.host}:{options.port}"

    class ReadyServer(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            _freeze_heap()
            if announce is not None and self.started and not self.should_exit:
                from tokenward.gateway.app import ready_line

                state = app.state.gateway
                announce(await ready_line(state, url, state.config.ledger or DEFAULT_LEDGER_URL))

    return ReadyServer(
        uvicorn.Config(
            app,
            host=options.host,
            port=options.port,
            log_level=options.log_level,
            log_config=None,  # keep our handlers (JSON lines when asked)
            timeout_graceful_shutdown=30,
            # Longer than clients' own idle expiry (httpx: 5 s, the same as uvicorn's default), so
            # the server never closes a kept-alive connection just as a client sends on it.
            timeout_keep_alive=75,
        )
    )


def _freeze_heap() -> None:
    """Leave what the started gateway keeps for its lifetime (modules, the price table, the
    tokenizers, the config) out of the garbage collector's scans: a full collection walked all of
    it, again and again, however little a call allocated (issue 17). Young collections run every
    10,000 allocations instead of 700: a call's objects die young, by reference count."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the supervisor) dies."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _worker(options: ServeOptions, sock: socket.socket, index: int, workers: int) -> None:
    """Entry point of one worker process."""
    _die_with_parent()
    import dataclasses

    from tokenward.gateway import GatewayConfig, create_app
    from tokenward.gateway.logs import configure_logging

    configure_logging(options.log_format, options.log_level)
    path = Path(options.config)
    cfg = GatewayConfig.load(path)
    if options.ledger:
        cfg = dataclasses.replace(cfg, ledger=options.ledger)
    app = create_app(cfg, config_path=path)

    def announce(line: str) -> None:
        print(f"{line} - {workers} workers", file=sys.stderr, flush=True)

    server = ready_server(app, options, announce if index == 0 else None)
    server.run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket the workers share (as uvicorn binds its own, without its log line:
    the gateway says it is ready once a worker serves)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Supervisor:
    def __init__(self, options: ServeOptions, workers: int) -> None:
        self.options = options
        self.workers = workers
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[Any] = [None] * workers
        self.stopping = threading.Event()
        self.signals: list[int] = []
        self.wake = threading.Event()

    def _start(self, index: int, sock: socket.socket) -> None:
        process = self.context.Process(
            target=_worker, args=(self.options, sock, index, self.workers), name=f"tokenward-worker-{index}"
        )
        process.start()
        self.processes[index] = process

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)
        self.wake.set()

    def _send_all(self, signum: int) -> None:
        for process in self.processes:
            if process is not None and process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def run(self) -> int:
        with shared_metrics_dir() as metrics_dir:  # PROMETHEUS_MULTIPROC_DIR, inherited by the workers
            return self._run(metrics_dir)

    def _run(self, metrics_dir: str) -> int:
        sock = _bind(self.options.host, self.options.port)
        os.environ[SUPERVISOR_ENV] = str(os.getpid())  # inherited by the spawned workers
        for handled in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(handled, self._on_signal)
        for index in range(self.workers):
            self._start(index, sock)
        try:
            while True:
                self.wake.wait(0.5)
                self.wake.clear()
                while self.signals:
                    signum = self.signals.pop(0)
                    if signum == signal.SIGHUP:
                        log.info("reloading the configuration in %d workers", self.workers)
                        self._send_all(signal.SIGHUP)
                    else:
                        return self._stop()
                for index, process in enumerate(self.processes):
                    if process is not None and not process.is_alive():
                        log.error(
                            "gateway worker %d (pid %s) exited with %s; starting it again",
                            index,
                            process.pid,
                            process.exitcode,
                        )
                        mark_process_dead(process.pid, metrics_dir)  # its counts stay counted
                        time.sleep(0.5)  # no busy loop if it dies at start every time
                        self._start(index, sock)
        finally:
            sock.close()

    def _stop(self) -> int:
        log.info("stopping %d workers (open calls finish and settle first)", self.workers)
        self._send_all(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        for process in self.processes:
            if process is None:
                continue
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker pid %s did not stop in time; killed", process.pid)
                process.kill()
                process.join(5)
        return 0


def run_workers(options: ServeOptions, workers: int) -> int:
    """Serve the gateway in ``workers`` processes until SIGTERM/SIGINT; returns the exit status."""
    return _Supervisor(options, workers).run()
