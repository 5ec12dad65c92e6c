"""Factories: the service on a migrated database, and the MCP server around it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from mcp.server.mcpserver import MCPServer

from parallel_dispatch import __version__
from parallel_dispatch.db import make_engine, upgrade_database
from parallel_dispatch.events import DispatchObserver
from parallel_dispatch.planning import HostReading
from parallel_dispatch.prompts import register_prompts
from parallel_dispatch.service import DispatchService, utc_now
from parallel_dispatch.settings import Settings
from parallel_dispatch.store import Store
from parallel_dispatch.tools import contract_tools

SERVER_NAME = "parallel-dispatch"
INSTRUCTIONS = (
    "Run many sub-agents in parallel, bounded and tracked: plan_batches to preview, "
    "register_coordination before launching, record_result from every sub-agent, "
    "get_coordination to resume after compaction."
)


def build_service(
    settings: Settings,
    *,
    observer: DispatchObserver | None = None,
    host_reader: Callable[[], HostReading] | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> DispatchService:
    """Open (and migrate) the database and return the service on it.

    Raises:
        StorageError: the database cannot be opened or migrated.
    """
    engine = make_engine(settings.database_url)
    upgrade_database(engine)
    return DispatchService(
        Store(engine), settings, observer=observer, clock=clock, host_reader=host_reader
    )


def build_server(settings: Settings, service: DispatchService | None = None) -> MCPServer[Any]:
    """The MCP server with the contract's tools and prompts.

    Raises:
        StorageError: when no service is given and the database cannot be opened.
    """
    service = service or build_service(settings)
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level=settings.log_level,
        tools=contract_tools(service),
    )
    register_prompts(server)
    return server
