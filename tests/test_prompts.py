"""The server's MCP prompts: listed, rendered with their arguments, same text as the agents."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mcp import Client

from parallel_dispatch.agent_templates import template_text
from tests.support.claude_cli import claude_executable_or_skip, isolated_env, run_claude
from tests.support.fake_anthropic import FakeAnthropic, Text, reply

EXECUTABLE = Path(sys.executable).with_name("parallel-dispatch")
COMMAND = "/mcp__parallel-dispatch__fan-out"


def _text(result: object) -> str:
    messages = result.messages  # type: ignore[attr-defined]
    assert len(messages) == 1
    assert messages[0].role == "user"
    text = messages[0].content.text
    assert isinstance(text, str)
    return text


@pytest.mark.anyio
async def test_prompts_list_offers_fan_out_and_report_result(client: Client) -> None:
    listed = {p.name: p for p in (await client.list_prompts()).prompts}

    assert set(listed) == {"fan-out", "report-result"}
    assert [a.name for a in listed["fan-out"].arguments or []] == ["goal"]
    assert {a.name for a in listed["report-result"].arguments or []} == {
        "coordination_id",
        "task_id",
    }
    assert all(p.description for p in listed.values())


@pytest.mark.anyio
async def test_fan_out_renders_the_orchestrator_protocol_with_the_goal(client: Client) -> None:
    goal = "Review server/a.py, server/b.py and server/c.py for unchecked errors"

    text = _text(await client.get_prompt("fan-out", {"goal": goal}))

    assert text.startswith(template_text("orchestrator"))
    assert goal in text
    for tool in ("register_coordination", "record_result", "get_coordination"):
        assert f"mcp__parallel-dispatch__{tool}" in text or f"`{tool}`" in text
    assert "ONE message" in text


@pytest.mark.anyio
async def test_fan_out_without_a_goal_points_at_the_conversation(client: Client) -> None:
    text = _text(await client.get_prompt("fan-out", {}))

    assert "Goal: the work the user describes in this conversation." in text


@pytest.mark.anyio
async def test_report_result_renders_the_worker_rules_with_the_ids(client: Client) -> None:
    text = _text(
        await client.get_prompt("report-result", {"coordination_id": "co_42", "task_id": "t7"})
    )

    assert text.startswith(template_text("worker"))
    assert "coordination_id=co_42, task_id=t7" in text
    assert "mcp__parallel-dispatch__record_result" in text


@pytest.mark.slow
def test_fan_out_is_a_slash_command_in_the_real_claude_code(tmp_path: Path) -> None:
    claude = claude_executable_or_skip()
    goal = "review server/a.py and server/b.py for unchecked errors"
    server = {"type": "stdio", "command": str(EXECUTABLE), "args": ["serve"], "env": {}}
    config = json.dumps({"mcpServers": {"parallel-dispatch": server}})
    project = tmp_path / "project"
    project.mkdir()
    with FakeAnthropic(lambda _request: reply(Text("ok"))) as fake:
        run = run_claude(
            claude,
            ["-p", "--mcp-config", config, "--strict-mcp-config", "--", f"{COMMAND} {goal}"],
            env=isolated_env(tmp_path / "sandbox", base_url=fake.base_url),
            cwd=project,
            timeout_s=120,
            log_dir=tmp_path,
        )
        sent = [r for r in fake.requests if r.is_messages_call]
    assert run.returncode == 0, run.describe()
    assert sent, run.describe()
    # What the model gets: the protocol, and the whole goal (Claude Code passes only the first
    # word as the argument but shows the full text as the command's arguments).
    user_text = json.dumps(sent[-1].messages)
    assert json.dumps(template_text("orchestrator"))[1:-1] in user_text
    assert f"<command-args>{goal}</command-args>" in user_text
