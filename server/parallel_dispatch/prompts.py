"""MCP prompts (slash commands in Claude Code) that teach the fan-out protocol.

Their text is the agent templates' (`templates/*.md`), so `/fan-out` and the installed
`parallel-orchestrator` agent always tell the same story.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from parallel_dispatch.agent_templates import ORCHESTRATOR_TEMPLATE, WORKER_TEMPLATE, template_text

FAN_OUT = "fan-out"
REPORT_RESULT = "report-result"


def fan_out_text(goal: str, server_name: str) -> str:
    """The orchestrator protocol followed by the user's goal.

    Claude Code splits a slash command's text on spaces and passes only the first word as
    `goal`, but shows the model the whole text as the command's arguments; the last line
    points there.
    """
    protocol = template_text(ORCHESTRATOR_TEMPLATE, server_name)
    if not goal.strip():
        return f"{protocol}\nGoal: the work the user describes in this conversation.\n"
    return (
        f"{protocol}\nGoal (split it into parallel sub-tasks, or use the ones it lists):\n"
        f"{goal.strip()}\n(If this looks cut short, the goal is all the text the user typed "
        "after the command.)\n"
    )


def report_result_text(coordination_id: str | None, task_id: str | None, server_name: str) -> str:
    """The worker's reporting rules, with its ids when given."""
    text = template_text(WORKER_TEMPLATE, server_name)
    ids = [
        f"{key}={value.strip()}"
        for key, value in (("coordination_id", coordination_id), ("task_id", task_id))
        if value and value.strip()
    ]
    if ids:
        text += f"\nYour ids: {', '.join(ids)}.\n"
    return text


def register_prompts(server: MCPServer[Any]) -> None:
    """Add `fan-out` (for an orchestrator) and `report-result` (for a worker)."""
    server_name = server.name

    @server.prompt(
        name=FAN_OUT,
        title="Fan out in parallel",
        description="Run a goal as parallel sub-agents: plan, register, launch, synthesise.",
    )
    def fan_out(
        goal: Annotated[str, Field(description="the goal, or a list of sub-tasks")] = "",
    ) -> str:
        return fan_out_text(goal, server_name)

    @server.prompt(
        name=REPORT_RESULT,
        title="Report a task result",
        description="How a sub-agent of a fan-out reports its outcome with record_result.",
    )
    def report_result(
        coordination_id: Annotated[str | None, Field(description="from your prompt")] = None,
        task_id: Annotated[str | None, Field(description="from your prompt")] = None,
    ) -> str:
        return report_result_text(coordination_id, task_id, server_name)
