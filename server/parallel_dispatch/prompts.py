"""MCP prompts (slash commands in Claude Code) that teach the fan-out protocol."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer


def register_prompts(server: MCPServer[Any]) -> None:
    """Add the prompts; the texts live with the agent templates."""
    return None
