"""The composition root: reads settings, configures logging and telemetry, runs servers.

Every `serve` flag mirrors a PARALLEL_DISPATCH_* variable; a flag wins over the variable.
Logs go to stderr only: in stdio mode stdout is the protocol.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import click
from pydantic import ValidationError

from parallel_dispatch import __version__
from parallel_dispatch.app import create_app
from parallel_dispatch.capacity import read_host
from parallel_dispatch.db import current_revision, make_engine, upgrade_database
from parallel_dispatch.errors import DispatchError
from parallel_dispatch.server import build_server, build_service
from parallel_dispatch.settings import LOOPBACK_HOSTS, Settings
from parallel_dispatch.setup_commands import doctor, install
from parallel_dispatch.telemetry import (
    Telemetry,
    TelemetryConfig,
    TelemetryConfigError,
    configure_telemetry,
)

logger = logging.getLogger("parallel_dispatch")


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment with the given (non-None) flag values on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise click.UsageError(f"invalid setting: {problems}") from exc


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group()
@click.version_option(__version__, prog_name="parallel-dispatch")
def main() -> None:
    """parallel-dispatch: plan, launch and track parallel sub-agents (an MCP server)."""


@main.command()
@click.option("--http", "use_http", is_flag=True, help="Serve streamable HTTP instead of stdio.")
@click.option("--host", default=None, help="HTTP bind address [127.0.0.1].")
@click.option("--port", type=int, default=None, help="HTTP port [8765].")
@click.option("--database-url", default=None, help="PARALLEL_DISPATCH_DATABASE_URL.")
@click.option("--max-parallel", type=int, default=None, help="Hard cap on width [10].")
@click.option("--max-active-agents", type=int, default=None, help="Shared agent slots [20].")
@click.option("--task-timeout-s", type=float, default=None, help="Lost-task timeout [1800].")
@click.option(
    "--host-pressure",
    type=click.Choice(["on", "off"]),
    default=None,
    help="Let host load and memory shrink width [on].",
)
@click.option("--load-per-core-high", type=float, default=None, help="Busy load per core [1.5].")
@click.option(
    "--memory-available-low", type=float, default=None, help="Scarce memory fraction [0.10]."
)
@click.option("--max-tasks", type=int, default=None, help="Most tasks in one call [1000].")
@click.option("--auth-token", default=None, help="Bearer token for HTTP.")
@click.option(
    "--otlp-endpoint", default=None, help="OTLP collector URL, e.g. http://127.0.0.1:4318."
)
@click.option("--otlp-protocol", default=None, help="http/protobuf (default) or grpc.")
@click.option("--otlp-headers", default=None, help="k=v,k2=v2 headers for the collector.")
@click.option("--service-name", default=None, help="OpenTelemetry service.name.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default=None)
def serve(use_http: bool, **flags: Any) -> None:
    """Run the MCP server (stdio by default; --http for streamable HTTP at /mcp)."""
    settings = _settings(**flags)
    _configure_logging(settings.log_level)
    if use_http and settings.host not in LOOPBACK_HOSTS and settings.auth_token is None:
        raise click.UsageError(
            f"refusing to serve on {settings.host} without PARALLEL_DISPATCH_AUTH_TOKEN "
            "(or --auth-token): anyone who can reach it could drive your agents."
        )
    try:
        telemetry_config = TelemetryConfig.from_env(
            os.environ,
            endpoint=settings.otlp_endpoint,
            protocol=settings.otlp_protocol,
            headers=settings.otlp_headers,
            service_name=settings.service_name,
        )
    except TelemetryConfigError as exc:
        raise click.UsageError(f"invalid telemetry setting: {exc}") from exc
    telemetry = configure_telemetry(telemetry_config)
    try:
        service = build_service(settings, observer=telemetry.observer, host_reader=read_host)
        telemetry.bind_capacity(service.capacity_snapshot)
        server = build_server(settings, service)
        if use_http:
            _serve_http(settings, server, telemetry)
        else:
            logger.info("serving MCP over stdio (database %s)", settings.database_url)
            _exit_on_signals(telemetry)
            server.run("stdio")
    except DispatchError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        telemetry.shutdown()


def _exit_on_signals(telemetry: Telemetry) -> None:
    """Make Ctrl-C and SIGTERM end a stdio server at once, after flushing telemetry.

    The stdio transport blocks a thread on reading stdin, so a plain KeyboardInterrupt waits
    for input that never comes. Every write is its own committed transaction, so exiting
    between calls loses nothing.
    """

    def stop(signum: int, _frame: object) -> None:
        logger.info("signal %d: stopping", signum)
        telemetry.shutdown()
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def _serve_http(settings: Settings, server: Any, telemetry: Telemetry) -> None:
    import uvicorn

    app = create_app(settings, server)
    logger.warning(
        "serving MCP over streamable HTTP at http://%s:%d/mcp", settings.host, settings.port
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        lifespan="on",
        backlog=256,
    )


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.option("--database-url", default=None, help="PARALLEL_DISPATCH_DATABASE_URL.")
def db_upgrade(database_url: str | None) -> None:
    """Apply pending schema migrations (serve does this at start too)."""
    settings = _settings(database_url=database_url)
    _configure_logging(settings.log_level)
    try:
        engine = make_engine(settings.database_url)
        upgrade_database(engine)
        click.echo(f"database at revision {current_revision(engine)}: {settings.database_url}")
    except DispatchError as exc:
        raise click.ClickException(str(exc)) from exc


main.add_command(install)
main.add_command(doctor)
