"""Jobs as a validated, integer-indexed dependency graph: the planner's input form.

Validation (unique ids, known dependencies, no cycle) and indexing are one pass, so planning
a large job walks its edges only a few times.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass
class Graph:
    """Jobs as integer-indexed arrays (input order), which keeps the hot loops cheap."""

    ids: list[str]
    dur: list[float]
    preds: list[list[int]]
    succs: list[list[int]]
    topo: list[int]
    bottom: list[float]
    edges: int


def validate_jobs(jobs: Sequence[Job]) -> dict[str, Job]:
    """Index jobs by id, checking ids are unique, dependencies known and acyclic.

    Raises:
        DuplicateTaskError, UnknownDependencyError, DependencyCycleError.
    """
    _index(jobs)
    return {job.id: job for job in jobs}


def build_graph(jobs: Sequence[Job], dur: dict[str, float]) -> Graph:
    """Index jobs; `topo` is the topological order closest to the input order.

    Raises:
        DuplicateTaskError, UnknownDependencyError, DependencyCycleError.
    """
    return graph_of(jobs, [dur[job.id] for job in jobs])


def graph_of(jobs: Sequence[Job], durations: list[float]) -> Graph:
    """Validate and index `jobs` in one pass; `durations[i]` is the i-th job's.

    Raises:
        DuplicateTaskError, UnknownDependencyError, DependencyCycleError.
    """
    preds, succs, topo, edges = _index(jobs)
    return Graph(
        ids=[job.id for job in jobs],
        dur=durations,
        preds=preds,
        succs=succs,
        topo=topo,
        bottom=chain_to_end(durations, succs, topo),
        edges=edges,
    )


def planning_durations(jobs: Sequence[Job]) -> tuple[list[float], bool]:
    """Durations to plan with; unknown ones count as the median of known ones (or 1)."""
    known = sorted(j.duration_s for j in jobs if j.duration_s is not None)
    if not known:
        return [1.0] * len(jobs), False
    fill = known[len(known) // 2]
    return [j.duration_s if j.duration_s is not None else fill for j in jobs], True


def chain_to_end(weight: Sequence[float], succs: list[list[int]], topo: list[int]) -> list[float]:
    """Heaviest chain from each task to the end, the task's own weight included."""
    level = list(weight)
    for v in reversed(topo):
        longest = 0.0
        for s in succs[v]:
            if level[s] > longest:
                longest = level[s]
        level[v] += longest
    return level


def levels_from_start(g: Graph) -> list[int]:
    """Dependency level of each task: 0 without dependencies, else 1 + its deepest one's."""
    level = [0] * len(g.dur)
    preds = g.preds
    for v in g.topo:
        deepest = -1
        for p in preds[v]:
            if level[p] > deepest:
                deepest = level[p]
        level[v] = deepest + 1
    return level


def _index(jobs: Sequence[Job]) -> tuple[list[list[int]], list[list[int]], list[int], int]:
    """Predecessors, successors, topological order (input order where free) and edge count."""
    index = {job.id: i for i, job in enumerate(jobs)}
    if len(index) != len(jobs):
        seen: set[str] = set()
        duplicates: set[str] = set()
        for job in jobs:
            (duplicates if job.id in seen else seen).add(job.id)
        raise DuplicateTaskError(sorted(duplicates))
    preds: list[list[int]] = []
    succs: list[list[int]] = [[] for _ in jobs]
    ordered = True
    edges = 0
    for v, job in enumerate(jobs):
        ps: list[int] = []
        for dep in job.depends_on:
            p = index.get(dep)
            if p is None:
                raise UnknownDependencyError(job.id, dep)
            if p == v:
                raise DependencyCycleError([job.id])
            ps.append(p)
        if len(ps) > 1:
            ps = sorted(set(ps))
        for p in ps:
            succs[p].append(v)
            if p > v:
                ordered = False
        edges += len(ps)
        preds.append(ps)
    if ordered:
        return preds, succs, list(range(len(jobs))), edges
    remaining = [len(ps) for ps in preds]
    ready = [v for v, r in enumerate(remaining) if r == 0]
    topo: list[int] = []
    pop, push = heapq.heappop, heapq.heappush
    while ready:
        v = pop(ready)
        topo.append(v)
        for s in succs[v]:
            remaining[s] -= 1
            if remaining[s] == 0:
                push(ready, s)
    if len(topo) < len(jobs):
        _raise_cycle({job.id: job for job in jobs})
    return preds, succs, topo, edges


def _raise_cycle(by_id: dict[str, Job]) -> None:
    """Iterative DFS; on a back edge, report the cycle it closes.

    Raises:
        DependencyCycleError: always (only called once a cycle is known to exist).
    """
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(by_id, white)
    for root in by_id:
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        color[root] = grey
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
    raise AssertionError("a cycle was detected but not found")  # pragma: no cover
