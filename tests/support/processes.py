"""Real server subprocesses for transport tests: start, wait (bounded), stop the group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARALLEL_DISPATCH_", "OTEL_"))}
    env["PARALLEL_DISPATCH_DATABASE_URL"] = database_url
    env["PARALLEL_DISPATCH_HOST_PRESSURE"] = "off"
    env.update(extra)
    return env


def wait_for_health(
    url: str, process: subprocess.Popen[Any], deadline_s: float = 30.0, log: Path | None = None
) -> None:
    """Poll GET url until it answers 200, the process dies, or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited early with code {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not become healthy within {deadline_s} s")


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def http_server(
    database_url: str, tmp_path: Path, *args: str, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`parallel-dispatch serve --http` on a free loopback port; yields (base URL, process)."""
    port = free_port()
    log_path = tmp_path / f"http-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "parallel_dispatch", "serve", "--http", "--port", str(port), *args],
        env=server_env(database_url, **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(f"{base}/healthz", process, log=log_path)
        yield base, process
    finally:
        stop(process)
        log.close()
