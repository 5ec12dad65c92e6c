"""Pure planning: jobs, a width and a mode in; a schedule out. No I/O, no clock.

Waves mode: batch i+1 starts when every task of batch i is done, so the makespan is the sum
of each batch's longest task. Stream mode: a task starts as soon as its dependencies are done
and a slot is free (list scheduling by `dispatch_order`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from parallel_dispatch.errors import (
    DependencyCycleError,
    DuplicateTaskError,
    UnknownDependencyError,
)


@dataclass(frozen=True)
class Job:
    """A task as the planner sees it: an id, its dependencies and a duration (None: unknown)."""

    id: str
    depends_on: tuple[str, ...] = ()
    duration_s: float | None = None


@dataclass(frozen=True)
class Schedule:
    """The planner's answer; `batches` and `dispatch_order` name every job exactly once."""

    batches: list[list[str]]
    batch_estimates: list[float | None]
    dispatch_order: list[str]
    estimated_makespan_s: float | None
    lower_bound_s: float | None
    notes: list[str] = field(default_factory=list)


def validate_jobs(jobs: Sequence[Job]) -> dict[str, Job]:
    """Index jobs by id, checking ids are unique, dependencies known and acyclic.

    Raises:
        DuplicateTaskError, UnknownDependencyError, DependencyCycleError.
    """
    by_id: dict[str, Job] = {}
    duplicates: list[str] = []
    for job in jobs:
        if job.id in by_id:
            duplicates.append(job.id)
        by_id[job.id] = job
    if duplicates:
        raise DuplicateTaskError(sorted(set(duplicates)))
    for job in jobs:
        for dep in job.depends_on:
            if dep not in by_id:
                raise UnknownDependencyError(job.id, dep)
            if dep == job.id:
                raise DependencyCycleError([job.id])
    _check_acyclic(by_id)
    return by_id


