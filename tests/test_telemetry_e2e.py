"""The server as a real stdio subprocess exporting OTLP/HTTP to a real receiver on 127.0.0.1."""

from __future__ import annotations

import json
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import RequestParamsMeta

from parallel_dispatch.instrumentation import (
    ATTR_COORDINATION_ID,
    ATTR_TASK_ID,
    ATTR_TASK_STATUS,
    ERROR_TYPE,
    GEN_AI_AGENT_NAME,
    GEN_AI_OPERATION_NAME,
    GEN_AI_USAGE_TOTAL_TOKENS,
    GEN_AI_WORKFLOW_NAME,
    METRIC_COORDINATION_MAKESPAN,
    METRIC_MCP_SERVER_OPERATION_DURATION,
    METRIC_PLAN_ESTIMATED_MAKESPAN,
    METRIC_TASK_DURATION,
    METRIC_TASKS_FINISHED,
    METRIC_TASKS_IN_FLIGHT,
    SPAN_BATCH,
)
from tests.conftest import call_ok
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.processes import server_env

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRIC_EXPORT_INTERVAL": "200"}
TASKS = [
    {
        "id": f"t{i}",
        "agent": "code-reviewer" if i % 2 else "general-purpose",
        "prompt": f"part {i}",
        "estimate_s": 30.0,
    }
    for i in range(1, 7)
]


def stdio(database: Path, *flags: str, **env: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "parallel_dispatch", "serve", *flags],
        env=server_env(f"sqlite:///{database}", **env),
    )


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def ns(iso: str) -> int:
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


async def record(client: Client, cid: str, task_id: str) -> dict[str, Any]:
    failed = task_id == "t5"
    return await call_ok(
        client,
        "record_result",
        coordination_id=cid,
        task_id=task_id,
        status="failed" if failed else "succeeded",
        summary=f"summary of {task_id}",
        tokens=321 if task_id == "t6" else None,
        error="reviewer crashed" if failed else None,
    )


async def register_six(client: Client) -> tuple[str, list[str]]:
    reg = await call_ok(
        client, "register_coordination", tasks=TASKS, label="six reviews", max_parallel=3
    )
    assert [len(b["task_ids"]) for b in reg["plan"]["batches"]] == [3, 3]
    return reg["coordination_id"], [item["task_id"] for item in reg["launch"]]


async def run_six_task_fan_out(client: Client) -> dict[str, Any]:
    """Two waves of three; t5 fails, t6 reports tokens. Returns get_coordination's view."""
    cid, launched = await register_six(client)
    while launched:
        next_launch: list[str] = []
        for task_id in launched:
            progress = await record(client, cid, task_id)
            next_launch += [item["task_id"] for item in progress["launch"]]
        launched = next_launch
    view = await call_ok(client, "get_coordination", coordination_id=cid)
    assert view["state"] == "completed_with_failures"
    return view


def one_trace(receiver: OtlpReceiver, cid: str) -> list[ReceivedSpan]:
    """Wait for the workflow span of `cid` and the 8 spans under it; return the trace."""

    def complete(r: OtlpReceiver) -> list[ReceivedSpan] | None:
        roots = [s for s in r.spans if s.attributes.get(ATTR_COORDINATION_ID) == cid]
        workflow = [s for s in roots if s.name.startswith("invoke_workflow")]
        if not workflow:
            return None
        trace = [s for s in r.spans if s.trace_id == workflow[0].trace_id]
        return trace if len(trace) >= 9 else None

    return receiver.wait_until(complete, timeout_s=20, what=f"the trace of {cid}")


def assert_span_tree_matches(spans: list[ReceivedSpan], view: dict[str, Any]) -> None:
    assert len(spans) == 9, [s.name for s in spans]
    (workflow,) = [s for s in spans if s.name.startswith("invoke_workflow")]
    assert workflow.name == "invoke_workflow six reviews"
    assert workflow.parent_span_id == ""
    assert workflow.attributes[GEN_AI_OPERATION_NAME] == "invoke_workflow"
    assert workflow.attributes[GEN_AI_WORKFLOW_NAME] == "six reviews"
    assert workflow.attributes[ERROR_TYPE] == "completed_with_failures"
    batches = sorted((s for s in spans if s.name == SPAN_BATCH), key=lambda s: s.start_ns)
    assert len(batches) == 2
    assert {b.parent_span_id for b in batches} == {workflow.span_id}
    agents = {s.attributes[ATTR_TASK_ID]: s for s in spans if s.name.startswith("invoke_agent")}
    assert set(agents) == {t["id"] for t in TASKS}
    for task in view["tasks"]:
        span = agents[task["task_id"]]
        assert span.name == f"invoke_agent {task['agent']}"
        assert span.attributes[GEN_AI_AGENT_NAME] == task["agent"]
        assert span.attributes[ATTR_TASK_STATUS] == task["status"]
        assert span.parent_span_id == batches[task["batch"]].span_id
        # The span is the task's real launch-to-completion interval, as recorded.
        assert span.start_ns == ns(task["launched_at"])
        assert span.end_ns == ns(task["finished_at"])
        assert span.duration_s == pytest.approx(task["duration_s"], abs=1e-3)
        assert batches[task["batch"]].start_ns <= span.start_ns
        assert span.end_ns <= batches[task["batch"]].end_ns <= workflow.end_ns
    assert agents["t5"].attributes[ERROR_TYPE] == "failed"
    assert agents["t5"].status == "error"
    assert agents["t6"].attributes[GEN_AI_USAGE_TOTAL_TOKENS] == 321
    assert workflow.start_ns <= min(s.start_ns for s in spans)


