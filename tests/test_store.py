"""The store on a real SQLite file: concurrency, migrations, loud failures."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from parallel_dispatch import tables  # noqa: F401  (registers the tables)
from parallel_dispatch.db import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    upgrade_database,
)
from parallel_dispatch.errors import StorageError
from parallel_dispatch.models import ResultIn, TaskSpec
from parallel_dispatch.server import build_service
from parallel_dispatch.service import DispatchService
from parallel_dispatch.settings import Settings
from tests.support.concurrency import race_registrations
from tests.support.processes import server_env

TASKS = 120


def _record_share(database_url: str, coordination_id: str, task_ids: list[str]) -> None:
    service = build_service(Settings(database_url=database_url, host_pressure=False))
    for task_id in task_ids:
        service.record_result(
            ResultIn(
                coordination_id=coordination_id,
                task_id=task_id,
                status="succeeded",
                summary=f"done {task_id}",
            )
        )


def _register(service: DispatchService, n: int) -> str:
    specs = [TaskSpec(id=f"t{i}") for i in range(n)]
    return service.register_coordination(specs, mode="stream").coordination_id


def test_two_processes_recording_into_one_sqlite_file_lose_nothing(database_url: str) -> None:
    service = build_service(Settings(database_url=database_url, host_pressure=False))
    cid = _register(service, TASKS)
    ids = [f"t{i}" for i in range(TASKS)]
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_record_share, args=(database_url, cid, ids[k::2])) for k in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    view = service.get_coordination(cid)
    assert view.done == TASKS
    assert view.state == "completed"
    assert view.results is not None
    assert {r.summary for r in view.results} == {f"done {i}" for i in ids}


def test_concurrent_threads_recording_results_lose_nothing(database_url: str) -> None:
    service = build_service(Settings(database_url=database_url, host_pressure=False))
    cid = _register(service, 60)
    with ThreadPoolExecutor(max_workers=8) as pool:
        progress = list(
            pool.map(
                lambda i: service.record_result(
                    ResultIn(coordination_id=cid, task_id=f"t{i}", status="succeeded", summary="ok")
                ),
                range(60),
            )
        )
    assert all(p.recorded for p in progress)
    assert sorted(p.done for p in progress) == list(range(1, 61))
    assert service.get_coordination(cid).state == "completed"


def test_the_models_and_the_migrations_agree(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade_database(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_a_database_written_by_the_first_schema_is_upgraded_and_resumable(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    command.upgrade(alembic_config(engine), "0001_initial")
    launched = "2026-01-01 12:00:00.000000"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO coordination (id, label, mode, state, width, task_timeout_s, "
                "plan_json, trace_id, span_id, created_at) VALUES ('co_old', 'old', 'waves', "
                '\'running\', 2, 1800, \'{"mode": "waves", "width": 2, "batches": [], '
                '"dispatch_order": []}\', :trace, :span, :at)'
            ),
            {"trace": "a" * 32, "span": "b" * 16, "at": launched},
        )
        for task_id, status in (("t0", "running"), ("t1", "pending")):
            connection.execute(
                text(
                    "INSERT INTO task (coordination_id, task_id, agent, depends_on_json, "
                    "batch_index, dispatch_rank, span_id, status, launched_at) VALUES "
                    "('co_old', :id, 'general-purpose', '[]', :batch, :batch, :span, :status, :at)"
                ),
                {
                    "id": task_id,
                    "batch": int(task_id[1]),
                    "span": task_id * 8,
                    "status": status,
                    "at": launched if status == "running" else None,
                },
            )
    assert current_revision(engine) == "0001_initial"
    service = build_service(Settings(database_url=database_url, host_pressure=False))
    assert current_revision(engine) == head_revision()
    view = service.get_coordination("co_old")
    assert view.launch == []  # t0 was handed out by the old release already
    progress = service.record_result(
        ResultIn(coordination_id="co_old", task_id="t0", status="succeeded", summary="ok")
    )
    assert [item.task_id for item in progress.launch] == ["t1"]
    upgrade_database(engine)  # a second upgrade is a no-op
    assert service.get_coordination("co_old").total == 2


def test_sqlite_runs_in_wal_mode_with_foreign_keys(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade_database(engine)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_an_unopenable_database_fails_loudly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot create the database directory"):
        make_engine(f"sqlite:///{blocker / 'sub' / 'state.db'}")
    with pytest.raises(StorageError, match="in-memory"):
        make_engine("sqlite://")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="cannot open or migrate"):
        upgrade_database(make_engine(f"sqlite:///{corrupt}"))


def test_serve_exits_with_a_clear_message_when_the_database_cannot_open(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"garbage" * 200)
    completed = subprocess.run(
        [sys.executable, "-m", "parallel_dispatch", "serve"],
        capture_output=True,
        text=True,
        env=server_env(f"sqlite:///{corrupt}"),
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 1
    assert "cannot open or migrate the database" in completed.stderr
    assert completed.stdout == ""


def test_db_upgrade_command_migrates_and_reports_the_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    completed = subprocess.run(
        [sys.executable, "-m", "parallel_dispatch", "db", "upgrade", "--database-url", url],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"revision {head_revision()}:" in completed.stdout


def test_the_default_database_lives_in_the_xdg_state_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLEL_DISPATCH_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    completed = subprocess.run(
        [sys.executable, "-m", "parallel_dispatch", "db", "upgrade"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "state" / "parallel-dispatch" / "parallel-dispatch.db").exists()


def test_racing_registrations_never_launch_more_than_the_shared_slots(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade_database(engine)
    engine.dispose()
    results = race_registrations(database_url, racers=3, tasks=6, max_active_agents=10)
    launched = sorted(count for _, count, _ in results)
    assert sum(launched) <= 10, results  # unserialised, two racers would both see 10 free
    assert launched[-1] == 6 and launched[0] >= 1, results
