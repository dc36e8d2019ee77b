"""The ``tokenward`` command line (Typer).

Every user mistake (a missing file, a malformed budget spec, an unknown model) is reported in one
line on stderr with exit status 2, never as a stack trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tokenward.cli.common import Command, Group, err, friendly, out, print_json

__all__ = ["Command", "Group", "app", "err", "friendly", "main", "out", "print_json"]

app = typer.Typer(
    name="tokenward",
    cls=Group,
    help="Token budgets for AI agents: meter, price and cap every LLM call.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("tokenward")
    except PackageNotFoundError:  # run from a source tree that was never installed
        number = "unknown (not installed)"
    out.print(f"tokenward {number}", highlight=False)
    raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Show the version and exit.", is_eager=True, callback=_show_version),
    ] = False,
) -> None:
    """Token budgets for AI agents: meter, price and cap every LLM call."""


@app.command(cls=Command)
@friendly
def serve(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Gateway config (YAML). Default: ./tokenward.yaml."),
    ] = None,
    ledger: Annotated[
        str | None, typer.Option("--ledger", help="Ledger URL; overrides the config's.")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info or debug.")] = "info",
    log_format: Annotated[
        str, typer.Option(help="text, or json (one object per line, with request ids).")
    ] = "text",
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-w",
            help="Worker processes sharing the port and the ledger. Default: the number of cores "
            "(1 with a memory:// ledger).",
        ),
    ] = None,
) -> None:
    """Run the gateway: an OpenAI- and Anthropic-compatible proxy that enforces budgets."""
    import dataclasses

    from tokenward.errors import ConfigError
    from tokenward.gateway import GatewayConfig, create_app
    from tokenward.gateway.workers import ServeOptions, default_workers, ready_server, run_workers

    path = config or Path("tokenward.yaml")
    if config is None and not path.exists():
        raise ConfigError(
            "no config given and ./tokenward.yaml does not exist; try: tokenward serve --config examples/tokenward.yaml"
        )
    cfg = GatewayConfig.load(path)
    if ledger:
        cfg = dataclasses.replace(cfg, ledger=ledger)
    from tokenward.files import load_prices

    load_prices(cfg.prices)  # fail now, not at the first request
    from tokenward.ledger import DEFAULT_LEDGER_URL, open_ledger

    ledger_url = cfg.ledger or DEFAULT_LEDGER_URL
    if cfg.ledger is None:  # the one relative path not taken from the config's folder
        here = Path(DEFAULT_LEDGER_URL.removeprefix("sqlite:///")).resolve()
        err.print(
            f"warning: {path} names no ledger, so the gateway uses {here} in the working directory: "
            "started from another directory it would start on an empty ledger. Set "
            "'ledger: sqlite:///tokenward.db' in the file to keep the ledger beside it.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    in_memory = ledger_url.startswith("memory:")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be 1 or more, got {workers}")
    if workers is not None and workers > 1 and in_memory:
        raise ConfigError(
            f"--workers {workers} needs a shared ledger (sqlite://, postgresql://, redis://): with "
            "memory:// each worker would keep budgets of its own; use --workers 1"
        )
    count = workers if workers is not None else (1 if in_memory else default_workers())
    # A bad URL or an unreachable store is a one-line error here, not a traceback from the
    # server's start-up. The app opens (and at shutdown closes) its own: uvicorn ends the process
    # with the signal that stopped it, so nothing after the server's run() may be relied on.
    open_ledger(cfg.ledger).close()
    from tokenward.gateway.logs import configure_logging

    if log_format not in ("text", "json"):
        raise ConfigError(f"--log-format must be text or json, got {log_format!r}")
    configure_logging(log_format, log_level)
    options = ServeOptions(str(path), ledger, host, port, log_level, log_format)
    if count > 1:
        raise typer.Exit(run_workers(options, count))
    app = create_app(cfg, config_path=path)

    def announce(line: str) -> None:
        err.print(line, highlight=False, markup=False, soft_wrap=True)

    ready_server(app, options, announce).run()


FAKE_ENDPOINTS = (
    "OpenAI: /v1/chat/completions, /v1/responses, /v1/completions, /v1/embeddings, /v1/models; "
    "Anthropic: /v1/messages, /v1/messages/count_tokens; "
    "Gemini: /v1beta/models/{model}:generateContent and :streamGenerateContent"
)
"""What ``tokenward fake-provider`` serves (its start-up line); see :mod:`tokenward.fake`."""


@app.command("fake-provider", cls=Command)
@friendly
def fake_provider(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9100,
    reply_tokens: Annotated[int, typer.Option(help="Tokens in each reply (before max_tokens).")] = 20,
    chunk_tokens: Annotated[int, typer.Option(help="Words per streamed chunk.")] = 5,
    latency_ms: Annotated[float, typer.Option(help="Delay before the first byte, in ms.")] = 0.0,
    chunk_delay_ms: Annotated[float, typer.Option(help="Delay between streamed chunks, in ms.")] = 0.0,
    require_key: Annotated[str | None, typer.Option(help="Only accept requests carrying this key.")] = None,
) -> None:
    """Run a deterministic fake LLM provider, for testing agents and gateways offline.

    Serves OpenAI chat, Responses, completions and embeddings, Anthropic messages and count_tokens, Gemini.

    JSON and SSE streams, each with its provider's usage; per-request options make it misbehave.
    """
    from tokenward.fake import FakeSettings
    from tokenward.fake import serve as serve_fake

    err.print(
        f"fake provider on http://{host}:{port} - {FAKE_ENDPOINTS}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    serve_fake(
        host,
        port,
        FakeSettings(
            reply_tokens=reply_tokens,
            chunk_tokens=chunk_tokens,
            latency_ms=latency_ms,
            chunk_delay_ms=chunk_delay_ms,
            api_key=require_key,
        ),
    )


def _register() -> None:
    from tokenward.cli import (
        admin_cmd,
        batch_cmd,
        cost_cmd,
        dashboard_cmd,
        estimate_cmd,
        import_cmd,
        ledger_cmd,
        quarantine_cmd,
        replay_cmd,
        report_cmd,
        reprice_cmd,
    )

    cost_cmd.register(app)
    replay_cmd.register(app)
    ledger_cmd.register(app)
    estimate_cmd.register(app)
    reprice_cmd.register(app)
    report_cmd.register(app)
    import_cmd.register(app)
    admin_cmd.register(app)
    quarantine_cmd.register(app)
    dashboard_cmd.register(app)
    batch_cmd.register(app)


_register()


def main() -> None:
    """Entry point of the ``tokenward`` script."""
    app()
