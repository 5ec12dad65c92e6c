"""The MCP Inspector CLI, a client we did not write, drives the server over stdio and HTTP.

Pinned `@modelcontextprotocol/inspector@2.12.0` (installed once from npm, see
tests/support/npm_tools.py). Its exit codes are part of what is tested: 0 ok, 1 other error,
4 unreachable, 5 tool error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.npm_tools import inspector_command
from tests.support.processes import http_server, server_env

pytestmark = pytest.mark.slow

TOOLS = {"plan_batches", "register_coordination", "record_result", "get_coordination"}
EXIT_OK = 0
EXIT_TOOL_ERROR = 5
CALL_TIMEOUT_S = 120


@dataclass(frozen=True)
class Target:
    """How the Inspector reaches the server under test, plus what it needs to run there."""

    argv: list[str]
    env: dict[str, str]
    scratch: Path


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"Inspector printed no JSON (exit {self.returncode}):\n{self.describe()}")

    def describe(self) -> str:
        return f"stdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"


def inspect(target: Target, *options: str) -> Outcome:
    """Run one Inspector CLI command against the target, bounded by CALL_TIMEOUT_S."""
    env = dict(target.env)
    # The Inspector keeps a catalog and storage under HOME: keep them out of the real one.
    env["HOME"] = str(target.scratch / "inspector-home")
    env["MCP_CATALOG_PATH"] = str(target.scratch / "inspector-catalog.json")
    done = subprocess.run(
        [*inspector_command(), "--cli", *target.argv, *options],
        capture_output=True,
        text=True,
        env=env,
        cwd=target.scratch,
        timeout=CALL_TIMEOUT_S,
        check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def call(target: Target, tool: str, arguments: dict[str, Any]) -> Outcome:
    return inspect(
        target,
        "--method",
        "tools/call",
        "--tool-name",
        tool,
        "--tool-args-json",
        json.dumps(arguments),
    )


def structured(outcome: Outcome) -> dict[str, Any]:
    assert outcome.returncode == EXIT_OK, outcome.describe()
    result = outcome.json()
    assert result.get("isError") is False, outcome.describe()
    content: dict[str, Any] = result["structuredContent"]
    return content


@pytest.fixture(params=["stdio", "http"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """The server under test, one fresh SQLite database per test."""
    database_url = f"sqlite:///{tmp_path / 'dispatch.db'}"
    env = server_env(database_url)
    if request.param == "stdio":
        # Each Inspector run starts its own server process; they share the SQLite file. The
        # Inspector gives a stdio server only a minimal environment plus its `-e` pairs.
        passed = [
            option
            for key, value in sorted(env.items())
            if key.startswith("PARALLEL_DISPATCH_") or key == "PYTHONPATH"
            for option in ("-e", f"{key}={value}")
        ]
        argv = [sys.executable, "-m", "parallel_dispatch", "serve", *passed]
        yield Target(argv, env, tmp_path)
    else:
        with http_server(database_url, tmp_path) as (base_url, _process):
            yield Target([f"{base_url}/mcp"], env, tmp_path)


def test_inspector_lists_the_four_tools_with_portable_schemas(target: Target) -> None:
    # --strict exits 6 when a tool schema has an error-severity portability problem.
    outcome = inspect(target, "--method", "tools/list", "--strict")
    assert outcome.returncode == EXIT_OK, outcome.describe()
    tools = {tool["name"]: tool for tool in outcome.json()["tools"]}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool["description"].strip()
        assert tool["inputSchema"]["type"] == "object"
        assert tool["outputSchema"]["type"] == "object"
    assert tools["plan_batches"]["annotations"]["readOnlyHint"] is True
    assert tools["get_coordination"]["annotations"]["readOnlyHint"] is True
    assert tools["record_result"]["annotations"]["idempotentHint"] is True


def test_inspector_runs_a_whole_fan_out_through_all_four_tools(target: Target) -> None:
    tasks = [{"id": "lint"}, {"id": "unit"}, {"id": "report", "depends_on": ["lint", "unit"]}]

    plan = structured(call(target, "plan_batches", {"tasks": tasks}))
    assert [batch["task_ids"] for batch in plan["batches"]] == [["lint", "unit"], ["report"]]

    registered = structured(
        call(target, "register_coordination", {"tasks": tasks, "label": "inspector"})
    )
    coordination_id = registered["coordination_id"]
    assert {entry["task_id"] for entry in registered["launch"]} == {"lint", "unit"}

    for task_id in ("lint", "unit"):
        progress = structured(
            call(
                target,
                "record_result",
                {
                    "coordination_id": coordination_id,
                    "task_id": task_id,
                    "status": "succeeded",
                    "summary": f"{task_id} ok",
                },
            )
        )
        assert progress["recorded"] is True
    assert [entry["task_id"] for entry in progress["launch"]] == ["report"]

    final = structured(
        call(
            target,
            "record_result",
            {
                "coordination_id": coordination_id,
                "task_id": "report",
                "status": "succeeded",
                "summary": "all green",
            },
        )
    )
    assert final["state"] == "completed"
    assert {r["task_id"]: r["summary"] for r in final["results"]} == {
        "lint": "lint ok",
        "unit": "unit ok",
        "report": "all green",
    }

    snapshot = structured(call(target, "get_coordination", {"coordination_id": coordination_id}))
    assert snapshot["state"] == "completed"
    assert snapshot["label"] == "inspector"
    # The server really used the database the test gave it.
    assert (target.scratch / "dispatch.db").is_file()


def test_inspector_reports_a_bad_call_as_a_tool_error_with_exit_code_5(target: Target) -> None:
    outcome = call(
        target,
        "record_result",
        {
            "coordination_id": "no-such-coordination",
            "task_id": "t1",
            "status": "succeeded",
            "summary": "x",
        },
    )
    assert outcome.returncode == EXIT_TOOL_ERROR, outcome.describe()
    result = outcome.json()
    assert result["isError"] is True
    message = " ".join(part.get("text", "") for part in result["content"])
    assert "no-such-coordination" in message

    # The server is still serving after the error.
    listed = inspect(target, "--method", "tools/list")
    assert listed.returncode == EXIT_OK, listed.describe()


def test_http_server_with_a_token_refuses_the_inspector_without_it(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'dispatch.db'}"
    token = {"PARALLEL_DISPATCH_AUTH_TOKEN": "s3cret-token-for-tests"}
    with http_server(database_url, tmp_path, **token) as (base_url, _process):
        target = Target([f"{base_url}/mcp"], server_env(database_url, **token), tmp_path)

        refused = inspect(target, "--method", "tools/list")
        assert refused.returncode != EXIT_OK, refused.describe()

        wrong = inspect(target, "--method", "tools/list", "--header", "Authorization: Bearer wrong")
        assert wrong.returncode != EXIT_OK, wrong.describe()

        allowed = inspect(
            target,
            "--method",
            "tools/list",
            "--header",
            "Authorization: Bearer s3cret-token-for-tests",
        )
        assert allowed.returncode == EXIT_OK, allowed.describe()
        assert {tool["name"] for tool in allowed.json()["tools"]} == TOOLS
