"""The real Claude Code CLI for tests: a pinned install, an isolated environment, bounded runs.

`install_claude_cli` installs ``@anthropic-ai/claude-code`` at `CLAUDE_CODE_VERSION` from npm
once per machine into a cache directory (a file lock keeps parallel test processes from racing)
and returns the ``claude`` executable. It raises `ClaudeCliUnavailable` only when npm itself or
the npm registry cannot be reached; callers turn that into a visible ``pytest.skip``. Any other
failure (the package is broken, the binary does not run) is an error, so it fails the test.

`isolated_env` builds an environment whose HOME, config, temp and XDG directories all live
under one temp directory, with non-essential traffic and the auto-updater off, and
`run_claude` runs the CLI in its own process group with a deadline and kills that whole group
afterwards, so no MCP server it started outlives the test.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

CLAUDE_CODE_VERSION = "2.1.332"
CLAUDE_CODE_PACKAGE = "@anthropic-ai/claude-code"

_INSTALL_TIMEOUT_S = 240.0
_LOCK_TIMEOUT_S = 300.0
# npm's words for "the registry could not be reached", as opposed to a package that is broken.
_UNREACHABLE = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|"
    r"network request .* failed|request to .* failed|socket hang up|getaddrinfo",
    re.IGNORECASE,
)


class ClaudeCliUnavailable(RuntimeError):
    """npm or its registry cannot be reached, so the pinned CLI cannot be installed here."""


def cache_root() -> Path:
    """Where test-only downloads live, shared by every checkout on the machine."""
    configured = os.environ.get("PARALLEL_DISPATCH_TEST_CACHE")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "parallel-dispatch-tests"


@contextlib.contextmanager
def _exclusive_lock(path: Path, timeout_s: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout_s:.0f}s") from None
                time.sleep(0.2)  # polling an flock: there is no waitable handle
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _reported_version(executable: Path) -> str | None:
    if not executable.exists():
        return None
    try:
        done = subprocess.run(
            [str(executable), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            env=isolated_env_for_version_check(executable.parent),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def isolated_env_for_version_check(scratch: Path) -> dict[str, str]:
    """A minimal environment for ``claude --version`` that touches no real config."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(scratch),
        "CLAUDE_CONFIG_DIR": str(scratch / ".claude-version-check"),
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }


def install_claude_cli(version: str = CLAUDE_CODE_VERSION) -> Path:
    """Install the pinned Claude Code CLI once per machine and return its executable.

    Raises:
        ClaudeCliUnavailable: npm is missing or the registry cannot be reached.
        RuntimeError: npm reached the registry but the install or the binary is broken.
    """
    target = cache_root() / "npm" / f"claude-code-{version}"
    executable = target / "node_modules" / ".bin" / "claude"
    with _exclusive_lock(target.with_name(target.name + ".lock"), _LOCK_TIMEOUT_S):
        reported = _reported_version(executable)
        if reported and reported.startswith(version):
            return executable
        npm = shutil.which("npm")
        if npm is None:
            raise ClaudeCliUnavailable("npm is not installed, so Claude Code cannot be installed")
        staging = target.with_name(f"{target.name}.staging-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            npm,
            "install",
            "--prefix",
            str(staging),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            f"{CLAUDE_CODE_PACKAGE}@{version}",
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ClaudeCliUnavailable(
                f"npm install of {CLAUDE_CODE_PACKAGE}@{version} timed out "
                f"after {_INSTALL_TIMEOUT_S:.0f}s (registry unreachable?)"
            ) from exc
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            output = (done.stdout + done.stderr).strip()
            if _UNREACHABLE.search(output):
                raise ClaudeCliUnavailable(f"the npm registry cannot be reached: {output[-500:]}")
            raise RuntimeError(f"npm install failed ({done.returncode}): {output[-2000:]}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        reported = _reported_version(executable)
        if not reported or not reported.startswith(version):
            raise RuntimeError(f"{executable} --version said {reported!r}, expected {version}")
        return executable


def claude_executable_or_skip() -> Path:
    """The pinned CLI, or a visible skip when npm or its registry cannot be reached."""
    try:
        return install_claude_cli()
    except ClaudeCliUnavailable as exc:
        pytest.skip(f"Claude Code {CLAUDE_CODE_VERSION} unavailable: {exc}")


def isolated_env(
    root: Path, *, base_url: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """An environment that keeps Claude Code (and what it starts) inside ``root``.

    Nothing is inherited from the caller but PATH and the locale, so the developer's own
    Claude Code configuration, credentials and Anthropic variables never leak in.
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
    env.update(
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
