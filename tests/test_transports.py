"""A whole fan-out over each real transport: a stdio subprocess and uvicorn on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.support.fan_out import run_twelve_task_fan_out
from tests.support.processes import http_server, server_env

pytestmark = pytest.mark.anyio


async def test_stdio_subprocess_runs_a_whole_fan_out(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "parallel_dispatch", "serve"],
        env=server_env(f"sqlite:///{tmp_path / 'stdio.db'}"),
    )
    with anyio.fail_after(60):
        async with Client(params) as client:
            progress = await run_twelve_task_fan_out(client)
    assert progress["state"] == "completed"
    results = progress["results"]
    assert isinstance(results, list) and len(results) == 12
    assert {r["summary"] for r in results} == {f"summary of t{i}" for i in range(12)}


def test_stdio_prints_nothing_but_protocol_on_stdout(tmp_path: Path) -> None:
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    completed = subprocess.run(
        [sys.executable, "-m", "parallel_dispatch", "serve", "--log-level", "DEBUG"],
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        env=server_env(f"sqlite:///{tmp_path / 'quiet.db'}"),
        timeout=60,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    assert lines, completed.stderr
    for line in lines:
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert "parallel_dispatch" in completed.stderr  # the logs went to stderr instead


async def test_http_server_runs_a_whole_fan_out_and_answers_healthz(tmp_path: Path) -> None:
    with http_server(f"sqlite:///{tmp_path / 'http.db'}", tmp_path) as (base, _):
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            assert json.load(response)["status"] == "ok"
        with anyio.fail_after(60):
            async with Client(f"{base}/mcp") as client:
                progress = await run_twelve_task_fan_out(client)
    assert progress["state"] == "completed"


async def test_http_bearer_token_is_required_when_set(tmp_path: Path) -> None:
    env = {"PARALLEL_DISPATCH_AUTH_TOKEN": "s3cret"}
    with http_server(f"sqlite:///{tmp_path / 'auth.db'}", tmp_path, **env) as (base, _):
        with anyio.fail_after(30):
            unauthorized = httpx2.post(f"{base}/mcp", json={}, timeout=5)
            assert unauthorized.status_code == 401
            headers = {"Authorization": "Bearer s3cret"}
            async with (
                httpx2.AsyncClient(headers=headers) as http,
                Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
            ):
                listed = await client.list_tools()
    assert len(listed.tools) == 4


def test_binding_beyond_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "parallel_dispatch", "serve", "--http", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=server_env(f"sqlite:///{tmp_path / 'x.db'}"),
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "PARALLEL_DISPATCH_AUTH_TOKEN" in completed.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stdio_server_stops_on_ctrl_c_or_sigterm_while_waiting_for_input(
    tmp_path: Path, signum: int
) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "parallel_dispatch", "serve", "--log-level", "INFO"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(f"sqlite:///{tmp_path / 'sig.db'}"),
    ) as process:
        try:
            assert process.stderr is not None
            # wait (bounded) until it is serving, i.e. blocked reading stdin
            deadline = time.monotonic() + 60
            seen = b""
            while b"serving MCP over stdio" not in seen:
                assert time.monotonic() < deadline, seen
                seen += process.stderr.readline()
            process.send_signal(signum)
            assert process.wait(timeout=15) == 128 + signum
        finally:
            if process.poll() is None:
                process.kill()
