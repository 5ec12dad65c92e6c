"""`parallel-dispatch doctor`: each check returns one line's worth of verdict and fix.

The checks do what `serve` would do (open and migrate the database, read the settings and
the telemetry configuration) plus ask Claude Code whether it reaches the server. None of
them prints; the command renders the results.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from parallel_dispatch.claude_config import DEFAULT_SERVER_NAME, claude_get_argv, parse_mcp_get
from parallel_dispatch.db import current_revision, head_revision, make_engine, upgrade_database
from parallel_dispatch.errors import DispatchError
from parallel_dispatch.settings import LOOPBACK_HOSTS, Settings
from parallel_dispatch.telemetry import PROTOCOL_GRPC, TelemetryConfig, TelemetryConfigError

Level = Literal["ok", "warn", "fail"]
TCP_TIMEOUT_S = 2.0
CLAUDE_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: which check, its verdict, what was seen, what to do."""

    check: str
    level: Level
    message: str
    fix: str | None = None

    def line(self) -> str:
        text = f"{self.level:<4}  {self.check:<13} {self.message}"
        return f"{text}\n      {'':<13} fix: {self.fix}" if self.fix else text


def load_settings(overrides: Mapping[str, Any]) -> tuple[Settings | None, CheckResult]:
    """Settings from the environment plus the given flags, and the configuration verdict."""
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        return None, CheckResult(
            "configuration",
            "fail",
            f"invalid setting: {problems}",
            "correct the PARALLEL_DISPATCH_* variable (or flag) named above",
        )
    if settings.host not in LOOPBACK_HOSTS and settings.auth_token is None:
        return settings, CheckResult(
            "configuration",
            "warn",
            f"host {settings.host} is not loopback and no auth token is set: "
            "`serve --http` will refuse to start",
            "set PARALLEL_DISPATCH_AUTH_TOKEN, or PARALLEL_DISPATCH_HOST=127.0.0.1",
        )
    return settings, CheckResult(
        "configuration",
        "ok",
        f"settings valid (max_parallel={settings.max_parallel}, "
        f"max_active_agents={settings.max_active_agents}, "
        f"task_timeout_s={settings.task_timeout_s:g}, "
        f"host_pressure={'on' if settings.host_pressure else 'off'})",
    )


def check_database(url: str) -> CheckResult:
    """Open the database, apply pending migrations (as `serve` does) and read the revision."""
    fix = (
        "set PARALLEL_DISPATCH_DATABASE_URL (or --database-url) to a reachable database: "
        "sqlite:////absolute/writable/path.db or postgresql+psycopg://user:pass@host/db"
    )
    try:
        engine = make_engine(url)
    except DispatchError as exc:
        return CheckResult("database", "fail", str(exc), fix)
    except ImportError as exc:
        return CheckResult(
            "database",
            "fail",
            f"no driver for {url.split(':', 1)[0]}: {exc}",
            "pip install 'parallel-dispatch[postgres]' for PostgreSQL",
        )
    shown = engine.url.render_as_string(hide_password=True)
    try:
        upgrade_database(engine)
        revision = current_revision(engine)
        head = head_revision()
    except DispatchError as exc:
        return CheckResult("database", "fail", str(exc), fix)
    except SQLAlchemyError as exc:
        return CheckResult("database", "fail", f"cannot read {shown}: {exc}", fix)
    finally:
        engine.dispose()
    if revision != head:
        return CheckResult(
            "database",
            "fail",
            f"{shown} is at revision {revision}, expected {head}",
            "run `parallel-dispatch db upgrade`; a newer revision means an older server",
        )
    return CheckResult("database", "ok", f"{shown} opens, migrated to revision {revision}")


def _host_port(url: str, protocol: str) -> tuple[str, int] | None:
    parts = urlsplit(url if "//" in url else f"//{url}")
    if not parts.hostname:
        return None
    default = 4317 if protocol == PROTOCOL_GRPC else (443 if parts.scheme == "https" else 80)
    try:
        port = parts.port or default
    except ValueError:
        return None
    return parts.hostname, port


def check_telemetry(settings: Settings, environ: Mapping[str, str]) -> CheckResult:
    """Whether an OTLP endpoint is configured and, if so, accepts TCP connections."""
    try:
        config = TelemetryConfig.from_env(
            environ,
            endpoint=settings.otlp_endpoint,
            protocol=settings.otlp_protocol,
            headers=settings.otlp_headers,
            service_name=settings.service_name,
        )
    except TelemetryConfigError as exc:
        return CheckResult(
            "telemetry", "fail", str(exc), "fix the OTEL_* variable or --otlp-* flag named above"
        )
    if not config.enabled:
        return CheckResult(
            "telemetry", "ok", "off: no OTLP endpoint configured, nothing is exported"
        )
    urls = sorted({u for u in (config.traces_url, config.metrics_url) if u})
    for url in urls:
        target = _host_port(url, config.otlp_protocol)
        if target is None:
            return CheckResult(
                "telemetry",
                "fail",
                f"cannot tell host and port from OTLP endpoint {url!r}",
                "give a URL such as http://127.0.0.1:4318 (--otlp-endpoint)",
            )
        try:
            with socket.create_connection(target, timeout=TCP_TIMEOUT_S):
                pass
        except OSError as exc:
            return CheckResult(
                "telemetry",
                "fail",
                f"OTLP collector at {url} unreachable ({target[0]}:{target[1]}: {exc}); "
                "spans and metrics would be dropped",
                "start the collector, or correct PARALLEL_DISPATCH_OTLP_ENDPOINT / "
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            )
    return CheckResult(
        "telemetry",
        "ok",
        f"exporting {config.otlp_protocol} to {', '.join(urls)} (TCP reachable) as "
        f"service {config.service_name}",
    )


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a short CLI command and capture its output (stdin closed)."""
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=CLAUDE_TIMEOUT_S,
        check=False,
    )


def check_claude(claude: str | None, name: str, run: Runner = run_command) -> CheckResult:
    """Whether Claude Code has the server registered and can connect to it."""
    named = "" if name == DEFAULT_SERVER_NAME else f" --name {name}"
    install = f"run `parallel-dispatch install claude{named}`"
    if claude is None:
        return CheckResult(
            "claude code",
            "warn",
            "the claude CLI is not on PATH, so whether Claude Code sees the server is unknown",
            f"install Claude Code, then {install}",
        )
    try:
        done = run(claude_get_argv(claude, name))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CheckResult("claude code", "fail", f"`claude mcp get {name}` did not finish: {exc}")
    registered = parse_mcp_get(name, done.stdout)
    if registered is None:
        return CheckResult(
            "claude code", "fail", f"Claude Code has no MCP server named {name!r}", install
        )
    where = f"{registered.scope or '?'} scope: {registered.describe()}"
    if registered.connected:
        return CheckResult("claude code", "ok", f"{name} ✔ Connected ({where})")
    if "Pending" in registered.status:
        return CheckResult(
            "claude code",
            "warn",
            f"{name} is in .mcp.json but not approved yet ({where})",
            "start `claude` in this project and approve it, or set enableAllProjectMcpServers",
        )
    issue = next(
        (line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if "Issue:" in line),
        registered.status,
    )
    return CheckResult(
        "claude code",
        "fail",
        f"Claude Code cannot connect to {name}: {issue} ({where})",
        f"run that command by hand to see its error, or re-register with {install} --force",
    )
