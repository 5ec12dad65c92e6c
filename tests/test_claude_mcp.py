"""`claude mcp add` registers the server the way users do, and `claude mcp list` connects to it.

Both commands exit 0 even when a server fails to connect, so the tests read what they print.
A negative control (a server command that exits at once) proves the check can fail.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.claude_cli import CliRun, claude_executable_or_skip, isolated_env, run_claude
from tests.support.fake_anthropic import FakeAnthropic, Text, reply

pytestmark = pytest.mark.slow

SERVER = "parallel-dispatch"
COMMAND_TIMEOUT_S = 90.0
CONNECTED = "✔ Connected"
FAILED = "✘ Failed to connect"


@pytest.fixture
def claude(tmp_path: Path) -> Iterator[_Claude]:
    executable = claude_executable_or_skip()
    # `claude mcp list` first tries to reach the model API; with no network that costs ~17 s
    # per command. A scripted endpoint on 127.0.0.1 keeps it offline and fast.
    with FakeAnthropic(lambda _request: reply(Text("ok"))) as fake:
        yield _Claude(executable, tmp_path, fake.base_url)


class _Claude:
    """The pinned CLI in a sandbox of its own, run from one project directory."""

    def __init__(self, executable: Path, root: Path, base_url: str) -> None:
        self.executable = executable
        self.root = root
        self.project = root / "project"
        self.project.mkdir()
        self.env = isolated_env(root / "sandbox", base_url=base_url)

    def __call__(self, *args: str) -> CliRun:
        run = run_claude(
            self.executable,
            args,
            env=self.env,
            cwd=self.project,
            timeout_s=COMMAND_TIMEOUT_S,
            log_dir=self.root / "logs",
        )
        assert not run.timed_out, run.describe()
        assert run.returncode == 0, run.describe()
        return run


def _status_line(listing: CliRun, name: str) -> str:
    lines = [line for line in listing.stdout.splitlines() if line.startswith(f"{name}: ")]
    assert len(lines) == 1, listing.describe()
    return lines[0]


def _add_parallel_dispatch(claude: _Claude, database: Path | None = None) -> Path:
    database = database or claude.root / "dispatch.sqlite"
    added = claude(
        "mcp",
        "add",
        SERVER,
        "-e",
        f"PARALLEL_DISPATCH_DATABASE_URL=sqlite:///{database}",
        "--",
        sys.executable,
        "-m",
        "parallel_dispatch",
        "serve",
    )
    assert f"Added stdio MCP server {SERVER}" in added.stdout, added.describe()
    return database


def test_claude_mcp_list_shows_the_added_server_connected(claude: _Claude) -> None:
    database = _add_parallel_dispatch(claude)

    listing = claude("mcp", "list")
    line = _status_line(listing, SERVER)
    assert line.endswith(CONNECTED), listing.describe()
    assert f"{sys.executable} -m parallel_dispatch serve" in line

    details = claude("mcp", "get", SERVER)
    assert f"Status: {CONNECTED}" in details.stdout, details.describe()
    assert f"PARALLEL_DISPATCH_DATABASE_URL=sqlite:///{database}" in details.stdout


def test_claude_mcp_list_reports_a_server_that_exits_at_once_as_failed(claude: _Claude) -> None:
    _add_parallel_dispatch(claude)
    claude("mcp", "add", "exits-at-once", "--", sys.executable, "-c", "raise SystemExit(3)")

    listing = claude("mcp", "list")
    assert FAILED in _status_line(listing, "exits-at-once"), listing.describe()
    # The broken neighbour does not take ours down with it.
    assert _status_line(listing, SERVER).endswith(CONNECTED), listing.describe()


def test_claude_mcp_list_reports_failed_when_the_database_cannot_be_opened(claude: _Claude) -> None:
    blocker = claude.root / "a-file"
    blocker.write_text("not a directory\n")
    _add_parallel_dispatch(claude, database=blocker / "dispatch.sqlite")

    listing = claude("mcp", "list")
    # Loud failure, visible to the user, rather than a silent fallback to another database.
    assert FAILED in _status_line(listing, SERVER), listing.describe()
