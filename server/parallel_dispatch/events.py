"""What the service tells observers (telemetry) after each unit of work has been committed.

The records are plain snapshots of persisted state, so an observer can emit spans with the
real, stored timestamps and ids even after a server restart. No SDK code lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from parallel_dispatch.models import Plan


@dataclass(frozen=True)
class TaskRecord:
    """A task as stored. `span_id` is 16 hex chars, allocated at registration."""

    task_id: str
    agent: str
    status: str
    batch_index: int
    span_id: str
    launched_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    tokens: int | None
    error: str | None


@dataclass(frozen=True)
class CoordinationRecord:
    """A coordination as stored.

    `trace_id` (32 hex) and `span_id` (16 hex) are the ids of its `invoke_workflow` span;
    `parent_span_id` is the parent task's span (nested coordinations share the parent's trace)
    or the caller's span from a `traceparent` in the request's `_meta`, else None.
    `link_traceparent` is that incoming W3C traceparent, if any. `estimated_makespan_s` is
    the plan's prediction, filled in once the coordination has finished (for plan accuracy).
    """

    coordination_id: str
    label: str | None
    mode: str
    state: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    link_traceparent: str | None
    created_at: datetime
    finished_at: datetime | None
    total: int
    width: int
    estimated_makespan_s: float | None = None


@dataclass(frozen=True)
class CapacitySnapshot:
    """Live numbers for gauges."""

    in_flight: int
    free_agent_slots: int
    adaptive_limit: int | None


class DispatchObserver(Protocol):
    """Receives committed facts. Implementations must never raise or block for long."""

    def plan_made(self, plan: Plan, *, tool: str) -> None:
        """A plan was produced (by `plan_batches` or `register_coordination`)."""

    def coordination_registered(
        self, coordination: CoordinationRecord, tasks: list[TaskRecord]
    ) -> None:
        """A coordination and its tasks were stored; the first tasks may be running."""

    def task_finished(self, coordination: CoordinationRecord, task: TaskRecord) -> None:
        """A task became terminal (succeeded, failed, cancelled, timed_out or skipped)."""

    def coordination_finished(
        self, coordination: CoordinationRecord, tasks: list[TaskRecord]
    ) -> None:
        """Every task is terminal; `tasks` are all of them, final."""

    def adaptive_limit_changed(self, limit: int, reason: str) -> None:
        """The learned concurrency limit moved."""

    def tool_called(self, tool: str, duration_s: float, error_type: str | None) -> None:
        """A tool call finished (`error_type` is the exception class name on failure)."""


class NullObserver:
    """Observes nothing: the default when telemetry is off."""

    def plan_made(self, plan: Plan, *, tool: str) -> None:
        return None

    def coordination_registered(
        self, coordination: CoordinationRecord, tasks: list[TaskRecord]
    ) -> None:
        return None

    def task_finished(self, coordination: CoordinationRecord, task: TaskRecord) -> None:
        return None

    def coordination_finished(
        self, coordination: CoordinationRecord, tasks: list[TaskRecord]
    ) -> None:
        return None

    def adaptive_limit_changed(self, limit: int, reason: str) -> None:
        return None

    def tool_called(self, tool: str, duration_s: float, error_type: str | None) -> None:
        return None
