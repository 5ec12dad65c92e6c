"""Shared fixtures: every test gets its own database file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from parallel_dispatch.server import build_server, build_service
from parallel_dispatch.service import DispatchService
from parallel_dispatch.settings import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, host_pressure=False)


class FakeClock:
    """A clock the test moves by hand (for timeouts and measured durations)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(settings: Settings, clock: FakeClock) -> DispatchService:
    return build_service(settings, clock=clock)


@pytest.fixture
async def client(settings: Settings, service: DispatchService) -> AsyncIterator[Client]:
    async with Client(build_server(settings, service)) as c:
        yield c


CallTool = Callable[..., Any]


async def call_ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool and return its structured content, failing the test on a tool error."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail and return the error text the agent would read."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    text = "".join(getattr(block, "text", "") for block in result.content)
    assert text
    return text
