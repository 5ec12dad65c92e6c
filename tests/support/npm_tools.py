"""Pinned npm tools for the end-to-end tests (MCP Inspector, conformance suite, Node 22).

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
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
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