def _check_acyclic(by_id: dict[str, Job]) -> None:
    """Iterative DFS; on a back edge, report the cycle it closes."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(by_id, white)
    for root in by_id:
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        color[root] = grey
        path.append(root)
        while stack:
            node, i = stack[-1]
            deps = by_id[node].depends_on
            if i < len(deps):
                stack[-1] = (node, i + 1)
                dep = deps[i]
                if color[dep] == grey:
                    cycle = path[path.index(dep) :]
                    # path runs dependent -> dependency; report it in execution order.
                    raise DependencyCycleError(list(reversed(cycle)))
                if color[dep] == white:
                    color[dep] = grey
                    path.append(dep)
                    stack.append((dep, 0))
            else:
                color[node] = black
                path.pop()
                stack.pop()


def _durations(jobs: Sequence[Job]) -> tuple[dict[str, float], bool]:
    """Durations to plan with; unknown ones count as the median of known ones (or 1)."""
    known = sorted(j.duration_s for j in jobs if j.duration_s is not None)
    if not known:
        return {j.id: 1.0 for j in jobs}, False
    fill = known[len(known) // 2]
    return {j.id: (j.duration_s if j.duration_s is not None else fill) for j in jobs}, True


def _topological_order(by_id: dict[str, Job]) -> list[str]:
    indegree = {jid: len(job.depends_on) for jid, job in by_id.items()}
    dependents: dict[str, list[str]] = {jid: [] for jid in by_id}
    for jid, job in by_id.items():
        for dep in job.depends_on:
            dependents[dep].append(jid)
    ready = [jid for jid, n in indegree.items() if n == 0]
    order: list[str] = []
    while ready:
        jid = ready.pop()
        order.append(jid)
        for child in dependents[jid]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    return order


def _bottom_levels(by_id: dict[str, Job], dur: dict[str, float], topo: list[str]) -> dict[str, float]:
    """Longest path from each job to the end, including the job itself."""
    dependents: dict[str, list[str]] = {jid: [] for jid in by_id}
    for jid, job in by_id.items():
        for dep in job.depends_on:
            dependents[dep].append(jid)
    bottom: dict[str, float] = {}
    for jid in reversed(topo):
        bottom[jid] = dur[jid] + max((bottom[c] for c in dependents[jid]), default=0.0)
    return bottom


def lower_bound(by_id: dict[str, Job], dur: dict[str, float], width: int) -> float:
    """max(critical path, total work / width, longest job): no schedule can beat it."""
    topo = _topological_order(by_id)
    critical = max(_bottom_levels(by_id, dur, topo).values(), default=0.0)
    total = sum(dur.values())
    return max(critical, total / width)


def plan_schedule(jobs: Sequence[Job], width: int, mode: Literal["waves", "stream"]) -> Schedule:
    """Plan `jobs` on at most `width` concurrent slots.

    Raises:
        DuplicateTaskError, UnknownDependencyError, DependencyCycleError, ValueError (width < 1).
    """
    if width < 1:
        raise ValueError("width must be at least 1")
    by_id = validate_jobs(jobs)
    if not by_id:
        return Schedule([], [], [], 0.0, 0.0)
    dur, known = _durations(jobs)
    topo = _topological_order(by_id)
    bottom = _bottom_levels(by_id, dur, topo)
    batches = _plan_waves(by_id, dur, bottom, topo, width)
    position = {jid: i for i, jid in enumerate(topo)}
    dispatch = sorted(by_id, key=lambda j: (-bottom[j], position[j]))
    if mode == "waves":
        dispatch = [jid for batch in batches for jid in batch]
        makespan = sum(max(dur[j] for j in batch) for batch in batches)
    else:
        makespan = simulate_stream(by_id, dur, dispatch, width)
    bound = lower_bound(by_id, dur, width)
    estimates: list[float | None] = [
        max(dur[j] for j in batch) if known else None for batch in batches
    ]
    return Schedule(
        batches=batches,
        batch_estimates=estimates,
        dispatch_order=dispatch,
        estimated_makespan_s=makespan if known else None,
        lower_bound_s=bound if known else None,
    )


def _plan_waves(
    by_id: dict[str, Job],
    dur: dict[str, float],
    bottom: dict[str, float],
    topo: list[str],
    width: int,
) -> list[list[str]]:
    """Dependency levels, each sorted longest-first and cut into balanced chunks."""
    level: dict[str, int] = {}
    for jid in topo:
        level[jid] = max((level[d] + 1 for d in by_id[jid].depends_on), default=0)
    levels: dict[int, list[str]] = {}
    for jid in topo:
        levels.setdefault(level[jid], []).append(jid)
    batches: list[list[str]] = []
    for lvl in sorted(levels):
        members = sorted(levels[lvl], key=lambda j: (-dur[j], -bottom[j], j))
        chunks = math.ceil(len(members) / width)
        base, extra = divmod(len(members), chunks)
        start = 0
        for i in range(chunks):
            size = base + (1 if i < extra else 0)
            batches.append(members[start : start + size])
            start += size
    return batches


def simulate_stream(
    by_id: dict[str, Job], dur: dict[str, float], order: Sequence[str], width: int
) -> float:
    """Makespan of list scheduling: whenever a slot is free, start the first ready job in `order`."""
    rank = {jid: i for i, jid in enumerate(order)}
    remaining = {jid: len(job.depends_on) for jid, job in by_id.items()}
    dependents: dict[str, list[str]] = {jid: [] for jid in by_id}
    for jid, job in by_id.items():
        for dep in job.depends_on:
            dependents[dep].append(jid)
    ready = [(rank[j], j) for j, n in remaining.items() if n == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < width:
            _, jid = heapq.heappop(ready)
            heapq.heappush(running, (now + dur[jid], jid))
        now, finished = heapq.heappop(running)
        for child in dependents[finished]:
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(ready, (rank[child], child))
    return now
