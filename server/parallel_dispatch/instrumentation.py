"""Turns committed dispatch facts into OpenTelemetry spans and metrics, through the API only.

`OtelObserver` implements `DispatchObserver`. Spans are emitted when work completes, with the
stored start/end times and the stored trace/span ids, so a trace comes out whole even when the
coordination outlived a server process. Picking the span id of a span is not part of the
OpenTelemetry API; the observer asks an injected `SpanIdPreset` (the SDK side lives in
`telemetry.py`) to hand out the stored ids for the span it is about to start.

Names follow the OpenTelemetry GenAI semantic conventions where one exists (semconv 1.37-1.41:
`invoke_workflow`, `invoke_agent`, `gen_ai.workflow.name`, `gen_ai.agent.name`), the MCP
conventions for tool-call latency (`mcp.server.operation.duration`), and `parallel_dispatch.*`
otherwise.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Concatenate, Final, ParamSpec, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.util.types import AttributeValue

from parallel_dispatch.events import CapacitySnapshot, CoordinationRecord, TaskRecord
from parallel_dispatch.models import Plan

_logger = logging.getLogger(__name__)

INSTRUMENTATION_SCOPE: Final = "parallel_dispatch"

# --- Span names and operation names -------------------------------------------------------
OPERATION_INVOKE_WORKFLOW: Final = "invoke_workflow"
OPERATION_INVOKE_AGENT: Final = "invoke_agent"
OPERATION_EXECUTE_TOOL: Final = "execute_tool"
SPAN_BATCH: Final = "parallel_dispatch.batch"
MCP_METHOD_TOOLS_CALL: Final = "tools/call"

# --- Attribute names -----------------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
# The semantic conventions split usage into input and output tokens; a sub-agent reports one
# total (what Claude Code shows for an Agent call), so it goes under the same namespace.
GEN_AI_USAGE_TOTAL_TOKENS: Final = "gen_ai.usage.total_tokens"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
MCP_METHOD_NAME: Final = "mcp.method.name"
ERROR_TYPE: Final = "error.type"
ATTR_COORDINATION_ID: Final = "parallel_dispatch.coordination.id"
ATTR_COORDINATION_MODE: Final = "parallel_dispatch.coordination.mode"
ATTR_COORDINATION_STATE: Final = "parallel_dispatch.coordination.state"
ATTR_COORDINATION_TASK_COUNT: Final = "parallel_dispatch.coordination.task_count"
ATTR_COORDINATION_WIDTH: Final = "parallel_dispatch.coordination.width"
ATTR_COORDINATION_NESTED: Final = "parallel_dispatch.coordination.nested"
ATTR_TASK_ID: Final = "parallel_dispatch.task.id"
ATTR_TASK_STATUS: Final = "parallel_dispatch.task.status"
ATTR_TASK_REPORTED_DURATION: Final = "parallel_dispatch.task.reported_duration_s"
ATTR_TASK_LAUNCHED: Final = "parallel_dispatch.task.launched"
ATTR_BATCH_INDEX: Final = "parallel_dispatch.batch.index"
ATTR_BATCH_SIZE: Final = "parallel_dispatch.batch.size"
ATTR_PLAN_MODE: Final = "parallel_dispatch.plan.mode"

# --- Metric names (OTLP names; see docs/observability.md for the Prometheus names) ------------
METRIC_TASKS_FINISHED: Final = "parallel_dispatch.task.finished"
METRIC_TASK_DURATION: Final = "parallel_dispatch.task.duration"
METRIC_TASK_TOKENS: Final = "parallel_dispatch.task.tokens"
METRIC_TASKS_IN_FLIGHT: Final = "parallel_dispatch.tasks.in_flight"
METRIC_FREE_AGENT_SLOTS: Final = "parallel_dispatch.agent_slots.free"
METRIC_ADAPTIVE_LIMIT: Final = "parallel_dispatch.adaptive_limit"
METRIC_PLAN_WIDTH: Final = "parallel_dispatch.plan.width"
METRIC_BATCH_WIDTH: Final = "parallel_dispatch.batch.width"
METRIC_PLAN_ESTIMATED_MAKESPAN: Final = "parallel_dispatch.plan.estimated_makespan"
METRIC_PLAN_LOWER_BOUND: Final = "parallel_dispatch.plan.lower_bound"
METRIC_COORDINATION_MAKESPAN: Final = "parallel_dispatch.coordination.makespan"
METRIC_PLAN_ACCURACY: Final = "parallel_dispatch.plan.accuracy"
METRIC_COORDINATIONS_STARTED: Final = "parallel_dispatch.coordination.started"
METRIC_COORDINATIONS_FINISHED: Final = "parallel_dispatch.coordination.finished"
METRIC_MCP_SERVER_OPERATION_DURATION: Final = "mcp.server.operation.duration"

METRIC_NAMES: Final[tuple[str, ...]] = (
    METRIC_TASKS_FINISHED,
    METRIC_TASK_DURATION,
    METRIC_TASK_TOKENS,
    METRIC_TASKS_IN_FLIGHT,
    METRIC_FREE_AGENT_SLOTS,
    METRIC_ADAPTIVE_LIMIT,
    METRIC_PLAN_WIDTH,
    METRIC_BATCH_WIDTH,
    METRIC_PLAN_ESTIMATED_MAKESPAN,
    METRIC_PLAN_LOWER_BOUND,
    METRIC_COORDINATION_MAKESPAN,
    METRIC_PLAN_ACCURACY,
    METRIC_COORDINATIONS_STARTED,
    METRIC_COORDINATIONS_FINISHED,
    METRIC_MCP_SERVER_OPERATION_DURATION,
)

# Bucket advice: sub-agents run from seconds to the 1800 s default timeout; tool calls are
# local database work; widths are bounded by the hard cap (default 10) and slots (20).
_TASK_SECONDS_BUCKETS: Final = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600)
_TOOL_SECONDS_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_WIDTH_BUCKETS: Final = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 32)
_RATIO_BUCKETS: Final = (0.25, 0.5, 0.75, 0.9, 1, 1.1, 1.25, 1.5, 2, 3, 5, 10)

_FAILED_STATUSES: Final = frozenset({"failed", "timed_out"})
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class SpanIdPreset(Protocol):
    """Makes the next span started on this thread carry the given ids (see `telemetry.py`)."""

    def preset(self, *, trace_id: int, span_id: int) -> AbstractContextManager[None]:
        """Inside the block, the next span started on this thread gets these ids."""
        ...


def batch_span_id(coordination_span_id: str, batch_index: int) -> str:
    """The span id (16 hex) of a batch span, derived from its coordination's span id.

    Deterministic, so a restarted server emits the same batch span that the tasks it already
    exported name as their parent.
    """
    digest = hashlib.sha256(f"{coordination_span_id}/batch/{batch_index}".encode()).digest()
    value = int.from_bytes(digest[:8], "big") or 1
    return f"{value:016x}"


def _ns(moment: datetime) -> int:
    """Nanoseconds since the epoch; naive datetimes (as SQLite returns them) are UTC."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _link_from_traceparent(traceparent: str) -> Link | None:
    match = _TRACEPARENT.match(traceparent.strip().lower())
    if match is None or match.group(1) == "ff":
        return None
    context = SpanContext(
        trace_id=int(match.group(2), 16),
        span_id=int(match.group(3), 16),
        is_remote=True,
        trace_flags=TraceFlags(int(match.group(4), 16)),
    )
    return Link(context) if context.is_valid else None


