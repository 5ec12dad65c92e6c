"""Turns a plan request plus what the server knows (limits, load, history) into a `Plan`.

Pure: every input arrives in a `PlanningContext`; the service gathers them from the store
and the host. The scheduling itself is `planner.plan_schedule`; duration estimates come from
`estimates`, host pressure and the adaptive limit from `capacity`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from parallel_dispatch.capacity import (
    HostReading,
    HostThresholds,
    host_limited_width,
    is_overload_error,
)
from parallel_dispatch.errors import InvalidPlanError
from parallel_dispatch.estimates import (
    DurationEstimate,
    Observation,
    estimate_durations,
    format_seconds,
)
from parallel_dispatch.models import Batch, Mode, Plan, TaskSpec
from parallel_dispatch.planner import (
    Job,
    Schedule,
    build_graph,
    plan_schedule,
    stream_makespan,
    validate_jobs,
)

__all__ = [
    "HostReading",
    "HostThresholds",
    "Observation",
    "PlanningContext",
    "RunningTask",
    "decide_width",
    "make_plan",
    "next_slot_free_in_s",
]

#: How many of the newest observations `decide_width` scans to explain the adaptive limit.
_RECENT_FOR_NOTES = 200


@dataclass(frozen=True)
class RunningTask:
    """A task in flight somewhere, for predicting when a slot frees."""

    agent: str
    launched_at: datetime | None
    estimate_s: float | None
    deadline_at: datetime | None


def next_slot_free_in_s(
    running: Sequence[RunningTask], history: Sequence[Observation], now: datetime
) -> float | None:
    """Seconds until the running task expected to finish first does (None: nothing runs).

    A task's expected end is its launch plus its `estimate_s`, else its agent type's
    estimate from history, else its deadline.
    """
    if not running:
        return None
    estimates = estimate_durations(history, {t.agent for t in running}) if history else {}
    best: float | None = None
    for task in running:
        seconds = task.estimate_s
        if seconds is None and task.agent in estimates and estimates[task.agent].samples:
            seconds = estimates[task.agent].seconds
        if task.launched_at is not None and seconds is not None:
            expected = (task.launched_at - now).total_seconds() + seconds
        elif task.deadline_at is not None:
            expected = (task.deadline_at - now).total_seconds()
        else:
            continue
        expected = max(0.0, expected)
        best = expected if best is None else min(best, expected)
    return best


@dataclass(frozen=True)
class PlanningContext:
    """Everything besides the request that bounds or informs a plan.

    `history` holds recent observations, newest first; `adaptive_limit` is the limit the
    service learned with `capacity.adapt_limit` (None: nothing learned), and
    `adaptive_reason` the sentence it returned when the limit last changed.
    """

    hard_cap: int
    max_active_agents: int
    in_flight: int = 0
    host: HostReading | None = None
    adaptive_limit: int | None = None
    history: Sequence[Observation] = field(default_factory=tuple)
    next_slot_free_in_s: float | None = None
    thresholds: HostThresholds = field(default_factory=HostThresholds)
    adaptive_reason: str | None = None


def decide_width(max_parallel: int | None, ctx: PlanningContext) -> tuple[int, list[str]]:
    """The most tasks that may run at once, and a note for every limit that bit.

    The width is the minimum of the request, the server cap, the free agent slots, the host
    (scaled down under pressure) and the adaptive limit; never below 1.
    """
    width = max(1, ctx.hard_cap)
    notes = [f"width {width}: server cap (PARALLEL_DISPATCH_MAX_PARALLEL)"]
    if max_parallel is not None and max_parallel < width:
        width = max(1, max_parallel)
        notes = [f"width {width}: requested max_parallel"]
    free = ctx.max_active_agents - ctx.in_flight
    if free < width:
        if free >= 1:
            width = free
            notes.append(
                f"width {width}: only {free} of {ctx.max_active_agents} agent slots free "
                f"({ctx.in_flight} tasks running in open coordinations)"
            )
        else:
            width = 1
            wait = (
                f"; a slot is expected to free in ~{format_seconds(ctx.next_slot_free_in_s)}"
                if ctx.next_slot_free_in_s is not None
                else ""
            )
            notes.append(
                f"width 1: all {ctx.max_active_agents} agent slots are in use{wait}; "
                "launch one task at a time"
            )
    if ctx.host is not None:
        width, host_note = host_limited_width(width, ctx.host, ctx.thresholds)
        if host_note:
            notes.append(host_note)
    if ctx.adaptive_limit is not None and ctx.adaptive_limit < width:
        width = max(1, ctx.adaptive_limit)
        notes.append(f"width {width}: adaptive limit {_adaptive_reason(ctx)}")
    return width, notes


def _adaptive_reason(ctx: PlanningContext) -> str:
    if ctx.adaptive_reason:
        return f"({ctx.adaptive_reason}); it grows by one after each clean batch at full width"
    recent = list(ctx.history[:_RECENT_FOR_NOTES])
    overloads = sum(
        1 for o in recent if o.status in ("failed", "timed_out") and is_overload_error(o.error)
    )
    timeouts = sum(1 for o in recent if o.status == "timed_out" and not is_overload_error(o.error))
    causes = []
    if overloads:
        causes.append(f"{overloads} rate-limit/overload failures")
    if timeouts:
        causes.append(f"{timeouts} timeouts")
    after = f"after {' and '.join(causes)} in recent runs" if causes else "learned from outcomes"
    return f"{after}; it grows by one after each clean batch at full width"


def _planning_durations(
    tasks: Sequence[TaskSpec], history: Sequence[Observation]
) -> tuple[dict[str, float] | None, list[str]]:
    """Seconds per task id, or None when nothing is known; and notes on where they came from.

    Nothing is known when no task has `estimate_s` and no involved agent type has a recorded
    run: then plans balance by count and report no makespan. Otherwise every task gets a
    duration: its own `estimate_s`, else its agent type's estimate from history; an agent type
    without runs borrows the median of every type's runs or, with no history at all, the
    median of the caller's estimates.
    """
    agents = sorted({t.agent for t in tasks if t.estimate_s is None})
    estimates: dict[str, DurationEstimate] = estimate_durations(history, agents) if agents else {}
    given = [t.estimate_s for t in tasks if t.estimate_s is not None]
    if not given and not any(e.samples for e in estimates.values()):
        involved = ", ".join(agents[:5]) + (" ..." if len(agents) > 5 else "")
        return None, [
            f"no duration estimates (no estimate_s, no history for {involved}): "
            "batches balanced by count"
        ]
    notes: list[str] = []
    if given:
        notes.append(f"{len(given)} of {len(tasks)} tasks use the caller's estimate_s")
    fallback: float | None = None
    if given and not history:
        ordered = sorted(given)
        fallback = ordered[len(ordered) // 2]
    durations: dict[str, float] = {}
    for agent in agents:
        estimate = estimates[agent]
        if estimate.samples == 0 and fallback is not None:
            notes.append(
                f"{agent}: no history; assuming {format_seconds(fallback)}, the median "
                "of the given estimate_s"
            )
        else:
            notes.append(estimate.note)
    for t in tasks:
        if t.estimate_s is not None:
            durations[t.id] = t.estimate_s
        else:
            estimate = estimates[t.agent]
            use_fallback = estimate.samples == 0 and fallback is not None
            durations[t.id] = fallback if use_fallback and fallback else estimate.seconds
    return durations, notes


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
    durations, estimate_notes = _planning_durations(tasks, ctx.history)
    jobs = [
        Job(t.id, tuple(t.depends_on), durations[t.id] if durations is not None else None)
        for t in tasks
    ]
    schedule = plan_schedule(jobs, width, mode)
    if explicit_batches is not None:
        schedule = _explicit_schedule(jobs, explicit_batches, width, mode, schedule)
        notes.append("batches as given by the caller (validated)")
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
        notes=notes + estimate_notes + schedule.notes,
    )


def _explicit_schedule(
    jobs: Sequence[Job],
    batches: Sequence[Sequence[str]],
    width: int,
    mode: Mode,
    planned: Schedule,
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
                raise InvalidPlanError(
                    f"{task_id!r} appears in batches {seen[task_id]} and {index}."
                )
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
    order = [t for b in batches for t in b]
    makespan: float | None = None
    if known and mode == "waves":
        makespan = sum(e or 0.0 for e in estimates)
    elif known:
        graph = build_graph(jobs, {j.id: j.duration_s or 0.0 for j in jobs})
        position = {jid: i for i, jid in enumerate(graph.ids)}
        makespan = stream_makespan(graph, [position[t] for t in order], width)
    bound = planned.lower_bound_s
    return Schedule(
        batches=[list(b) for b in batches],
        batch_estimates=estimates,
        dispatch_order=order,
        estimated_makespan_s=makespan,
        lower_bound_s=min(bound, makespan) if bound is not None and makespan is not None else bound,
    )
