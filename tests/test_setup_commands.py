"""`parallel-dispatch install claude`: dry-run, `.mcp.json` merge, idempotence, and the real CLI.

The `.mcp.json` tests run without any `claude` on PATH (the file path of the command); the
last tests run the pinned Claude Code CLI in a sandboxed HOME and read what it says.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from parallel_dispatch.claude_config import ServerEntry, parse_mcp_get, server_launcher
from parallel_dispatch.cli import main
from tests.support.claude_cli import claude_executable_or_skip, isolated_env, run_claude
from tests.support.fake_anthropic import FakeAnthropic, Text, reply

EXECUTABLE = Path(sys.executable).with_name("parallel-dispatch")
OTHER_SERVER = {"type": "stdio", "command": "/usr/bin/other-mcp", "args": ["--x"], "env": {}}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project directory as cwd, with no `claude` CLI on PATH."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


def install_claude(*args: str) -> Result:
    return CliRunner().invoke(main, ["install", "claude", *args], catch_exceptions=False)


def our_entry() -> dict[str, object]:
    return {"type": "stdio", "command": str(EXECUTABLE), "args": ["serve"], "env": {}}


def test_the_server_command_is_this_installation_s_executable() -> None:
    assert server_launcher() == (str(EXECUTABLE), "serve")
    assert server_launcher("/nowhere/bin/python3", which={}) == (
        "/nowhere/bin/python3",
        "-m",
        "parallel_dispatch",
        "serve",
    )


def test_project_dry_run_prints_the_file_and_writes_nothing(project: Path) -> None:
    result = install_claude("--scope", "project", "--dry-run")

    assert result.exit_code == 0, result.output
    assert not (project / ".mcp.json").exists()
    printed = result.output.split(":\n", 1)[1]
    assert json.loads(printed) == {"mcpServers": {"parallel-dispatch": our_entry()}}


def test_project_install_merges_into_mcp_json_keeping_other_servers_and_keys(
    project: Path,
) -> None:
    mcp_json = project / ".mcp.json"
    mcp_json.write_text(
        json.dumps({"x-team-note": "keep me", "mcpServers": {"other": OTHER_SERVER}})
    )

    result = install_claude("--scope", "project", "--no-cli")

    assert result.exit_code == 0, result.output
    text = mcp_json.read_text()
    merged = json.loads(text)
    assert list(merged) == ["x-team-note", "mcpServers"]
    assert merged["x-team-note"] == "keep me"
    assert list(merged["mcpServers"]) == ["other", "parallel-dispatch"]
    assert merged["mcpServers"]["other"] == OTHER_SERVER
    assert merged["mcpServers"]["parallel-dispatch"] == our_entry()
    assert text == json.dumps(merged, indent=2) + "\n"


def test_project_install_twice_leaves_mcp_json_unchanged(project: Path) -> None:
    install_claude("--scope", "project")
    first = (project / ".mcp.json").read_bytes()

    again = install_claude("--scope", "project")

    assert again.exit_code == 0, again.output
    assert "(unchanged)" in again.output
    assert (project / ".mcp.json").read_bytes() == first


def test_project_install_refuses_a_different_server_of_the_same_name_without_force(
    project: Path,
) -> None:
    mcp_json = project / ".mcp.json"
    theirs = {"mcpServers": {"parallel-dispatch": OTHER_SERVER, "other": OTHER_SERVER}}
    mcp_json.write_text(json.dumps(theirs))

    refused = install_claude("--scope", "project")

    assert refused.exit_code == 1
    assert "--force" in refused.output
    assert json.loads(mcp_json.read_text()) == theirs

    forced = install_claude("--scope", "project", "--force")

    assert forced.exit_code == 0, forced.output
    servers = json.loads(mcp_json.read_text())["mcpServers"]
    assert servers == {"parallel-dispatch": our_entry(), "other": OTHER_SERVER}


def test_project_install_of_an_http_server_writes_url_and_headers(project: Path) -> None:
    result = install_claude(
        "--scope",
        "project",
        "--http",
        "http://127.0.0.1:8765/mcp",
        "--header",
        "Authorization: Bearer ${PARALLEL_DISPATCH_AUTH_TOKEN}",
    )

    assert result.exit_code == 0, result.output
    assert json.loads((project / ".mcp.json").read_text())["mcpServers"]["parallel-dispatch"] == {
        "type": "http",
        "url": "http://127.0.0.1:8765/mcp",
        "headers": {"Authorization": "Bearer ${PARALLEL_DISPATCH_AUTH_TOKEN}"},
    }


def test_a_broken_mcp_json_is_left_alone_with_a_clear_error(project: Path) -> None:
    (project / ".mcp.json").write_text("{not json")

    result = install_claude("--scope", "project")

    assert result.exit_code == 1
    assert "not valid JSON" in result.output
    assert (project / ".mcp.json").read_text() == "{not json"


def test_user_scope_without_the_cli_explains_and_shows_the_config_to_add(project: Path) -> None:
    result = install_claude("--scope", "user")

    assert result.exit_code == 1
    assert "claude CLI is not on PATH" in result.output
    assert "--scope project" in result.output
    assert str(EXECUTABLE) in result.output
    assert list(project.iterdir()) == []


def test_http_and_env_do_not_mix() -> None:
    result = install_claude("--http", "http://127.0.0.1:1/mcp", "--env", "A=b")

    assert result.exit_code == 2
    assert "--env" in result.output


def test_parse_mcp_get_reads_what_claude_code_prints() -> None:
    text = (
        "parallel-dispatch:\n"
        "  Scope: Local config (private to you in this project)\n"
        "  Status: ✔ Connected\n"
        "  Type: stdio\n"
        "  Command: /venv/bin/parallel-dispatch\n"
        "  Args: serve\n"
        "  Environment:\n"
        "    PARALLEL_DISPATCH_DATABASE_URL=sqlite:////tmp/x=y.db\n"
        "\n"
        "To remove this server, run: claude mcp remove parallel-dispatch -s local\n"
    )

    got = parse_mcp_get("parallel-dispatch", text)

    assert got is not None
    assert (got.scope, got.connected, got.describe()) == (
        "local",
        True,
        "/venv/bin/parallel-dispatch serve",
    )
    assert got.env == {"PARALLEL_DISPATCH_DATABASE_URL": "sqlite:////tmp/x=y.db"}
    entry = ServerEntry(
        "parallel-dispatch",
        ("/venv/bin/parallel-dispatch", "serve"),
        env={"PARALLEL_DISPATCH_DATABASE_URL": "sqlite:////tmp/x=y.db"},
    )
    assert got.same_as(entry)
    assert not got.same_as(ServerEntry("parallel-dispatch", ("/venv/bin/parallel-dispatch",)))
    assert parse_mcp_get("other", text) is None


# --- with the real Claude Code CLI ---------------------------------------------------------


class Sandbox:
    """The pinned `claude` on PATH, HOME and config in a temp dir, a project dir as cwd."""

    def __init__(self, root: Path, claude: Path, base_url: str) -> None:
        self.root = root
        self.claude = claude
        self.project = root / "project"
        self.project.mkdir()
        self.env = isolated_env(root / "sandbox", base_url=base_url)
        self.env["PATH"] = f"{claude.parent}:{self.env['PATH']}"

    def dispatch(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(EXECUTABLE), *args],
            env=self.env,
            cwd=self.project,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def claude_says(self, *args: str) -> str:
        run = run_claude(
            self.claude, args, env=self.env, cwd=self.project, timeout_s=90, log_dir=self.root
        )
        assert run.returncode == 0, run.describe()
        return run.stdout


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    claude = claude_executable_or_skip()
    # `claude mcp list` first tries the model API; a local stand-in keeps it offline and fast.
    with FakeAnthropic(lambda _request: reply(Text("ok"))) as fake:
        yield Sandbox(tmp_path, claude, fake.base_url)


def _listed(listing: str, name: str = "parallel-dispatch") -> str | None:
    lines = [line for line in listing.splitlines() if line.startswith(f"{name}: ")]
    return lines[0] if lines else None


@pytest.mark.slow
def test_install_claude_with_the_real_cli_registers_a_connected_server(sandbox: Sandbox) -> None:
    add = f"{sandbox.claude} mcp add --scope user parallel-dispatch -- {EXECUTABLE} serve"

    dry = sandbox.dispatch("install", "claude", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == f"would run: {add}"
    assert _listed(sandbox.claude_says("mcp", "list")) is None

    done = sandbox.dispatch("install", "claude")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "registered parallel-dispatch with Claude Code (user scope)" in done.stdout
    line = _listed(sandbox.claude_says("mcp", "list"))
    assert line == f"parallel-dispatch: {EXECUTABLE} serve - ✔ Connected", line

    again = sandbox.dispatch("install", "claude")
    assert again.returncode == 0, again.stderr
    assert "already registered with Claude Code (user scope)" in again.stdout
    assert "nothing to do" in again.stdout

    doctor = sandbox.dispatch("doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "ok    claude code   parallel-dispatch ✔ Connected (user scope" in doctor.stdout


@pytest.mark.slow
def test_install_claude_with_the_real_cli_replaces_a_different_server_only_with_force(
    sandbox: Sandbox,
) -> None:
    sandbox.claude_says("mcp", "add", "--scope", "user", "parallel-dispatch", "--", "/bin/false")
    database = sandbox.root / "chosen.db"
    env_flag = f"PARALLEL_DISPATCH_DATABASE_URL=sqlite:///{database}"

    refused = sandbox.dispatch("install", "claude", "--env", env_flag)
    assert refused.returncode == 1
    assert "different server named 'parallel-dispatch'" in refused.stderr
    assert "/bin/false" in refused.stderr and "--force" in refused.stderr

    dry = sandbox.dispatch("install", "claude", "--env", env_flag, "--force", "--dry-run")
    add_argv = [str(sandbox.claude), "mcp", "add", "--scope", "user"]
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"would run: {sandbox.claude} mcp remove parallel-dispatch --scope user",
        "would run: "
        + shlex.join(
            [*add_argv, "parallel-dispatch", "-e", env_flag, "--", str(EXECUTABLE), "serve"]
        ),
    ]
    assert "/bin/false" in sandbox.claude_says("mcp", "get", "parallel-dispatch")

    forced = sandbox.dispatch("install", "claude", "--env", env_flag, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    details = sandbox.claude_says("mcp", "get", "parallel-dispatch")
    assert "Status: ✔ Connected" in details, details
    assert env_flag in details
    assert database.exists()  # the server Claude Code started used the chosen database


@pytest.mark.slow
def test_install_claude_project_scope_with_the_real_cli_keeps_other_servers(
    sandbox: Sandbox,
) -> None:
    mcp_json = sandbox.project / ".mcp.json"
    mcp_json.write_text(json.dumps({"mcpServers": {"other": OTHER_SERVER}}, indent=2))

    done = sandbox.dispatch("install", "claude", "--scope", "project")

    assert done.returncode == 0, done.stdout + done.stderr
    servers = json.loads(mcp_json.read_text())["mcpServers"]
    assert servers["other"] == OTHER_SERVER
    assert servers["parallel-dispatch"] == our_entry()
    doctor = sandbox.dispatch("doctor")
    assert doctor.returncode == 0, doctor.stdout
    assert "warn  claude code   parallel-dispatch is in .mcp.json but not approved" in doctor.stdout
