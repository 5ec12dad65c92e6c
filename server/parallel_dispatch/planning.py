"""Turns a plan request plus what the server knows (limits, load, history) into a `Plan`.

Pure: every input arrives in a `PlanningContext`; the service gathers them from the store
and the host. The scheduling itself is `planner.plan_schedule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from parallel_dispatch.errors import InvalidPlanError
from parallel_dispatch.models import Batch, Mode, Plan, TaskSpec
from parallel_dispatch.planner import Job, Schedule, plan_schedule, validate_jobs


@dataclass(frozen=True)
class Observation:
    """One finished task from history, for duration estimates and the adaptive limit."""

    agent: str
    status: str
    duration_s: float | None
    finished_at: datetime
    error: str | None = None


@dataclass(frozen=True)
class HostReading:
    """Load average per core (1 min) and the fraction of memory available, 0..1."""

    load_per_core: float
    memory_available_fraction: float


@dataclass(frozen=True)
class PlanningContext:
    """Everything besides the request that bounds or informs a plan."""

    hard_cap: int
    max_active_agents: int
    in_flight: int = 0
    host: HostReading | None = None
    adaptive_limit: int | None = None
    history: Sequence[Observation] = field(default_factory=tuple)
    next_slot_free_in_s: float | None = None


def decide_width(max_parallel: int | None, ctx: PlanningContext) -> tuple[int, list[str]]:
    """The most tasks that may run at once, and a note for every limit that bit."""
    width = ctx.hard_cap
    notes = [f"width {ctx.hard_cap}: server cap (PARALLEL_DISPATCH_MAX_PARALLEL)"]
    if max_parallel is not None and max_parallel < width:
        width = max_parallel
        notes = [f"width {width}: requested max_parallel"]
    free = ctx.max_active_agents - ctx.in_flight
    if free < width:
        if free >= 1:
            width = free
            notes.append(
                f"width {width}: only {free} of {ctx.max_active_agents} agent slots free "
                f"({ctx.in_flight} tasks running in other coordinations)"
            )
        else:
            width = 1
            wait = (
                f"; a slot is expected in ~{ctx.next_slot_free_in_s:.0f} s"
                if ctx.next_slot_free_in_s is not None
                else ""
            )
            notes.append(
                f"width 1: all {ctx.max_active_agents} agent slots are in use{wait}; "
                "launch one task at a time"
            )
    return width, notes


def make_plan(
    tasks: Sequence[TaskSpec],
    mode: Mode,
    max_parallel: int | None,
    ctx: PlanningContext,
    explicit_batches: Sequence[Sequence[str]] | None = None,
) -> Plan:
    """Plan `tasks` under every limit in `ctx`.

    Raises:
        DuplicateTaskError, UnknownDependencyError, DependencyCycleError, InvalidPlanError.
    """
    width, notes = decide_width(max_parallel, ctx)
    jobs = [Job(t.id, tuple(t.depends_on), t.estimate_s) for t in tasks]
    schedule = plan_schedule(jobs, width, mode)
    if explicit_batches is not None:
        schedule = _explicit_schedule(jobs, explicit_batches, width, schedule)
        notes.append("batches as given by the caller (validated)")
    if schedule.estimated_makespan_s is None:
        notes.append("no duration estimates: batches balanced by count")
    return Plan(
        mode=mode,
        width=width,
        batches=[
            Batch(index=i, task_ids=ids, estimate_s=est)
            for i, (ids, est) in enumerate(
                zip(schedule.batches, schedule.batch_estimates, strict=True)
            )
        ],
        dispatch_order=schedule.dispatch_order,
        estimated_makespan_s=schedule.estimated_makespan_s,
        lower_bound_s=schedule.lower_bound_s,
        notes=notes + schedule.notes,
    )


def _explicit_schedule(
    jobs: Sequence[Job], batches: Sequence[Sequence[str]], width: int, planned: Schedule
) -> Schedule:
    """Check a caller's batches: every task once, dependencies earlier, none wider than width."""
    by_id = validate_jobs(jobs)
    seen: dict[str, int] = {}
    for index, batch in enumerate(batches):
        if not batch:
            raise InvalidPlanError(f"batch {index} is empty; remove it or put tasks in it.")
        if len(batch) > width:
            raise InvalidPlanError(
                f"batch {index} has {len(batch)} tasks but width is {width}; "
                "split it or omit `batches` to let the server plan."
            )
        for task_id in batch:
            if task_id not in by_id:
                raise InvalidPlanError(f"batch {index} names {task_id!r}, which is not a task.")
            if task_id in seen:
                raise InvalidPlanError(f"{task_id!r} appears in batches {seen[task_id]} and {index}.")
            seen[task_id] = index
    missing = [j.id for j in jobs if j.id not in seen]
    if missing:
        raise InvalidPlanError(f"tasks missing from batches: {', '.join(missing[:20])}.")
    for job in jobs:
        for dep in job.depends_on:
            if seen[dep] >= seen[job.id]:
                raise InvalidPlanError(
                    f"{job.id!r} (batch {seen[job.id]}) depends on {dep!r} (batch {seen[dep]}); "
                    "a dependency must sit in an earlier batch."
                )
    durations = {j.id: j.duration_s for j in jobs}
    known = all(d is not None for d in durations.values())
    estimates: list[float | None] = [
        max(durations[t] or 0.0 for t in batch) if known else None for batch in batches
    ]
    makespan = sum(e or 0.0 for e in estimates) if known else None
    return Schedule(
        batches=[list(b) for b in batches],
        batch_estimates=estimates,
        dispatch_order=[t for b in batches for t in b],
        estimated_makespan_s=makespan,
        lower_bound_s=planned.lower_bound_s,
    )