_P = ParamSpec("_P")


def _never_raises(
    hook: Callable[Concatenate[OtelObserver, _P], None],
) -> Callable[Concatenate[OtelObserver, _P], None]:
    """Observers must never break a tool call: log the failure and carry on."""

    def guarded(self: OtelObserver, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            hook(self, *args, **kwargs)
        except Exception:
            _logger.exception("telemetry: %s failed; the tool call is unaffected", hook.__name__)

    functools.update_wrapper(guarded, hook)
    return guarded


class OtelObserver:
    """A `DispatchObserver` that emits GenAI-convention spans and `parallel_dispatch.*` metrics.

    Args:
        tracer: an OpenTelemetry API tracer.
        meter: an OpenTelemetry API meter.
        ids: sets the ids of the spans this observer starts; without it spans get fresh ids
            and the stored trace/span ids (and so cross-restart parent links) are lost.
    """

    def __init__(self, tracer: Tracer, meter: Meter, ids: SpanIdPreset | None = None) -> None:
        self._tracer = tracer
        self._ids = ids
        self._lock = threading.Lock()
        self._capacity: Callable[[], CapacitySnapshot] | None = None
        self._last_adaptive_limit: int | None = None
        self._capacity_error_logged = False

        self._tasks_finished = meter.create_counter(
            METRIC_TASKS_FINISHED, unit="{task}", description="Tasks that became terminal."
        )
        self._task_duration = meter.create_histogram(
            METRIC_TASK_DURATION,
            unit="s",
            description="Task duration from launch to result, by agent type and status.",
            explicit_bucket_boundaries_advisory=_TASK_SECONDS_BUCKETS,
        )
        self._task_tokens = meter.create_counter(
            METRIC_TASK_TOKENS, unit="{token}", description="Tokens reported by sub-agents."
        )
        self._plan_width = meter.create_histogram(
            METRIC_PLAN_WIDTH,
            unit="{task}",
            description="Most tasks a plan runs at once.",
            explicit_bucket_boundaries_advisory=_WIDTH_BUCKETS,
        )
        self._batch_width = meter.create_histogram(
            METRIC_BATCH_WIDTH,
            unit="{task}",
            description="Tasks per planned batch.",
            explicit_bucket_boundaries_advisory=_WIDTH_BUCKETS,
        )
        self._estimated_makespan = meter.create_histogram(
            METRIC_PLAN_ESTIMATED_MAKESPAN,
            unit="s",
            description="Predicted wall time of a planned fan-out.",
            explicit_bucket_boundaries_advisory=_TASK_SECONDS_BUCKETS,
        )
        self._lower_bound = meter.create_histogram(
            METRIC_PLAN_LOWER_BOUND,
            unit="s",
            description="Proven lower bound on a planned fan-out's wall time.",
            explicit_bucket_boundaries_advisory=_TASK_SECONDS_BUCKETS,
        )
        self._coordination_makespan = meter.create_histogram(
            METRIC_COORDINATION_MAKESPAN,
            unit="s",
            description="Actual wall time of a coordination, registration to last result.",
            explicit_bucket_boundaries_advisory=_TASK_SECONDS_BUCKETS,
        )
        self._plan_accuracy = meter.create_histogram(
            METRIC_PLAN_ACCURACY,
            unit="1",
            description="A finished coordination's actual makespan over its plan's estimate.",
            explicit_bucket_boundaries_advisory=_RATIO_BUCKETS,
        )
        self._coordinations_started = meter.create_counter(
            METRIC_COORDINATIONS_STARTED, unit="{coordination}", description="Fan-outs registered."
        )
        self._coordinations_finished = meter.create_counter(
            METRIC_COORDINATIONS_FINISHED,
            unit="{coordination}",
            description="Fan-outs whose every task is terminal, by final state.",
        )
        self._tool_duration = meter.create_histogram(
            METRIC_MCP_SERVER_OPERATION_DURATION,
            unit="s",
            description="MCP tools/call duration as observed by the server.",
            explicit_bucket_boundaries_advisory=_TOOL_SECONDS_BUCKETS,
        )
        meter.create_observable_gauge(
            METRIC_TASKS_IN_FLIGHT,
            callbacks=[self._observe_in_flight],
            unit="{task}",
            description="Tasks launched and not yet terminal, across open coordinations.",
        )
        meter.create_observable_gauge(
            METRIC_FREE_AGENT_SLOTS,
            callbacks=[self._observe_free_slots],
            unit="{slot}",
            description="Agent slots still free across open coordinations.",
        )
        meter.create_observable_gauge(
            METRIC_ADAPTIVE_LIMIT,
            callbacks=[self._observe_adaptive_limit],
            unit="{task}",
            description="Concurrency limit learned from recent failures.",
        )

    def bind_capacity(self, capacity: Callable[[], CapacitySnapshot]) -> None:
        """Use `capacity` for the in-flight, free-slot and adaptive-limit gauges.

        It is called from the metric reader's thread at each collection.
        """
        with self._lock:
            self._capacity = capacity

    # --- DispatchObserver ----------------------------------------------------------------

    @_never_raises
    def plan_made(self, plan: Plan, *, tool: str) -> None:
        attributes = {GEN_AI_TOOL_NAME: tool, ATTR_PLAN_MODE: plan.mode}
        self._plan_width.record(plan.width, attributes)
        for batch in plan.batches:
            self._batch_width.record(len(batch.task_ids), attributes)
        if plan.estimated_makespan_s is not None:
            self._estimated_makespan.record(plan.estimated_makespan_s, attributes)
        if plan.lower_bound_s is not None:
            self._lower_bound.record(plan.lower_bound_s, attributes)

    @_never_raises
    def coordination_registered(
        self, coordination: CoordinationRecord, tasks: list[TaskRecord]
    ) -> None:
        self._coordinations_started.add(
            1,
            {
                ATTR_COORDINATION_MODE: coordination.mode,
                ATTR_COORDINATION_NESTED: _parent_is_a_task(coordination),
            },
        )

    @_never_raises
    def task_finished(self, coordination: CoordinationRecord, task: TaskRecord) -> None:
        self._emit_task_span(coordination, task)
        metric_attributes = {GEN_AI_AGENT_NAME: task.agent, ATTR_TASK_STATUS: task.status}
        self._tasks_finished.add(1, metric_attributes)
        duration = _task_duration_s(task)
        if duration is not None:
            self._task_duration.record(duration, metric_attributes)
        if task.tokens:
            self._task_tokens.add(task.tokens, {GEN_AI_AGENT_NAME: task.agent})

    @_never_raises
    def coordination_finished(
        self, coordination: CoordinationRecord, tasks: list[TaskRecord]
    ) -> None:
        start_ns = _ns(coordination.created_at)
        end_ns = max(_coordination_end_ns(coordination, tasks), start_ns)
        if coordination.mode == "waves":
            self._emit_batch_spans(coordination, tasks)
        self._emit_workflow_span(coordination, start_ns, end_ns)
        attributes = {
            ATTR_COORDINATION_MODE: coordination.mode,
            ATTR_COORDINATION_STATE: coordination.state,
        }
        self._coordinations_finished.add(1, attributes)
        self._coordination_makespan.record((end_ns - start_ns) / 1e9, attributes)
        estimated = coordination.estimated_makespan_s
        if estimated is not None and estimated > 0:
            self._plan_accuracy.record((end_ns - start_ns) / 1e9 / estimated, attributes)

    @_never_raises
    def adaptive_limit_changed(self, limit: int, reason: str) -> None:
        with self._lock:
            self._last_adaptive_limit = limit
        _logger.info("adaptive limit is now %d: %s", limit, reason)

    @_never_raises
    def tool_called(self, tool: str, duration_s: float, error_type: str | None) -> None:
        attributes: dict[str, AttributeValue] = {
            MCP_METHOD_NAME: MCP_METHOD_TOOLS_CALL,
            GEN_AI_OPERATION_NAME: OPERATION_EXECUTE_TOOL,
            GEN_AI_TOOL_NAME: tool,
        }
        if error_type is not None:
            attributes[ERROR_TYPE] = error_type
        self._tool_duration.record(max(duration_s, 0.0), attributes)

    # --- spans ---------------------------------------------------------------------------

    def _emit_task_span(self, coordination: CoordinationRecord, task: TaskRecord) -> None:
        end = task.finished_at or coordination.finished_at or coordination.created_at
        end_ns = _ns(end)
        start_ns = end_ns if task.launched_at is None else min(_ns(task.launched_at), end_ns)
        if coordination.mode == "waves":
            parent_span_id = batch_span_id(coordination.span_id, task.batch_index)
        else:
            parent_span_id = coordination.span_id
        attributes: dict[str, AttributeValue] = {
            GEN_AI_OPERATION_NAME: OPERATION_INVOKE_AGENT,
            GEN_AI_AGENT_NAME: task.agent,
            ATTR_COORDINATION_ID: coordination.coordination_id,
            ATTR_TASK_ID: task.task_id,
            ATTR_TASK_STATUS: task.status,
            ATTR_BATCH_INDEX: task.batch_index,
            ATTR_TASK_LAUNCHED: task.launched_at is not None,
        }
        if task.tokens is not None:
            attributes[GEN_AI_USAGE_TOTAL_TOKENS] = task.tokens
        if task.duration_s is not None:
            attributes[ATTR_TASK_REPORTED_DURATION] = task.duration_s
        status = Status(StatusCode.UNSET)
        if task.status in _FAILED_STATUSES:
            attributes[ERROR_TYPE] = task.status
            status = Status(StatusCode.ERROR, (task.error or task.status)[:256])
        self._emit(
            f"{OPERATION_INVOKE_AGENT} {task.agent}",
            trace_id=coordination.trace_id,
            span_id=task.span_id,
            parent=_local_parent(coordination.trace_id, parent_span_id),
            start_ns=start_ns,
            end_ns=end_ns,
            attributes=attributes,
            status=status,
        )

    def _emit_batch_spans(self, coordination: CoordinationRecord, tasks: list[TaskRecord]) -> None:
        by_batch: dict[int, list[TaskRecord]] = {}
        for task in tasks:
            by_batch.setdefault(task.batch_index, []).append(task)
        for index, members in sorted(by_batch.items()):
            launched = [_ns(t.launched_at) for t in members if t.launched_at is not None]
            finished = [_ns(t.finished_at) for t in members if t.finished_at is not None]
            fallback = _ns(coordination.finished_at or coordination.created_at)
            end_ns = max(finished, default=fallback)
            start_ns = min(launched, default=end_ns)
            failed = sum(1 for t in members if t.status in _FAILED_STATUSES)
            self._emit(
                SPAN_BATCH,
                trace_id=coordination.trace_id,
                span_id=batch_span_id(coordination.span_id, index),
                parent=_local_parent(coordination.trace_id, coordination.span_id),
                start_ns=start_ns,
                end_ns=end_ns,
                attributes={
                    ATTR_COORDINATION_ID: coordination.coordination_id,
                    ATTR_BATCH_INDEX: index,
                    ATTR_BATCH_SIZE: len(members),
                },
                status=Status(StatusCode.ERROR, f"{failed} task(s) failed")
                if failed
                else Status(StatusCode.UNSET),
            )

    def _emit_workflow_span(
        self, coordination: CoordinationRecord, start_ns: int, end_ns: int
    ) -> None:
        attributes: dict[str, AttributeValue] = {
            GEN_AI_OPERATION_NAME: OPERATION_INVOKE_WORKFLOW,
            ATTR_COORDINATION_ID: coordination.coordination_id,
            ATTR_COORDINATION_MODE: coordination.mode,
            ATTR_COORDINATION_STATE: coordination.state,
            ATTR_COORDINATION_TASK_COUNT: coordination.total,
            ATTR_COORDINATION_WIDTH: coordination.width,
        }
        name = OPERATION_INVOKE_WORKFLOW
        if coordination.label:
            attributes[GEN_AI_WORKFLOW_NAME] = coordination.label
            name = f"{OPERATION_INVOKE_WORKFLOW} {coordination.label}"
        status = Status(StatusCode.UNSET)
        if coordination.state == "completed_with_failures":
            attributes[ERROR_TYPE] = coordination.state
            status = Status(StatusCode.ERROR, "some tasks failed, timed out or were cancelled")
        link = _link_from_traceparent(coordination.link_traceparent or "")
        parent = None
        if coordination.parent_span_id is not None:
            parent = _local_parent(
                coordination.trace_id,
                coordination.parent_span_id,
                remote=not _parent_is_a_task(coordination),
            )
        self._emit(
            name,
            trace_id=coordination.trace_id,
            span_id=coordination.span_id,
            parent=parent,
            start_ns=start_ns,
            end_ns=end_ns,
            attributes=attributes,
            status=status,
            links=[link] if link is not None else [],
        )

    def _emit(
        self,
        name: str,
        *,
        trace_id: str,
        span_id: str,
        parent: SpanContext | None,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, AttributeValue],
        status: Status,
        links: Sequence[Link] = (),
    ) -> None:
        # An explicit empty Context keeps a root span from nesting under whatever span is
        # current (e.g. the MCP SDK's `tools/call` span).
        context = (
            Context() if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
        )
        if self._ids is None:
            span = self._start(name, context, start_ns, attributes, links)
        else:
            with self._ids.preset(trace_id=int(trace_id, 16), span_id=int(span_id, 16)):
                span = self._start(name, context, start_ns, attributes, links)
        span.set_status(status)
        span.end(end_time=max(end_ns, start_ns))

    def _start(
        self,
        name: str,
        context: Context,
        start_ns: int,
        attributes: dict[str, AttributeValue],
        links: Sequence[Link],
    ) -> trace.Span:
        return self._tracer.start_span(
            name,
            context=context,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
            start_time=start_ns,
        )

    # --- gauges --------------------------------------------------------------------------

    def _snapshot(self) -> CapacitySnapshot | None:
        with self._lock:
            capacity = self._capacity
        if capacity is None:
            return None
        try:
            return capacity()
        except Exception:
            if not self._capacity_error_logged:
                self._capacity_error_logged = True
                _logger.exception("telemetry: reading capacity for gauges failed")
            return None

    def _observe_in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        snapshot = self._snapshot()
        return [] if snapshot is None else [Observation(snapshot.in_flight)]

    def _observe_free_slots(self, options: CallbackOptions) -> Iterable[Observation]:
        snapshot = self._snapshot()
        return [] if snapshot is None else [Observation(snapshot.free_agent_slots)]

    def _observe_adaptive_limit(self, options: CallbackOptions) -> Iterable[Observation]:
        snapshot = self._snapshot()
        limit = snapshot.adaptive_limit if snapshot is not None else None
        if limit is None:
            with self._lock:
                limit = self._last_adaptive_limit
        return [] if limit is None else [Observation(limit)]


def _local_parent(trace_id: str, span_id: str, remote: bool = False) -> SpanContext:
    return SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=remote,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


def _parent_is_a_task(coordination: CoordinationRecord) -> bool:
    """Whether the parent span is a task of ours (nested) rather than the caller's traceparent."""
    if coordination.parent_span_id is None:
        return False
    link = _link_from_traceparent(coordination.link_traceparent or "")
    return link is None or f"{link.context.span_id:016x}" != coordination.parent_span_id


def _task_duration_s(task: TaskRecord) -> float | None:
    if task.duration_s is not None:
        return task.duration_s
    if task.launched_at is None or task.finished_at is None:
        return None
    return max(_ns(task.finished_at) - _ns(task.launched_at), 0) / 1e9


def _coordination_end_ns(coordination: CoordinationRecord, tasks: list[TaskRecord]) -> int:
    if coordination.finished_at is not None:
        return _ns(coordination.finished_at)
    finished = [_ns(t.finished_at) for t in tasks if t.finished_at is not None]
    return max(finished, default=_ns(coordination.created_at))
