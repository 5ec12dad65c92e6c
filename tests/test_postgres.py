"""The server on PostgreSQL: migrations, a whole fan-out through an MCP client, and two
processes recording results into one coordination at once.

Needs a server: set ``PARALLEL_DISPATCH_TEST_POSTGRES_URL`` (e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) to a role that may create
databases. ``.ci/run`` starts a throwaway PostgreSQL 15 and sets it. Every test creates its own
database with a unique name and drops it afterwards.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from mcp import Client
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from parallel_dispatch import tables  # noqa: F401  (registers the tables on the metadata)
from parallel_dispatch.db import current_revision, head_revision, make_engine, upgrade_database
from parallel_dispatch.server import build_server
from parallel_dispatch.service import DispatchService
from parallel_dispatch.settings import Settings
from parallel_dispatch.store import Store
from tests.conftest import call_ok
from tests.support.concurrency import race_registrations
from tests.support.fan_out import LABEL, run_twelve_task_fan_out

POSTGRES_URL_VARIABLE = "PARALLEL_DISPATCH_TEST_POSTGRES_URL"
POSTGRES_URL = os.environ.get(POSTGRES_URL_VARIABLE)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not POSTGRES_URL,
        reason=f"{POSTGRES_URL_VARIABLE} is not set: no PostgreSQL to test against "
        "(.ci/run starts one)",
    ),
]

WORKER_DEADLINE_S = 120.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on the test server; dropped after the test."""
    assert POSTGRES_URL is not None
    name = f"pd_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            # FORCE: a connection a failed test left open must not keep the database alive.
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def pg_settings(url: str, **overrides: Any) -> Settings:
    return Settings(database_url=url, host_pressure=False, **overrides)


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[Client]:
    """An in-memory MCP client on a server whose (migrated) engine is disposed afterwards."""
    engine = make_engine(settings.database_url)
    try:
        upgrade_database(engine)
        server = build_server(settings, DispatchService(Store(engine), settings))
        async with Client(server) as client:
            yield client
    finally:
        engine.dispose()


def test_migrations_bring_an_empty_postgres_database_to_head_matching_the_models(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url)
    try:
        assert current_revision(engine) is None
        upgrade_database(engine)
        head = head_revision()
        assert current_revision(engine) == head
        with engine.connect() as connection:
            names = set(inspect(connection).get_table_names())
            assert {table.name for table in SQLModel.metadata.sorted_tables} <= names
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, SQLModel.metadata) == []
        # Starting again on a migrated database is a no-op, not an error.
        upgrade_database(engine)
        assert current_revision(engine) == head
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_a_whole_fan_out_runs_on_postgres_through_the_mcp_client(
    postgres_url: str,
) -> None:
    settings = pg_settings(postgres_url)

    async with connected(settings) as client:
        progress = await run_twelve_task_fan_out(client)
        coordination_id = progress["coordination_id"]
        assert progress["state"] == "completed"
        assert progress["done"] == progress["total"] == 12
        assert {r["task_id"]: r["summary"] for r in progress["results"]} == {
            f"t{n}": f"summary of t{n}" for n in range(12)
        }

    # A second server on the same database (another machine sharing it) sees the outcome.
    async with connected(settings) as other:
        snapshot = await call_ok(other, "get_coordination", coordination_id=coordination_id)
        assert snapshot["state"] == "completed"
        assert snapshot["label"] == LABEL
        assert len(snapshot["results"]) == 12


def _record_half(
    url: str, coordination_id: str, task_ids: list[str], start: Any, answers_file: str
) -> None:
    """Worker process: record results for `task_ids`, all at once, after the barrier."""

    async def run() -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = []
        async with connected(pg_settings(url, max_parallel=100, max_active_agents=100)) as client:

            async def record(task_id: str) -> None:
                result = await client.call_tool(
                    "record_result",
                    {
                        "coordination_id": coordination_id,
                        "task_id": task_id,
                        "status": "succeeded",
                        "summary": f"{task_id} by {os.getpid()}",
                    },
                )
                assert not result.is_error, result.content
                answers.append(dict(result.structured_content or {}))

            start.wait(WORKER_DEADLINE_S)
            async with anyio.create_task_group() as group:
                for task_id in task_ids:
                    group.start_soon(record, task_id)
        return answers

    Path(answers_file).write_text(json.dumps(anyio.run(run)))


@pytest.mark.anyio
async def test_two_processes_recording_results_at_once_lose_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = pg_settings(postgres_url, max_parallel=100, max_active_agents=100)
    task_ids = [f"task-{n:02d}" for n in range(40)]
    async with connected(settings) as client:
        registered = await call_ok(
            client,
            "register_coordination",
            tasks=[{"id": task_id} for task_id in task_ids],
            max_parallel=100,
        )
    coordination_id = registered["coordination_id"]
    assert len(registered["launch"]) == len(task_ids), "all tasks should start at once"

    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(2)
    halves = [task_ids[0::2], task_ids[1::2]]
    answer_files = [tmp_path / f"answers-{n}.json" for n in range(2)]
    workers = [
        spawn.Process(
            target=_record_half,
            args=(postgres_url, coordination_id, half, start, str(answers)),
        )
        for half, answers in zip(halves, answer_files, strict=True)
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join(WORKER_DEADLINE_S)
            assert worker.exitcode == 0, f"worker {worker.pid} ended with {worker.exitcode}"
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join(10)

    answers = [a for path in answer_files for a in json.loads(path.read_text())]
    assert len(answers) == len(task_ids)
    assert all(a["recorded"] for a in answers)
    # Every answer counted every result committed before it: the `done` values are exactly
    # 1..40 and exactly one caller (the last) got the completed state with all results.
    assert sorted(a["done"] for a in answers) == list(range(1, len(task_ids) + 1))
    finals = [a for a in answers if a["state"] == "completed"]
    assert len(finals) == 1
    assert len(finals[0]["results"]) == len(task_ids)

    async with connected(settings) as client:
        snapshot = await call_ok(client, "get_coordination", coordination_id=coordination_id)
    assert snapshot["state"] == "completed"
    by_id = {r["task_id"]: r for r in snapshot["results"]}
    assert set(by_id) == set(task_ids)
    assert all(r["status"] == "succeeded" for r in by_id.values())
    assert all(r["summary"].startswith(r["task_id"] + " by ") for r in by_id.values())


def test_racing_registrations_on_postgres_never_launch_more_than_the_shared_slots(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url)
    upgrade_database(engine)
    engine.dispose()
    results = race_registrations(postgres_url, racers=3, tasks=6, max_active_agents=10)
    launched = sorted(count for _, count, _ in results)
    assert sum(launched) <= 10, results
    assert launched[-1] == 6 and launched[0] >= 1, results
