"""Pinned npm tools for the end-to-end tests (MCP Inspector, conformance suite, Node 22),
and the real HTTP server subprocess those external clients are pointed at.

Each ``package@version`` is installed once into its own prefix under
``~/.cache/parallel-dispatch-tests/npm/`` (``PARALLEL_DISPATCH_TEST_NPM_CACHE`` overrides the
root) and reused by later runs. A file lock per prefix makes concurrent test processes wait
for one install instead of racing. The only reason a caller is skipped is that npm itself or
the npm registry cannot be reached; any other install failure fails the test loudly.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

INSPECTOR = ("@modelcontextprotocol/inspector", "2.12.0")
CONFORMANCE = ("@modelcontextprotocol/conformance", "0.1.16")
# The conformance suite needs Node 22; the machine's Node is 20. The `node` package on npm
# fetches the official binary for this platform as its dependency (registry only, no other
# download), so the whole tool chain comes from the npm registry.
NODE_22 = ("node", "22.23.3")

_INSTALL_TIMEOUT_S = 600
_PROBE_TIMEOUT_S = 60
_MARKER = ".parallel-dispatch-installed"


def cache_root() -> Path:
    """Return the directory that holds one npm prefix per pinned package."""
    override = os.environ.get("PARALLEL_DISPATCH_TEST_NPM_CACHE")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "parallel-dispatch-tests" / "npm"


def npm_executable() -> str:
    """Return the npm executable, or skip the calling test when npm is not installed."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: cannot fetch the pinned MCP client tools")
    return npm


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _registry_reachable(npm: str, spec: str) -> tuple[bool, str]:
    try:
        probe = subprocess.run(
            [npm, "view", spec, "version"],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"`npm view {spec}` timed out after {_PROBE_TIMEOUT_S}s"
    if probe.returncode == 0 and probe.stdout.strip():
        return True, ""
    return False, (probe.stderr.strip() or probe.stdout.strip())[-500:]


def install_prefix(package: str, version: str) -> Path:
    """Install ``package@version`` into its own cached prefix once and return the prefix.

    Skips the calling test when npm or the npm registry cannot be reached. Fails it when the
    registry answers but the install still goes wrong.
    """
    npm = npm_executable()
    spec = f"{package}@{version}"
    prefix = cache_root() / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', package.lstrip('@'))}-{version}"
    marker = prefix / _MARKER
    if marker.is_file():
        return prefix
    with _locked(prefix.with_name(prefix.name + ".lock")):
        if marker.is_file():  # another process finished the install while we waited
            return prefix
        if prefix.exists():
            shutil.rmtree(prefix)  # a half-finished earlier attempt
        prefix.mkdir(parents=True)
        (prefix / "package.json").write_text('{"private": true}\n')
        try:
            result = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--save-exact", spec],
                cwd=prefix,
                capture_output=True,
                text=True,
                timeout=_INSTALL_TIMEOUT_S,
                check=False,
            )
            failure = None if result.returncode == 0 else (result.stderr or result.stdout)[-2000:]
        except subprocess.TimeoutExpired:
            failure = f"`npm install {spec}` timed out after {_INSTALL_TIMEOUT_S}s"
        if failure is not None:
            reachable, why = _registry_reachable(npm, spec)
            if not reachable:
                pytest.skip(f"npm registry unreachable, cannot install {spec}: {why}")
            pytest.fail(f"npm install {spec} failed although the registry answers:\n{failure}")
        marker.write_text(spec + "\n")
    return prefix


def npm_bin(package: str, version: str, bin_name: str) -> Path:
    """Return the path of ``bin_name`` from the cached install of ``package@version``."""
    path = install_prefix(package, version) / "node_modules" / ".bin" / bin_name
    if not path.exists():
        pytest.fail(f"{package}@{version} installed but has no `{bin_name}` executable at {path}")
    return path


def inspector_command() -> list[str]:
    """Return the argv prefix that runs the pinned MCP Inspector (add ``--cli`` for its CLI).

    Inspector 2.x declares ``node >= 22.19``, so it runs on the Node 22 from npm as well.
    """
    script = npm_bin(*INSPECTOR, "mcp-inspector").resolve()
    return [str(node22()), str(script)]


def node22() -> Path:
    """Return a Node 22 executable installed from the npm registry."""
    return npm_bin(*NODE_22, "node")


def conformance_command() -> list[str]:
    """Return the argv prefix that runs the pinned conformance suite on Node 22."""
    script = npm_bin(*CONFORMANCE, "conformance").resolve()
    return [str(node22()), str(script)]


# --- the server those tools talk to -------------------------------------------------------


def free_loopback_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """Environment for a server subprocess with its own SQLite file and state dirs in tmp_path."""
    # The caller's own PARALLEL_DISPATCH_* / OTEL_* settings must not leak into the server.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PARALLEL_DISPATCH_", "OTEL_"))
    }
    env.update(
        {
            "HOME": str(tmp_path / "home"),
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "PARALLEL_DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'dispatch.db'}",
            "PARALLEL_DISPATCH_HOST_PRESSURE": "off",
        }
    )
    env.update({f"PARALLEL_DISPATCH_{key.upper()}": value for key, value in settings.items()})
    return env


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Terminate a process started with ``start_new_session=True`` and everything it spawned."""
    for sig, grace_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        return


@contextmanager
def serving_http(env: dict[str, str], log_path: Path, startup_s: float = 60.0) -> Iterator[str]:
    """Run ``parallel-dispatch serve --http`` on a free loopback port; yield its base URL.

    Waits, up to ``startup_s``, for ``GET /healthz`` to answer 200; fails the test with the
    server's log if it exits or never becomes healthy. Kills the process group afterwards.
    """
    port = free_loopback_port()
    executable = Path(sys.executable).with_name("parallel-dispatch")
    command = [str(executable), "serve", "--http", "--host", "127.0.0.1", "--port", str(port)]
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_healthy(process, f"{base_url}/healthz", startup_s, log_path)
            yield base_url
        finally:
            stop_process_group(process)


def _wait_healthy(
    process: subprocess.Popen[bytes], url: str, deadline_s: float, log_path: Path
) -> None:
    deadline = time.monotonic() + deadline_s
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"server exited with {process.returncode} before {url} answered:\n"
                + log_path.read_text(errors="replace")[-4000:]
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (OSError, urllib.error.URLError) as exc:
            last_error = repr(exc)
        # Poll interval of a bounded wait: the deadline above is what ends it.
        time.sleep(0.1)
    pytest.fail(
        f"{url} not healthy after {deadline_s}s ({last_error}):\n"
        + log_path.read_text(errors="replace")[-4000:]
    )