async def test_otel_environment_alone_exports_the_fan_out_trace_and_metrics(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    params = stdio(
        tmp_path / "env.db",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME="dispatch-from-env",
        **FAST_EXPORT,
    )
    with anyio.fail_after(60):
        async with Client(params) as client:
            view = await run_six_task_fan_out(client)
            await anyio.to_thread.run_sync(
                lambda: receiver.wait_until(
                    lambda r: r.latest(METRIC_TASKS_IN_FLIGHT) is not None, what="gauges"
                )
            )
    spans = one_trace(receiver, view["coordination_id"])
    assert_span_tree_matches(spans, view)
    assert {s.resource["service.name"] for s in spans} == {"dispatch-from-env"}
    # The MCP SDK's own tools/call spans go out through the same provider, untouched.
    receiver.wait_until(
        lambda r: any(s.name == "tools/call record_result" for s in r.spans), what="SDK spans"
    )
    receiver.wait_until(
        lambda r: (
            {
                METRIC_TASKS_FINISHED,
                METRIC_TASK_DURATION,
                METRIC_PLAN_ESTIMATED_MAKESPAN,
                METRIC_COORDINATION_MAKESPAN,
                METRIC_MCP_SERVER_OPERATION_DURATION,
            }
            <= r.metric_names()
        ),
        what="metrics",
    )
    failed = receiver.latest(METRIC_TASKS_FINISHED, **{ATTR_TASK_STATUS: "failed"})
    assert failed is not None and failed.value == 1
    in_flight = receiver.latest(METRIC_TASKS_IN_FLIGHT)
    assert in_flight is not None and in_flight.value == 0


async def test_flags_alone_export_and_shutdown_flushes(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    params = stdio(
        tmp_path / "flags.db",
        "--otlp-endpoint",
        receiver.endpoint,
        "--otlp-headers",
        "authorization=Bearer%20abc",
        "--service-name",
        "dispatch-from-flags",
    )
    with anyio.fail_after(60):
        async with Client(params) as client:
            view = await run_six_task_fan_out(client)
    # Default intervals (seconds): what arrives promptly was flushed by the shutdown.
    spans = one_trace(receiver, view["coordination_id"])
    assert_span_tree_matches(spans, view)
    assert {s.resource["service.name"] for s in spans} == {"dispatch-from-flags"}
    receiver.wait_until(lambda r: METRIC_TASKS_FINISHED in r.metric_names(), what="metrics")
    assert {headers.get("authorization") for _, headers in receiver.requests} == {"Bearer abc"}


async def test_a_restart_in_the_middle_of_a_coordination_still_completes_its_trace(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    database = tmp_path / "restart.db"
    params = stdio(database, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, **FAST_EXPORT)
    with anyio.fail_after(90):
        async with Client(params) as client:
            cid, first_wave = await register_six(client)
            for task_id in first_wave:
                progress = await record(client, cid, task_id)
            second_wave = [item["task_id"] for item in progress["launch"]]
        # A new process on the same database finishes the coordination.
        async with Client(params) as client:
            for task_id in second_wave:
                await record(client, cid, task_id)
            view = await call_ok(client, "get_coordination", coordination_id=cid)
    spans = one_trace(receiver, cid)
    assert_span_tree_matches(spans, view)
    # Two processes, each its own instance, wrote this one trace.
    assert len({s.resource["service.instance.id"] for s in spans}) == 2


@contextmanager
def blackhole() -> Iterator[str]:
    """A collector endpoint that accepts no connection: exports hang until they time out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


async def tool_call_latencies(params: StdioServerParameters, rounds: int) -> list[float]:
    latencies: list[float] = []
    async with Client(params) as client:
        for i in range(rounds + 3):
            started = time.perf_counter()
            reg = await call_ok(
                client, "register_coordination", tasks=[{"id": "only"}], label=f"r{i}"
            )
            registered = time.perf_counter()
            await record_one(client, reg["coordination_id"])
            if i >= 3:  # the first calls warm caches and the database
                latencies += [registered - started, time.perf_counter() - registered]
    return latencies


async def record_one(client: Client, cid: str) -> None:
    await call_ok(
        client,
        "record_result",
        coordination_id=cid,
        task_id="only",
        status="succeeded",
        summary="ok",
    )


async def test_a_dead_collector_adds_no_measurable_delay_to_tool_calls(tmp_path: Path) -> None:
    with blackhole() as dead, anyio.fail_after(120):
        quiet = await tool_call_latencies(stdio(tmp_path / "quiet.db"), rounds=20)
        dead_params = stdio(tmp_path / "dead.db", OTEL_EXPORTER_OTLP_ENDPOINT=dead, **FAST_EXPORT)
        exporting = await tool_call_latencies(dead_params, rounds=20)
    quiet_median = statistics.median(quiet)
    dead_median = statistics.median(exporting)
    # A behaviour check, not a benchmark: a hanging exporter would add its timeout (seconds).
    assert dead_median < max(3 * quiet_median, quiet_median + 0.05), (quiet_median, dead_median)


def test_a_dead_collector_writes_nothing_but_protocol_to_stdout(tmp_path: Path) -> None:
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "register_coordination", "arguments": {"tasks": [{"id": "a"}]}},
        },
    ]
    lines: queue.Queue[str] = queue.Queue()

    def read_stdout(stream: IO[str]) -> None:
        for line in stream:
            lines.put(line)

    with blackhole() as dead:
        started = time.monotonic()
        with subprocess.Popen(
            [sys.executable, "-m", "parallel_dispatch", "serve", "--otlp-endpoint", dead],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=server_env(f"sqlite:///{tmp_path / 'junk.db'}", **FAST_EXPORT),
        ) as process:
            assert process.stdin and process.stdout and process.stderr
            reader = threading.Thread(target=read_stdout, args=(process.stdout,))
            reader.start()
            for message in messages:
                process.stdin.write(json.dumps(message) + "\n")
                process.stdin.flush()
            received = [json.loads(lines.get(timeout=30)) for _ in range(2)]
            process.stdin.close()  # EOF: the server shuts down and flushes to the dead collector
            stderr = process.stderr.read()
            returncode = process.wait(timeout=60)
            reader.join(timeout=10)
        elapsed = time.monotonic() - started
    assert [r["id"] for r in received] == [1, 2]
    assert "result" in received[1] and not received[1]["result"].get("isError"), received[1]
    assert lines.empty(), lines.get()  # nothing else reached stdout, not even at shutdown
    assert returncode == 0, stderr
    assert stderr.count("Failed to export spans") <= 1, stderr
    assert elapsed < 30  # shutdown's flush gives up after the short export timeout


async def test_a_nested_fan_out_joins_its_parent_task_and_a_traceparent_becomes_a_link(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    caller = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    params = stdio(
        tmp_path / "nested.db", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, **FAST_EXPORT
    )
    with anyio.fail_after(60):
        async with Client(params) as client:
            result = await client.call_tool(
                "register_coordination",
                {"tasks": [{"id": "fan"}, {"id": "solo"}], "label": "outer"},
                meta=RequestParamsMeta(traceparent=caller),  # type: ignore[typeddict-unknown-key]  # PEP 728 extra_items
            )
            assert result.structured_content is not None, result.content
            outer = result.structured_content["coordination_id"]
            inner_reg = await call_ok(
                client,
                "register_coordination",
                tasks=[{"id": "i1"}, {"id": "i2"}],
                label="inner",
                parent={"coordination_id": outer, "task_id": "fan"},
            )
            for task_id in ("i1", "i2"):
                await call_ok(
                    client,
                    "record_result",
                    coordination_id=inner_reg["coordination_id"],
                    task_id=task_id,
                    status="succeeded",
                    summary="done",
                )
            for task_id in ("fan", "solo"):
                await call_ok(
                    client,
                    "record_result",
                    coordination_id=outer,
                    task_id=task_id,
                    status="succeeded",
                    summary="done",
                )

    def both_workflows(r: OtlpReceiver) -> list[ReceivedSpan] | None:
        names = {s.name for s in r.spans}
        if not {"invoke_workflow outer", "invoke_workflow inner"} <= names:
            return None
        return r.spans

    spans = receiver.wait_until(both_workflows, what="both workflow spans")
    (outer_span,) = [s for s in spans if s.name == "invoke_workflow outer"]
    (inner_span,) = [s for s in spans if s.name == "invoke_workflow inner"]
    (fan,) = [s for s in spans if s.attributes.get(ATTR_TASK_ID) == "fan"]
    assert outer_span.links == [("ab" * 16, "cd" * 8)]
    assert inner_span.trace_id == fan.trace_id == outer_span.trace_id
    assert inner_span.parent_span_id == fan.span_id
    assert fan.start_ns <= inner_span.start_ns <= inner_span.end_ns <= fan.end_ns
