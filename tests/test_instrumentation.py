"""OtelObserver through the real SDK pipeline, exported over OTLP/HTTP to a real receiver."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from parallel_dispatch.events import CapacitySnapshot, CoordinationRecord, TaskRecord
from parallel_dispatch.instrumentation import (
    ATTR_COORDINATION_ID,
    ATTR_TASK_ID,
    ATTR_TASK_STATUS,
    ERROR_TYPE,
    GEN_AI_AGENT_NAME,
    GEN_AI_OPERATION_NAME,
    GEN_AI_TOOL_NAME,
    GEN_AI_USAGE_TOTAL_TOKENS,
    GEN_AI_WORKFLOW_NAME,
    METRIC_ADAPTIVE_LIMIT,
    METRIC_BATCH_WIDTH,
    METRIC_COORDINATION_MAKESPAN,
    METRIC_COORDINATIONS_FINISHED,
    METRIC_COORDINATIONS_STARTED,
    METRIC_FREE_AGENT_SLOTS,
    METRIC_MCP_SERVER_OPERATION_DURATION,
    METRIC_NAMES,
    METRIC_PLAN_ACCURACY,
    METRIC_PLAN_ESTIMATED_MAKESPAN,
    METRIC_PLAN_LOWER_BOUND,
    METRIC_TASK_DURATION,
    METRIC_TASKS_FINISHED,
    METRIC_TASKS_IN_FLIGHT,
    SPAN_BATCH,
    batch_span_id,
)
from parallel_dispatch.models import Batch, Plan
from parallel_dispatch.telemetry import Telemetry, TelemetryConfig, configure_telemetry
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan

T0 = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def start_telemetry(endpoint: str, **overrides: object) -> Telemetry:
    config = TelemetryConfig(
        otlp_endpoint=endpoint,
        export_interval_s=0.2,
        span_schedule_delay_s=0.05,
        export_timeout_s=2.0,
        resource_attributes={"deployment.environment": "test"},
    )
    return configure_telemetry(replace(config, **overrides), set_global=False)  # type: ignore[arg-type]


def coordination(
    *,
    mode: str = "waves",
    label: str | None = "review repo",
    parent: tuple[str, str] | None = None,
    link: str | None = None,
    finished_at: datetime | None = None,
    state: str = "running",
) -> CoordinationRecord:
    return CoordinationRecord(
        coordination_id="c-" + secrets.token_hex(4),
        label=label,
        mode=mode,
        state=state,
        trace_id=parent[0] if parent else secrets.token_hex(16),
        span_id=secrets.token_hex(8),
        parent_span_id=parent[1] if parent else None,
        link_traceparent=link,
        created_at=T0,
        finished_at=finished_at,
        total=6,
        width=3,
    )


def six_tasks() -> list[TaskRecord]:
    """Two waves of three; t5 fails, t6 reports tokens; times to the microsecond."""
    tasks = []
    for i in range(6):
        batch = i // 3
        launched = T0 + timedelta(seconds=1 + 40 * batch, microseconds=7 * i)
        finished = launched + timedelta(seconds=10 + i, microseconds=311)
        tasks.append(
            TaskRecord(
                task_id=f"t{i + 1}",
                agent="code-reviewer" if i % 2 else "general-purpose",
                status="failed" if i == 4 else "succeeded",
                batch_index=batch,
                span_id=secrets.token_hex(8),
                launched_at=launched,
                finished_at=finished,
                duration_s=None,
                tokens=1234 if i == 5 else None,
                error="lint crashed" if i == 4 else None,
            )
        )
    return tasks


def finish(coord: CoordinationRecord, tasks: list[TaskRecord]) -> CoordinationRecord:
    finished = max(t.finished_at for t in tasks if t.finished_at is not None)
    failed = any(t.status in ("failed", "timed_out") for t in tasks)
    return replace(
        coord,
        finished_at=finished,
        state="completed_with_failures" if failed else "completed",
    )


def ns(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def by_name(spans: list[ReceivedSpan], prefix: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def test_a_waves_fan_out_is_one_trace_workflow_batches_and_agents(receiver: OtlpReceiver) -> None:
    telemetry = start_telemetry(receiver.endpoint)
    coord = coordination()
    tasks = six_tasks()
    telemetry.observer.coordination_registered(coord, tasks)
    for task in tasks:
        telemetry.observer.task_finished(coord, task)
    done = finish(coord, tasks)
    telemetry.observer.coordination_finished(done, tasks)
    telemetry.shutdown()

    spans = receiver.wait_for_spans(9, trace_id=coord.trace_id)
    assert len(spans) == 9
    (workflow,) = by_name(spans, "invoke_workflow")
    assert workflow.name == "invoke_workflow review repo"
    assert workflow.span_id == coord.span_id
    assert workflow.parent_span_id == ""
    assert workflow.attributes[GEN_AI_OPERATION_NAME] == "invoke_workflow"
    assert workflow.attributes[GEN_AI_WORKFLOW_NAME] == "review repo"
    assert workflow.attributes[ATTR_COORDINATION_ID] == coord.coordination_id
    assert workflow.attributes[ERROR_TYPE] == "completed_with_failures"
    assert workflow.status == "error"
    assert (workflow.start_ns, workflow.end_ns) == (ns(T0), ns(done.finished_at or T0))
    assert workflow.resource["service.name"] == "parallel-dispatch"
    assert workflow.resource["deployment.environment"] == "test"

    batches = sorted(by_name(spans, SPAN_BATCH), key=lambda s: s.start_ns)
    assert [b.span_id for b in batches] == [batch_span_id(coord.span_id, i) for i in (0, 1)]
    assert all(b.parent_span_id == coord.span_id for b in batches)
    for index, batch in enumerate(batches):
        members = [t for t in tasks if t.batch_index == index]
        assert batch.start_ns == min(ns(t.launched_at) for t in members if t.launched_at)
        assert batch.end_ns == max(ns(t.finished_at) for t in members if t.finished_at)

    agents = {s.attributes[ATTR_TASK_ID]: s for s in by_name(spans, "invoke_agent")}
    assert set(agents) == {t.task_id for t in tasks}
    for task in tasks:
        span = agents[task.task_id]
        assert span.name == f"invoke_agent {task.agent}"
        assert span.span_id == task.span_id
        assert span.parent_span_id == batch_span_id(coord.span_id, task.batch_index)
        assert span.attributes[GEN_AI_OPERATION_NAME] == "invoke_agent"
        assert span.attributes[GEN_AI_AGENT_NAME] == task.agent
        assert span.attributes[ATTR_TASK_STATUS] == task.status
        assert span.attributes[ATTR_COORDINATION_ID] == coord.coordination_id
        assert task.launched_at and task.finished_at
        assert (span.start_ns, span.end_ns) == (ns(task.launched_at), ns(task.finished_at))
    assert agents["t5"].attributes[ERROR_TYPE] == "failed"
    assert agents["t5"].status == "error"
    assert agents["t5"].status_message == "lint crashed"
    assert ERROR_TYPE not in agents["t1"].attributes
    assert agents["t6"].attributes[GEN_AI_USAGE_TOTAL_TOKENS] == 1234
    assert GEN_AI_USAGE_TOTAL_TOKENS not in agents["t1"].attributes


def test_a_restart_between_tasks_still_yields_one_complete_trace(receiver: OtlpReceiver) -> None:
    coord = coordination()
    tasks = six_tasks()
    before = start_telemetry(receiver.endpoint)
    before.observer.coordination_registered(coord, tasks)
    for task in tasks[:3]:
        before.observer.task_finished(coord, task)
    before.shutdown()

    after = start_telemetry(receiver.endpoint)  # a new process: new providers, new generator
    for task in tasks[3:]:
        after.observer.task_finished(coord, task)
    after.observer.coordination_finished(finish(coord, tasks), tasks)
    after.shutdown()

    spans = receiver.wait_for_spans(9, trace_id=coord.trace_id)
    ids = {s.span_id for s in spans}
    assert all(s.parent_span_id in ids for s in spans if s.parent_span_id)
    assert sum(1 for s in spans if not s.parent_span_id) == 1


def test_stream_mode_puts_agents_directly_under_the_workflow(receiver: OtlpReceiver) -> None:
    telemetry = start_telemetry(receiver.endpoint)
    coord = coordination(mode="stream", label=None)
    tasks = six_tasks()
    for task in tasks:
        telemetry.observer.task_finished(coord, task)
    telemetry.observer.coordination_finished(finish(coord, tasks), tasks)
    telemetry.shutdown()

    spans = receiver.wait_for_spans(7, trace_id=coord.trace_id)
    assert not by_name(spans, SPAN_BATCH)
    (workflow,) = by_name(spans, "invoke_workflow")
    assert workflow.name == "invoke_workflow"
    assert GEN_AI_WORKFLOW_NAME not in workflow.attributes
    assert {s.parent_span_id for s in by_name(spans, "invoke_agent")} == {coord.span_id}


def test_a_nested_coordination_joins_its_parent_task_trace(receiver: OtlpReceiver) -> None:
    telemetry = start_telemetry(receiver.endpoint)
    outer = coordination()
    outer_tasks = six_tasks()
    child = coordination(parent=(outer.trace_id, outer_tasks[0].span_id), label="inner")
    child_tasks = six_tasks()
    for task in child_tasks:
        telemetry.observer.task_finished(child, task)
    telemetry.observer.coordination_finished(finish(child, child_tasks), child_tasks)
    telemetry.observer.task_finished(outer, outer_tasks[0])
    telemetry.shutdown()

    spans = receiver.wait_for_spans(10, trace_id=outer.trace_id)
    (inner,) = by_name(spans, "invoke_workflow inner")
    assert inner.parent_span_id == outer_tasks[0].span_id
    assert outer_tasks[0].span_id in {s.span_id for s in spans}


def test_an_incoming_traceparent_becomes_a_span_link(receiver: OtlpReceiver) -> None:
    telemetry = start_telemetry(receiver.endpoint)
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    coord = coordination(link=f"00-{caller_trace}-{caller_span}-01")
    tasks = six_tasks()
    telemetry.observer.coordination_finished(finish(coord, tasks), tasks)
    telemetry.shutdown()

    spans = receiver.wait_for_spans(3, trace_id=coord.trace_id)
    (workflow,) = by_name(spans, "invoke_workflow")
    assert workflow.links == [(caller_trace, caller_span)]


def test_metrics_arrive_with_units_and_no_ids_as_attributes(receiver: OtlpReceiver) -> None:
    telemetry = start_telemetry(receiver.endpoint)
    telemetry.bind_capacity(
        lambda: CapacitySnapshot(in_flight=3, free_agent_slots=17, adaptive_limit=8)
    )
    observer = telemetry.observer
    plan = Plan(
        mode="waves",
        width=3,
        batches=[Batch(index=0, task_ids=["a", "b", "c"]), Batch(index=1, task_ids=["d"])],
        dispatch_order=["a", "b", "c", "d"],
        estimated_makespan_s=42.0,
        lower_bound_s=30.0,
    )
    observer.plan_made(plan, tool="register_coordination")
    coord = coordination()
    tasks = six_tasks()
    observer.coordination_registered(coord, tasks)
    for task in tasks:
        observer.task_finished(coord, task)
    observer.coordination_finished(replace(finish(coord, tasks), estimated_makespan_s=28.0), tasks)
    observer.adaptive_limit_changed(8, "two timeouts in a row")
    observer.tool_called("record_result", 0.004, None)
    observer.tool_called("record_result", 0.002, "UnknownTaskError")

    receiver.wait_until(
        lambda r: set(METRIC_NAMES) <= r.metric_names() and r.latest(METRIC_TASKS_IN_FLIGHT),
        what="every metric",
    )
    telemetry.shutdown()

    assert receiver.latest(METRIC_TASKS_IN_FLIGHT).value == 3  # type: ignore[union-attr]
    assert receiver.latest(METRIC_FREE_AGENT_SLOTS).value == 17  # type: ignore[union-attr]
    assert receiver.latest(METRIC_ADAPTIVE_LIMIT).value == 8  # type: ignore[union-attr]
    failed = receiver.latest(METRIC_TASKS_FINISHED, **{ATTR_TASK_STATUS: "failed"})
    assert failed is not None and failed.value == 1 and failed.monotonic
    reviewer = receiver.latest(
        METRIC_TASK_DURATION,
        **{GEN_AI_AGENT_NAME: "code-reviewer", ATTR_TASK_STATUS: "succeeded"},
    )
    assert reviewer is not None and reviewer.count == 3 and reviewer.unit == "s"
    assert receiver.latest(METRIC_BATCH_WIDTH).count == 2  # type: ignore[union-attr]
    assert receiver.latest(METRIC_PLAN_ESTIMATED_MAKESPAN).sum == 42.0  # type: ignore[union-attr]
    assert receiver.latest(METRIC_PLAN_LOWER_BOUND).sum == 30.0  # type: ignore[union-attr]
    makespan = receiver.latest(METRIC_COORDINATION_MAKESPAN)
    assert makespan is not None and makespan.sum == pytest.approx(56.000346, abs=1e-5)
    accuracy = receiver.latest(METRIC_PLAN_ACCURACY)
    assert accuracy is not None and accuracy.unit == "1"
    assert accuracy.sum == pytest.approx(56.000346 / 28.0, abs=1e-5)  # actual / estimated
    assert receiver.latest(METRIC_COORDINATIONS_STARTED).value == 1  # type: ignore[union-attr]
    finished = receiver.latest(METRIC_COORDINATIONS_FINISHED)
    assert finished is not None
    assert finished.attributes["parallel_dispatch.coordination.state"] == (
        "completed_with_failures"
    )
    failed_call = receiver.latest(
        METRIC_MCP_SERVER_OPERATION_DURATION, **{ERROR_TYPE: "UnknownTaskError"}
    )
    assert failed_call is not None and failed_call.attributes[GEN_AI_TOOL_NAME] == "record_result"
    assert failed_call.attributes["mcp.method.name"] == "tools/call"
    for point in receiver.points:
        assert point.unit, point.name
        assert not any(key.endswith(".id") for key in point.attributes), point


def test_hooks_never_raise_on_bad_records_or_a_failing_capacity_source(
    receiver: OtlpReceiver,
) -> None:
    telemetry = start_telemetry(receiver.endpoint)

    def broken() -> CapacitySnapshot:
        raise RuntimeError("database is gone")

    telemetry.bind_capacity(broken)
    coord = replace(coordination(), span_id="not-hex")
    tasks = six_tasks()
    telemetry.observer.task_finished(coord, tasks[0])
    telemetry.observer.coordination_finished(coord, tasks)
    telemetry.observer.tool_called("get_coordination", 0.001, None)
    receiver.wait_until(
        lambda r: METRIC_MCP_SERVER_OPERATION_DURATION in r.metric_names(), what="tool metric"
    )
    telemetry.shutdown()
    assert METRIC_TASKS_IN_FLIGHT not in receiver.metric_names()


def test_an_unreachable_collector_does_not_slow_the_hooks() -> None:
    # A listening socket that never accepts: connections hang until the export timeout.
    import socket

    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        port = blackhole.getsockname()[1]
        telemetry = start_telemetry(f"http://127.0.0.1:{port}", export_timeout_s=0.5)
        coord = coordination()
        tasks = six_tasks()
        started = time.perf_counter()
        for _ in range(50):
            for task in tasks:
                telemetry.observer.task_finished(coord, task)
            telemetry.observer.tool_called("record_result", 0.001, None)
        per_hook = (time.perf_counter() - started) / 350
        shutdown_started = time.perf_counter()
        telemetry.shutdown()
        shutdown_s = time.perf_counter() - shutdown_started
    assert per_hook < 0.005
    assert shutdown_s < 10


def test_timed_out_and_never_launched_tasks_are_spans_too(receiver: OtlpReceiver) -> None:
    telemetry = start_telemetry(receiver.endpoint)
    coord = coordination(mode="stream")
    lost, skipped = six_tasks()[:2]
    lost = replace(lost, status="timed_out", error=None)
    skipped = replace(skipped, status="skipped", launched_at=None, error="t1 timed out")
    telemetry.observer.task_finished(coord, lost)
    telemetry.observer.task_finished(coord, skipped)
    telemetry.shutdown()

    spans = {s.attributes[ATTR_TASK_ID]: s for s in receiver.wait_for_spans(2)}
    assert spans["t1"].attributes[ERROR_TYPE] == "timed_out"
    assert spans["t1"].status == "error"
    assert spans["t2"].attributes[ATTR_TASK_STATUS] == "skipped"
    assert ERROR_TYPE not in spans["t2"].attributes
    assert spans["t2"].attributes["parallel_dispatch.task.launched"] is False
    assert skipped.finished_at is not None
    assert spans["t2"].start_ns == spans["t2"].end_ns == ns(skipped.finished_at)


def test_a_callers_traceparent_as_parent_is_linked_and_not_counted_as_nested(
    receiver: OtlpReceiver,
) -> None:
    telemetry = start_telemetry(receiver.endpoint)
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    coord = coordination(
        parent=(caller_trace, caller_span), link=f"00-{caller_trace}-{caller_span}-01"
    )
    telemetry.observer.coordination_registered(coord, [])
    telemetry.observer.coordination_finished(finish(coord, six_tasks()), six_tasks())
    receiver.wait_until(
        lambda r: r.latest(METRIC_COORDINATIONS_STARTED), what="coordination counter"
    )
    telemetry.shutdown()

    (workflow,) = by_name(receiver.wait_for_spans(3, trace_id=caller_trace), "invoke_workflow")
    assert workflow.parent_span_id == caller_span
    assert workflow.links == [(caller_trace, caller_span)]
    started = receiver.latest(METRIC_COORDINATIONS_STARTED)
    assert started is not None
    assert started.attributes["parallel_dispatch.coordination.nested"] is False
