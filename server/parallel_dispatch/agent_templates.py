"""The fan-out protocol as text: Claude Code agent definitions and the MCP prompts' bodies.

The texts live in `templates/*.md` (package data) and are the single source for both the
`.claude/agents/*.md` files that `install agents` writes and the server's prompts. They name
the tools as Claude Code shows them, `mcp__parallel-dispatch__<tool>`; a server registered
under another name gets that name substituted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from parallel_dispatch.claude_config import DEFAULT_SERVER_NAME

TOOL_PREFIX = f"mcp__{DEFAULT_SERVER_NAME}__"
CONTRACT_TOOLS = ("plan_batches", "register_coordination", "record_result", "get_coordination")
ORCHESTRATOR_TEMPLATE = "orchestrator"
WORKER_TEMPLATE = "worker"


def template_text(template: str, server_name: str = DEFAULT_SERVER_NAME) -> str:
    """The body of `templates/<template>.md`, with tool names for `server_name`.

    Raises:
        FileNotFoundError: no such template in the package.
    """
    text = resources.files("parallel_dispatch").joinpath(f"templates/{template}.md").read_text()
    return text.replace(TOOL_PREFIX, f"mcp__{server_name}__")


@dataclass(frozen=True)
class AgentTemplate:
    """One Claude Code sub-agent definition: front matter fields plus a template body."""

    name: str
    description: str
    template: str
    tools: tuple[str, ...] | None  # None: the agent inherits every tool, MCP ones included

    def render(self, server_name: str = DEFAULT_SERVER_NAME) -> str:
        """The agent file: YAML front matter (JSON-quoted scalars are valid YAML), then body."""
        lines = ["---", f"name: {self.name}", f"description: {json.dumps(self.description)}"]
        if self.tools is not None:
            tools = [t.replace(TOOL_PREFIX, f"mcp__{server_name}__") for t in self.tools]
            lines.append(f"tools: {', '.join(tools)}")
        lines += ["---", ""]
        return "\n".join(lines) + template_text(self.template, server_name)


AGENTS: tuple[AgentTemplate, ...] = (
    AgentTemplate(
        name="parallel-orchestrator",
        description=(
            "Use for work that splits into several independent sub-tasks to run in parallel "
            "(review many files, research several questions, fix many failing tests). Plans "
            "batches with parallel-dispatch, launches each batch as parallel sub-agents, "
            "tracks their results and returns one synthesis."
        ),
        template=ORCHESTRATOR_TEMPLATE,
        tools=(
            "Agent",
            *(TOOL_PREFIX + tool for tool in CONTRACT_TOOLS),
            "Read",
            "Grep",
            "Glob",
        ),
    ),
    AgentTemplate(
        name="parallel-worker",
        description=(
            "A sub-task of a parallel-dispatch fan-out: does the one task in its prompt and "
            "reports it with record_result. Launched by parallel-orchestrator, not directly."
        ),
        template=WORKER_TEMPLATE,
        tools=None,
    ),
)

FileAction = Literal["create", "unchanged", "replace", "refuse"]


@dataclass(frozen=True)
class AgentFile:
    """One agent file to write, and what writing it would do to what is there now."""

    path: Path
    text: str
    action: FileAction


def plan_agent_files(directory: Path, *, force: bool, server_name: str) -> list[AgentFile]:
    """What `install agents` would do in `directory`: never replace a different file unless
    `force`; identical content is left alone."""
    planned = []
    for agent in AGENTS:
        path = directory / f"{agent.name}.md"
        text = agent.render(server_name)
        action: FileAction
        if not path.exists():
            action = "create"
        elif path.is_file() and path.read_text(errors="replace") == text:
            action = "unchanged"
        else:
            action = "replace" if force and path.is_file() else "refuse"
        planned.append(AgentFile(path, text, action))
    return planned
