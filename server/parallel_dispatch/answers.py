"""What the service answers and tells observers, built from lifecycle state (pure).

The contract's answer shapes and the agent-facing instruction sentences live here, so the
service keeps to its use cases.
"""

from __future__ import annotations

from collections.abc import Sequence

from parallel_dispatch.events import CoordinationRecord, TaskRecord
from parallel_dispatch.lifecycle import CoordinationState, TaskState
from parallel_dispatch.models import LaunchItem, Plan, TaskResult, TaskView


def launch_items(tasks: Sequence[TaskState]) -> list[LaunchItem]:
    return [LaunchItem(task_id=t.task_id, agent=t.agent, prompt=t.prompt) for t in tasks]


def results(coord: CoordinationState) -> list[TaskResult]:
    return [
        TaskResult(
            task_id=t.task_id,
            agent=t.agent,
            status=t.status,
            summary=t.summary,
            duration_s=t.duration_s,
            error=(t.error or t.reason) if t.status != "succeeded" else None,
        )
        for t in coord.ordered()
    ]


def task_view(task: TaskState) -> TaskView:
    return TaskView(
        task_id=task.task_id,
        agent=task.agent,
        status=task.status,
        depends_on=task.depends_on,
        batch=task.batch_index,
        estimate_s=task.estimate_s,
        launched_at=task.launched_at,
        finished_at=task.finished_at,
        duration_s=task.duration_s,
        reason=task.reason,
    )


def launch_instructions(coord: CoordinationState, launch: list[LaunchItem]) -> str:
    background = "false" if coord.mode == "waves" else "true"
    what = (
        "this task now as an Agent call"
        if len(launch) == 1
        else (f"these {len(launch)} tasks now as {len(launch)} Agent calls in ONE message")
    )
    return (
        f"Launch {what} "
        f"(subagent_type = agent, run_in_background: {background}). Tell each sub-agent to "
        f'call record_result(coordination_id="{coord.coordination_id}", task_id=<its id>, '
        "status, summary) when done; if one cannot, record it for them."
    )


def record_instructions(coord: CoordinationState, launch: list[LaunchItem]) -> str:
    if coord.state != "running" or not launch:
        return progress_instructions(coord, launch)
    ids = ", ".join(item.task_id for item in launch)
    return (
        f"Recorded. Next ready: {ids}. Orchestrator: call get_coordination("
        f'coordination_id="{coord.coordination_id}") and launch its `launch` list. '
        "Sub-agent: do not launch them; end your reply saying the next tasks are ready."
    )


def progress_instructions(coord: CoordinationState, launch: list[LaunchItem]) -> str:
    if coord.state != "running":
        return "All tasks are terminal: synthesise once from `results`."
    running = [t.task_id for t in coord.ordered() if t.status == "running"]
    if launch:
        return launch_instructions(coord, launch)
    shown = ", ".join(running[:10]) + (" ..." if len(running) > 10 else "")
    return f"Nothing to launch now; waiting for {len(running)} running task(s): {shown}."


def coordination_record(coord: CoordinationState) -> CoordinationRecord:
    return CoordinationRecord(
        coordination_id=coord.coordination_id,
        label=coord.label,
        mode=coord.mode,
        state=coord.state,
        trace_id=coord.trace_id,
        span_id=coord.span_id,
        parent_span_id=coord.parent_span_id,
        link_traceparent=coord.link_traceparent,
        created_at=coord.created_at,
        finished_at=coord.finished_at,
        total=len(coord.tasks),
        width=coord.width,
        estimated_makespan_s=(
            None
            if coord.state == "running"
            else Plan.model_validate_json(coord.plan_json).estimated_makespan_s
        ),
    )


def task_record(task: TaskState) -> TaskRecord:
    return TaskRecord(
        task_id=task.task_id,
        agent=task.agent,
        status=task.status,
        batch_index=task.batch_index,
        span_id=task.span_id,
        launched_at=task.launched_at,
        finished_at=task.finished_at,
        duration_s=task.duration_s,
        tokens=task.tokens,
        error=task.error,
    )
