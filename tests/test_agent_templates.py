"""`parallel-dispatch install agents`: ready agent files, idempotent, never clobbering."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from mcp import Client

from parallel_dispatch.agent_templates import AGENTS, template_text
from parallel_dispatch.cli import main

ORCHESTRATOR = "parallel-orchestrator.md"
WORKER = "parallel-worker.md"


def install_agents(*args: str) -> Result:
    return CliRunner().invoke(main, ["install", "agents", *args], catch_exceptions=False)


def front_matter(path: Path) -> tuple[dict[str, object], str]:
    text = path.read_text()
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.DOTALL)
    assert match, text[:200]
    meta = yaml.safe_load(match.group(1))
    assert isinstance(meta, dict)
    return meta, match.group(2)


def test_install_agents_writes_an_orchestrator_and_a_worker(tmp_path: Path) -> None:
    target = tmp_path / ".claude" / "agents"

    result = install_agents("--dir", str(target))

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in target.iterdir()) == [ORCHESTRATOR, WORKER]
    meta, body = front_matter(target / ORCHESTRATOR)
    assert meta["name"] == "parallel-orchestrator"
    assert "parallel" in str(meta["description"])
    tools = [t.strip() for t in str(meta["tools"]).split(",")]
    assert "Agent" in tools
    assert {
        "mcp__parallel-dispatch__plan_batches",
        "mcp__parallel-dispatch__register_coordination",
        "mcp__parallel-dispatch__record_result",
        "mcp__parallel-dispatch__get_coordination",
    } <= set(tools)
    assert body == template_text("orchestrator")
    worker_meta, worker_body = front_matter(target / WORKER)
    assert worker_meta["name"] == "parallel-worker"
    # No tools line: the worker inherits every tool, so it can do its task and report.
    assert "tools" not in worker_meta
    assert worker_body == template_text("worker")
    assert f"created: {target / ORCHESTRATOR}" in result.output


def test_the_orchestrator_teaches_the_whole_protocol() -> None:
    body = template_text("orchestrator")
    for step in (
        "plan_batches",
        "register_coordination",
        "ONE message",
        "coordination_id",
        "task_id",
        "NOT RECORDED",
        "record_result` for it yourself",
        "get_coordination()",
        "Synthesise once",
        "`results`",
    ):
        assert step in body, step


@pytest.mark.anyio
async def test_every_tool_the_templates_name_is_a_tool_of_the_server(client: Client) -> None:
    served = {tool.name for tool in (await client.list_tools()).tools}
    named = set()
    for agent in AGENTS:
        named |= set(re.findall(r"mcp__parallel-dispatch__(\w+)", agent.render()))

    assert named == served


def test_install_agents_twice_leaves_the_files_unchanged(tmp_path: Path) -> None:
    install_agents("--dir", str(tmp_path))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    again = install_agents("--dir", str(tmp_path))

    assert again.exit_code == 0, again.output
    assert again.output.count("unchanged: ") == 2
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_install_agents_refuses_to_overwrite_a_users_file_and_writes_nothing(
    tmp_path: Path,
) -> None:
    mine = tmp_path / ORCHESTRATOR
    mine.write_text("---\nname: parallel-orchestrator\n---\nmy own orchestrator\n")

    result = install_agents("--dir", str(tmp_path))

    assert result.exit_code == 1
    assert "--force" in result.output and str(mine) in result.output
    assert mine.read_text().endswith("my own orchestrator\n")
    assert not (tmp_path / WORKER).exists()


def test_install_agents_force_replaces_a_different_file(tmp_path: Path) -> None:
    mine = tmp_path / WORKER
    mine.write_text("old worker\n")

    result = install_agents("--dir", str(tmp_path), "--force")

    assert result.exit_code == 0, result.output
    assert f"replaced: {mine}" in result.output
    assert front_matter(mine)[0]["name"] == "parallel-worker"


def test_install_agents_dry_run_prints_the_files_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "agents"

    result = install_agents("--dir", str(target), "--dry-run")

    assert result.exit_code == 0, result.output
    assert not target.exists()
    assert f"would create {target / ORCHESTRATOR}:" in result.output
    assert "name: parallel-worker" in result.output


def test_install_agents_uses_the_registered_server_name_in_tool_names(tmp_path: Path) -> None:
    install_agents("--dir", str(tmp_path), "--server-name", "pd")

    text = (tmp_path / ORCHESTRATOR).read_text()
    assert "mcp__pd__register_coordination" in text
    assert "mcp__parallel-dispatch__" not in text
