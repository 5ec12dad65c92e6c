"""The service tells observers each fact exactly once, after it committed."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client
from mcp.types import RequestParamsMeta

from parallel_dispatch.events import CoordinationRecord, NullObserver, TaskRecord
from parallel_dispatch.models import ParentRef, ResultIn, TaskSpec
from parallel_dispatch.server import build_server, build_service
from parallel_dispatch.settings import Settings
from tests.conftest import FakeClock


class RecordingObserver(NullObserver):
    def __init__(self) -> None:
        self.registered: list[CoordinationRecord] = []
        self.finished_tasks: list[tuple[str, str]] = []
        self.finished: list[tuple[CoordinationRecord, list[TaskRecord]]] = []

    def coordination_registered(
        self, coordination: CoordinationRecord, tasks: list[TaskRecord]
    ) -> None:
        self.registered.append(coordination)

    def task_finished(self, coordination: CoordinationRecord, task: TaskRecord) -> None:
        self.finished_tasks.append((task.task_id, task.status))

    def coordination_finished(
        self, coordination: CoordinationRecord, tasks: list[TaskRecord]
    ) -> None:
        self.finished.append((coordination, tasks))


def test_each_task_and_the_coordination_finish_once_even_with_retries_and_late_results(
    tmp_path: Path,
) -> None:
    observer = RecordingObserver()
    clock = FakeClock()
    service = build_service(
        Settings(database_url=f"sqlite:///{tmp_path / 'e.db'}", host_pressure=False),
        observer=observer,
        clock=clock,
    )
    specs = [TaskSpec(id="a"), TaskSpec(id="b"), TaskSpec(id="c", depends_on=["b"])]
    cid = service.register_coordination(specs, task_timeout_s=60).coordination_id
    ok = ResultIn(coordination_id=cid, task_id="a", status="succeeded", summary="ok")
    service.record_result(ok)
    service.record_result(ok)  # a retry: acknowledged, not a new fact
    clock.advance(61)
    view = service.get_coordination(cid)
    assert view.state == "completed_with_failures"
    late = ResultIn(coordination_id=cid, task_id="b", status="succeeded", summary="late")
    assert service.record_result(late).recorded is True
    assert sorted(observer.finished_tasks) == [
        ("a", "succeeded"),
        ("b", "timed_out"),
        ("c", "skipped"),
    ]
    assert len(observer.registered) == 1
    assert len(observer.finished) == 1
    record, tasks = observer.finished[0]
    assert record.coordination_id == cid and record.finished_at is not None
    assert {t.task_id for t in tasks} == {"a", "b", "c"}
    assert len({record.trace_id, *(t.span_id for t in tasks)}) == 4


def test_a_nested_coordination_joins_its_parent_tasks_trace(tmp_path: Path) -> None:
    observer = RecordingObserver()
    service = build_service(
        Settings(database_url=f"sqlite:///{tmp_path / 'n.db'}", host_pressure=False),
        observer=observer,
    )
    outer = service.register_coordination([TaskSpec(id="lead")])

    service.register_coordination(
        [TaskSpec(id="sub")],
        parent=ParentRef(coordination_id=outer.coordination_id, task_id="lead"),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    outer_record, inner_record = observer.registered
    assert inner_record.trace_id == outer_record.trace_id
    assert inner_record.parent_span_id is not None
    assert inner_record.parent_span_id != outer_record.span_id
    assert inner_record.link_traceparent is not None


@pytest.mark.anyio
async def test_a_traceparent_in_the_request_meta_becomes_the_workflow_link(
    tmp_path: Path,
) -> None:
    observer = RecordingObserver()
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'm.db'}", host_pressure=False)
    service = build_service(settings, observer=observer)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with Client(build_server(settings, service)) as client:
        result = await client.call_tool(
            "register_coordination",
            {"tasks": [{"id": "a"}]},
            meta=RequestParamsMeta(traceparent=traceparent),  # type: ignore[typeddict-unknown-key]  # extra keys are allowed at run time
        )
        assert not result.is_error
        plain = await client.call_tool("register_coordination", {"tasks": [{"id": "a"}]})
        assert not plain.is_error
    linked, unlinked = observer.registered
    assert linked.link_traceparent == traceparent
    assert unlinked.link_traceparent is None


def test_the_finished_record_carries_the_plans_estimate_for_plan_accuracy(
    tmp_path: Path,
) -> None:
    observer = RecordingObserver()
    service = build_service(
        Settings(database_url=f"sqlite:///{tmp_path / 'acc.db'}", host_pressure=False),
        observer=observer,
    )
    reg = service.register_coordination([TaskSpec(id="a", estimate_s=40.0)])
    assert reg.plan.estimated_makespan_s == 40.0
    service.record_result(
        ResultIn(coordination_id=reg.coordination_id, task_id="a", status="succeeded", summary="")
    )
    ((record, _),) = observer.finished
    assert record.estimated_makespan_s == 40.0
