"""The real Claude Code CLI for tests: a pinned install, an isolated environment, bounded runs.

`claude_executable_or_skip` installs ``@anthropic-ai/claude-code`` at `CLAUDE_CODE_VERSION`
from npm once per machine (through `tests.support.npm_tools`) and returns the ``claude``
executable; the calling test is skipped, visibly, only when npm itself or the npm registry
cannot be reached. Any other failure (a broken package, a binary that does not run) fails it.

`isolated_env` builds an environment whose HOME, config, temp and XDG directories all live
under one temp directory, with non-essential traffic and the auto-updater off, and
`run_claude` runs the CLI in its own process group with a deadline and kills that whole group
afterwards, so no MCP server it started outlives the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_anthropic import FakeAnthropic, Policy
from tests.support.npm_tools import npm_bin

CLAUDE_CODE_VERSION = "2.1.332"
CLAUDE_CODE_PACKAGE = "@anthropic-ai/claude-code"
_unavailable: list[str] = []


def claude_executable_or_skip() -> Path:
    """The pinned CLI, installed once per machine; a visible skip only without npm/registry.

    The install is `npm_tools.npm_bin`'s (one cached prefix per pinned package, a file lock
    against racing test processes). The binary inside the package must really run and report
    the pinned version, or the calling test fails.
    """
    if _unavailable:
        pytest.skip(_unavailable[0])
    try:
        executable = npm_bin(CLAUDE_CODE_PACKAGE, CLAUDE_CODE_VERSION, "claude")
    except pytest.skip.Exception as exc:
        # An unreachable registry costs minutes of npm retries: find that out once per run.
        _unavailable.append(str(exc.msg))
        raise
    with tempfile.TemporaryDirectory(prefix="claude-version-") as scratch_dir:
        done = _version_of(executable, Path(scratch_dir))
    if done.returncode != 0 or not done.stdout.startswith(CLAUDE_CODE_VERSION):
        pytest.fail(
            f"{executable} --version exited {done.returncode}: {done.stdout!r} {done.stderr!r}"
        )
    return executable


def _version_of(executable: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(executable), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(scratch),
                "CLAUDE_CONFIG_DIR": str(scratch / ".claude"),
                "DISABLE_AUTOUPDATER": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            },
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"{executable} --version did not run: {exc!r}")


def isolated_env(
    root: Path, *, base_url: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """An environment that keeps Claude Code (and what it starts) inside ``root``.

    Nothing is inherited from the caller but PATH, PYTHONPATH and the locale, so the
    developer's own Claude Code configuration, credentials and Anthropic variables never leak.
    """
    home = root / "home"
    directories = {
        "HOME": home,
        "CLAUDE_CONFIG_DIR": home / ".claude",
        "TMPDIR": root / "tmp",
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_STATE_HOME": home / ".local" / "state",
        "XDG_CACHE_HOME": home / ".cache",
    }
    for directory in directories.values():
        directory.mkdir(parents=True, exist_ok=True)
    env = {name: str(path) for name, path in directories.items()}
    # PYTHONPATH passes through so a server run from a source tree is the one under test.
    env.update(
        {name: os.environ[name] for name in ("PYTHONPATH",) if name in os.environ},
        PATH=os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        LANG=os.environ.get("LANG", "C.UTF-8"),
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
        ENABLE_TOOL_SEARCH="false",
        ANTHROPIC_API_KEY="sk-ant-test-dummy",
    )
    if base_url is not None:
        env["ANTHROPIC_BASE_URL"] = base_url
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class CliRun:
    """What one CLI run did."""

    args: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool

    def describe(self, tail: int = 4000) -> str:
        return (
            f"$ claude {' '.join(self.args)}\n"
            f"exit={self.returncode} timed_out={self.timed_out} in {self.duration_s:.1f}s\n"
            f"--- stdout (tail) ---\n{self.stdout[-tail:]}\n"
            f"--- stderr (tail) ---\n{self.stderr[-tail:]}"
        )


def _kill_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)  # polling for the group to be gone: no waitable handle for it


def run_claude(
    executable: Path,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout_s: float,
    log_dir: Path | None = None,
) -> CliRun:
    """Run the CLI in its own process group; kill the group when it ends or overruns.

    Output goes to files (in ``log_dir``, default ``cwd``) rather than pipes, so an MCP server
    that inherited them cannot keep the run from ending.
    """
    logs = log_dir or cwd
    logs.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.time_ns()}"
    out_path, err_path = logs / f"claude-{stamp}.stdout", logs / f"claude-{stamp}.stderr"
    started = time.monotonic()
    timed_out = False
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [str(executable), *args],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(process.pid)
            process.wait(timeout=10)
    return CliRun(
        args=list(args),
        returncode=None if timed_out else process.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        duration_s=time.monotonic() - started,
        timed_out=timed_out,
    )


def mcp_server_log(env: Mapping[str, str], server: str, tail: int = 6000) -> str:
    """What Claude Code logged about one MCP server in this sandbox (incl. the server's stderr).

    Claude Code keeps these as JSON lines under its cache directory, one file per session.
    """
    roots = {Path(env["HOME"]) / ".cache", Path(env.get("XDG_CACHE_HOME", env["HOME"]))}
    lines: list[str] = []
    for root in sorted(roots):
        for log in sorted(root.glob(f"claude-cli-nodejs/*/mcp-logs-{server}/*.jsonl")):
            for raw in log.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(raw)
                except ValueError:
                    lines.append(raw)
                    continue
                for level in ("error", "debug"):
                    if level in entry:
                        lines.append(f"{entry.get('timestamp', '')} {level}: {entry[level]}")
    return "\n".join(lines)[-tail:]


def stream_events(stdout: str) -> Iterator[dict[str, Any]]:
    """The JSON events of a ``--output-format stream-json`` run, in order."""
    for line in stdout.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if isinstance(event, dict):
                yield event


def run_print_mode(
    claude: Path,
    root: Path,
    policy: Policy,
    *,
    prompt: str,
    server: str,
    mcp_server: Mapping[str, Any],
    timeout_s: float,
) -> tuple[CliRun, FakeAnthropic, dict[str, str]]:
    """Run ``claude -p`` in stream-json mode against a scripted model, with one MCP server.

    The server's tools are allowed (``--allowedTools mcp__<server>``, which also applies inside
    sub-agents) and every other MCP configuration is ignored. Returns the run, the fake model
    (its recorded requests) and the environment Claude Code ran in.
    """
    work = root / "project"
    work.mkdir()
    mcp_config = {"mcpServers": {server: dict(mcp_server)}}
    with FakeAnthropic(policy) as fake:
        env = isolated_env(root / "sandbox", base_url=fake.base_url)
        run = run_claude(
            claude,
            [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--mcp-config",
                json.dumps(mcp_config),
                "--strict-mcp-config",
                "--allowedTools",
                f"mcp__{server}",
                "--",
                prompt,
            ],
            env=env,
            cwd=work,
            timeout_s=timeout_s,
            log_dir=root / "logs",
        )
    return run, fake, env
