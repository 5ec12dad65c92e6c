"""`parallel-dispatch doctor`: one line per check, a fix for each problem, exit 1 on a failure.

Claude Code's side (connected, not registered, pending approval) is checked with the real
CLI in tests/test_setup_commands.py; here `claude` is kept off PATH.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from parallel_dispatch.cli import main
from parallel_dispatch.db import head_revision


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No settings from the developer's shell, no `claude` on PATH, state in tmp_path."""
    for name in list(os.environ):
        if name.startswith(("PARALLEL_DISPATCH_", "OTEL_")):
            monkeypatch.delenv(name)
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("PARALLEL_DISPATCH_HOST_PRESSURE", "off")


def doctor(*args: str) -> Result:
    return CliRunner().invoke(main, ["doctor", *args], catch_exceptions=False)


def line_of(result: Result, check: str) -> str:
    lines = [line for line in result.output.splitlines() if line[6:].startswith(check)]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


@pytest.fixture
def closed_port() -> Iterator[int]:
    # Bound but not listening: connections to it are refused, and no one else can take it.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


def test_a_healthy_setup_passes_with_a_warning_for_the_missing_claude_cli(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'dispatch.db'}"

    result = doctor("--database-url", url)

    assert result.exit_code == 0, result.output
    assert line_of(result, "configuration").startswith("ok ")
    assert line_of(result, "database") == (
        f"ok    database      {url} opens, migrated to revision {head_revision()}"
    )
    assert line_of(result, "telemetry").startswith("ok    telemetry     off")
    assert line_of(result, "claude code").startswith("warn  claude code   the claude CLI")
    assert "install Claude Code" in result.output
    assert result.output.endswith("all checks passed (1 warning(s))\n")
    assert (tmp_path / "dispatch.db").exists()


def test_a_database_that_cannot_be_created_fails_with_a_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    result = doctor("--database-url", f"sqlite:///{blocker / 'dispatch.db'}")

    assert result.exit_code == 1
    assert line_of(result, "database").startswith("fail  database      cannot create")
    assert "fix: set PARALLEL_DISPATCH_DATABASE_URL" in result.output
    assert "1 check(s) failed: database" in result.output


def test_a_malformed_database_url_fails_with_a_fix() -> None:
    result = doctor("--database-url", "not a url")

    assert result.exit_code == 1
    assert "is not a database URL" in line_of(result, "database")
    assert "fix: set PARALLEL_DISPATCH_DATABASE_URL" in result.output


def test_an_invalid_setting_fails_the_configuration_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARALLEL_DISPATCH_MAX_PARALLEL", "0")

    result = doctor()

    assert result.exit_code == 1
    assert "max_parallel" in line_of(result, "configuration")
    assert line_of(result, "configuration").startswith("fail")


def test_a_public_host_without_a_token_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARALLEL_DISPATCH_HOST", "0.0.0.0")

    result = doctor("--database-url", f"sqlite:///{tmp_path / 'd.db'}")

    assert result.exit_code == 0, result.output
    assert line_of(result, "configuration").startswith("warn  configuration host 0.0.0.0")
    assert "PARALLEL_DISPATCH_AUTH_TOKEN" in result.output


def test_a_reachable_otlp_endpoint_passes(tmp_path: Path, listening_port: int) -> None:
    endpoint = f"http://127.0.0.1:{listening_port}"

    result = doctor("--database-url", f"sqlite:///{tmp_path / 'd.db'}", "--otlp-endpoint", endpoint)

    assert result.exit_code == 0, result.output
    assert f"{endpoint}/v1/traces" in line_of(result, "telemetry")
    assert line_of(result, "telemetry").startswith("ok")


def test_an_unreachable_otlp_endpoint_from_otel_variables_fails(
    tmp_path: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port}")

    result = doctor("--database-url", f"sqlite:///{tmp_path / 'd.db'}")

    assert result.exit_code == 1
    assert "unreachable" in line_of(result, "telemetry")
    assert "fix: start the collector" in result.output
