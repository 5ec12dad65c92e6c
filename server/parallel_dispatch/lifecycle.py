"""The coordination state machine, pure: timeouts, results, skips and what to launch next.

Task states: pending -> running -> succeeded | failed | cancelled | timed_out | skipped.
Waves mode launches batch i+1 only once every task of batch i is terminal; stream mode
launches any task whose dependencies succeeded as soon as fewer than `width` are running.
The clock is passed in; the store loads and saves these objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from parallel_dispatch.errors import ConflictingResultError, TaskNotReportableError
from parallel_dispatch.models import FAILED_STATUSES, TERMINAL_STATUSES, ResultIn


@dataclass
class TaskState:
    task_id: str
    agent: str
    depends_on: list[str]
    batch_index: int
    dispatch_rank: int
    span_id: str
    prompt: str | None = None
    estimate_s: float | None = None
    status: str = "pending"
    launched_at: datetime | None = None
    announced_at: datetime | None = None
    deadline_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    tokens: int | None = None
    summary: str | None = None
    output_json: str | None = None
    error: str | None = None
    reason: str | None = None
    changed: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass
class CoordinationState:
    coordination_id: str
    mode: str
    width: int
    task_timeout_s: float
    created_at: datetime
    trace_id: str
    span_id: str
    plan_json: str
    label: str | None = None
    parent_coordination_id: str | None = None
    parent_task_id: str | None = None
    parent_span_id: str | None = None
    link_traceparent: str | None = None
    state: str = "running"
    finished_at: datetime | None = None
    tasks: dict[str, TaskState] = field(default_factory=dict)
    changed: bool = False

    @property
    def done(self) -> int:
        return sum(1 for t in self.tasks.values() if t.terminal)

    @property
    def failed(self) -> int:
        return sum(1 for t in self.tasks.values() if t.status in FAILED_STATUSES)

    def ordered(self) -> list[TaskState]:
        return sorted(self.tasks.values(), key=lambda t: (t.batch_index, t.dispatch_rank))


def output_to_json(output: Any) -> str | None:
    return None if output is None else json.dumps(output, sort_keys=True, separators=(",", ":"))


def expire_timeouts(coord: CoordinationState, now: datetime) -> list[TaskState]:
    """Turn running tasks past their deadline into `timed_out`."""
    expired = []
    for task in coord.ordered():
        if task.status == "running" and task.deadline_at is not None and task.deadline_at <= now:
            task.status = "timed_out"
            task.finished_at = task.deadline_at
            task.reason = f"no result within {coord.task_timeout_s:g} s of launch; counted as lost"
            task.changed = True
            expired.append(task)
    return expired


def apply_result(
    coord: CoordinationState, result: ResultIn, now: datetime
) -> tuple[bool, TaskState]:
    """Record a reported result. Returns (recorded, task); False when it was already recorded.

    Raises:
        ConflictingResultError: a different final result is already recorded.
        TaskNotReportableError: the task was skipped, so it never ran.
    """
    task = coord.tasks[result.task_id]
    output_json = output_to_json(result.output)
    if task.status in ("succeeded", "failed", "cancelled"):
        differences = [
            name
            for name, old, new in (
                ("status", task.status, result.status),
                ("summary", task.summary, result.summary),
                ("output", task.output_json, output_json),
                ("error", task.error, result.error),
                ("tokens", task.tokens, result.tokens),
            )
            if new is not None and old != new
        ]
        if result.duration_s is not None and task.duration_s != result.duration_s:
            differences.append("duration_s")
        if differences:
            raise ConflictingResultError(task.task_id, task.status, differences)
        return False, task
    if task.status == "skipped":
        raise TaskNotReportableError(
            f"task {task.task_id!r} was skipped ({task.reason}); it has no result to record. "
            "Do not launch it; call get_coordination for what remains."
        )
    late = task.status == "timed_out"
    task.status = result.status
    task.summary = result.summary
    task.output_json = output_json
    task.error = result.error
    task.tokens = result.tokens
    task.finished_at = now
    if result.duration_s is not None:
        task.duration_s = result.duration_s
    elif task.launched_at is not None:
        task.duration_s = max(0.0, (now - task.launched_at).total_seconds())
    if late:
        task.reason = "result arrived after the task had timed out; dependents stay skipped"
    task.changed = True
    return True, task


def skip_dependents(coord: CoordinationState, now: datetime) -> list[TaskState]:
    """Mark pending tasks whose dependency did not succeed as `skipped`, transitively."""
    skipped: list[TaskState] = []
    progress = True
    while progress:
        progress = False
        for task in coord.ordered():
            if task.status != "pending":
                continue
            for dep in task.depends_on:
                dep_task = coord.tasks[dep]
                if dep_task.terminal and dep_task.status != "succeeded":
                    task.status = "skipped"
                    task.reason = f"dependency {dep!r} ended {dep_task.status}"
                    task.finished_at = now
                    task.changed = True
                    skipped.append(task)
                    progress = True
                    break
    return skipped


def _launch(task: TaskState, coord: CoordinationState, now: datetime) -> None:
    task.status = "running"
    task.launched_at = now
    task.deadline_at = now + timedelta(seconds=coord.task_timeout_s)
    task.changed = True


def announce(coord: CoordinationState, now: datetime) -> list[TaskState]:
    """Hand the orchestrator every running task it has not been told to launch yet.

    A task that became ready inside a sub-agent's `record_result` was started then, but that
    answer went to the sub-agent, not to the orchestrator. The orchestrator hears of it here
    (from `register_coordination` or `get_coordination`); its clock restarts now, because
    this is when it will really be launched.
    """
    announced = []
    for task in coord.ordered():
        if task.status == "running" and task.announced_at is None:
            if task.launched_at is not None and task.launched_at < now:
                task.launched_at = now
                task.deadline_at = now + timedelta(seconds=coord.task_timeout_s)
            task.announced_at = now
            task.changed = True
            announced.append(task)
    return announced


def launch_ready(
    coord: CoordinationState, now: datetime, free_slots: int | None = None
) -> list[TaskState]:
    """Start whatever may start now under the coordination's mode, width and free slots.

    `free_slots` is how many agent slots the other open coordinations leave free (None: no
    shared limit). A coordination with nothing running may always start one task, so that no
    fan-out waits forever on slots others hold.
    """
    running = sum(1 for t in coord.tasks.values() if t.status == "running")
    if coord.mode == "waves":
        candidates = _current_wave_pending(coord)
    else:
        candidates = [
            t
            for t in sorted(coord.tasks.values(), key=lambda t: t.dispatch_rank)
            if t.status == "pending"
            and all(coord.tasks[d].status == "succeeded" for d in t.depends_on)
        ][: max(0, coord.width - running)]
    if free_slots is not None:
        candidates = candidates[: max(free_slots - running, 0 if running else 1)]
    for task in candidates:
        _launch(task, coord, now)
    return candidates


def _current_wave_pending(coord: CoordinationState) -> list[TaskState]:
    """The pending tasks of the first wave that is not wholly terminal (waves mode)."""
    batches: dict[int, list[TaskState]] = {}
    for task in coord.ordered():
        batches.setdefault(task.batch_index, []).append(task)
    for index in sorted(batches):
        members = batches[index]
        if all(t.terminal for t in members):
            continue
        return [t for t in members if t.status == "pending"]
    return []


def finished_batches(coord: CoordinationState, before: set[int]) -> list[int]:
    """Batch indexes that are wholly terminal now but were not in `before`."""
    status: dict[int, bool] = {}
    for task in coord.tasks.values():
        status[task.batch_index] = status.get(task.batch_index, True) and task.terminal
    return sorted(i for i, done in status.items() if done and i not in before)


def terminal_batches(coord: CoordinationState) -> set[int]:
    return set(finished_batches(coord, set()))


def settle(
    coord: CoordinationState, now: datetime, free_slots: int | None = None
) -> tuple[list[TaskState], list[TaskState]]:
    """Skip what can no longer run, launch what may, and close the coordination when done.

    `free_slots`: agent slots left by other coordinations (see `launch_ready`).
    Returns (launched, skipped).
    """
    skipped = skip_dependents(coord, now)
    launched = launch_ready(coord, now, free_slots)
    if coord.state == "running" and all(t.terminal for t in coord.tasks.values()):
        coord.state = "completed" if coord.failed == 0 else "completed_with_failures"
        coord.finished_at = max(
            (t.finished_at for t in coord.tasks.values() if t.finished_at is not None),
            default=now,
        )
        coord.changed = True
    return launched, skipped
