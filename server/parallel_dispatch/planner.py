"""Pure planning: jobs, a width and a mode in; a schedule out. No I/O, no clock.

Waves mode: batch i+1 starts when every task of batch i is done, so the makespan is the sum
of each batch's longest task. Stream mode: a task starts as soon as its dependencies are done
and a slot is free (list scheduling by `dispatch_order`).

How a waves plan is made:

- Independent tasks: sorted longest-first and cut into ceil(n / width) blocks. That is optimal
  (the i-th most expensive batch can never be cheaper than the (i*width)-th longest task), and
  among the optimal cuts the one with the lowest peak and the most even sizes is chosen.
- Dependencies: several candidate plans are built and the cheapest kept — a critical-path
  greedy that, wave by wave, picks which ready tasks to run together (scoring each choice by
  its cost plus a lower bound on what remains when the job is small enough), the
  dependency-level plan, and the two naive baselines (input-order chunks, level chunks), so a
  plan is never worse than either. A local pass then moves the longest task of a wave into
  another wave where it costs less, and evens out batch sizes at no cost.
- The lower bound for waves integrates, over every duration threshold x, the number of waves
  that must contain a task of at least x (Hu's bound over those tasks); it is at least the
  longest weighted chain and at least the no-dependency optimum.

The pieces live in `graph` (validation, indexing), `bounds`, `waves` (constructions),
`wave_refinement` (re-cut, local search) and `stream`; this module chooses among them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from parallel_dispatch.bounds import lower_bound, stream_lower_bound, waves_lower_bound
from parallel_dispatch.graph import (
    Graph,
    Job,
    build_graph,
    graph_of,
    planning_durations,
    validate_jobs,
)
from parallel_dispatch.stream import critical_path_order, simulate_stream, stream_makespan
from parallel_dispatch.wave_refinement import even_out, improve_waves, resegment
from parallel_dispatch.waves import (
    baseline_input_chunks,
    baseline_level_chunks,
    bottom_levels,
    cut_longest_first,
    greedy_waves,
    level_waves,
    waves_cost,
)

__all__ = [
    "FULL_SEARCH_MAX_WORK",
    "LOOKAHEAD_MAX_TASKS",
    "Graph",
    "Job",
    "Schedule",
    "baseline_input_chunks",
    "baseline_level_chunks",
    "build_graph",
    "critical_path_order",
    "lower_bound",
    "plan_schedule",
    "plan_waves",
    "simulate_stream",
    "stream_lower_bound",
    "stream_makespan",
    "validate_jobs",
    "waves_cost",
    "waves_lower_bound",
]

#: Above this many tasks the waves greedy drops its O(n) per-choice lookahead to stay fast.
LOOKAHEAD_MAX_TASKS = 200
#: Above this many tasks times the width, the search skips the two steps that almost never
#: pay on large jobs (the duration-weighted greedy and the re-cut: under 0.01% of makespan on
#: the benchmark's DAGs of 200-2,000 tasks) and keeps the cheaper ones.
FULL_SEARCH_MAX_WORK = 5_000
#: Up to this many tasks, stream mode also simulates the waves order and the input order.
_STREAM_ALTERNATIVES_MAX_TASKS = 2_000
_EPS = 1e-9


@dataclass(frozen=True)
class Schedule:
    """The planner's answer; `batches` and `dispatch_order` name every job exactly once."""

    batches: list[list[str]]
    batch_estimates: list[float | None]
    dispatch_order: list[str]
    estimated_makespan_s: float | None
    lower_bound_s: float | None
    notes: list[str] = field(default_factory=list)


def plan_waves(g: Graph, width: int, thorough: bool = True) -> tuple[list[list[int]], str]:
    """The cheapest waves plan found, and which construction produced it.

    `thorough` tries more constructions on jobs of up to LOOKAHEAD_MAX_TASKS tasks; the work
    bound FULL_SEARCH_MAX_WORK trims the search on large jobs. Deterministic: no clock.
    """
    n = len(g.dur)
    if g.edges == 0:
        order = sorted(range(n), key=g.dur.__getitem__, reverse=True)  # stable: ties by index
        return cut_longest_first(order, g.dur, width), "longest-first blocks (optimal)"
    small = thorough and n <= LOOKAHEAD_MAX_TASKS
    full = small or n * width <= FULL_SEARCH_MAX_WORK
    candidates: list[tuple[str, list[list[int]]]] = [
        ("dependency levels", level_waves(g, width)),
        ("input-order chunks", baseline_input_chunks(g, width)),
    ]
    exponents = (1.0, 0.5, 0.0) if small else (1.0, 0.0) if full else (0.0,)
    for exponent in exponents:
        priority = g.bottom if exponent == 1.0 else bottom_levels(g, exponent)
        name = f"critical-path greedy (chain weight duration^{exponent:g})"
        candidates.append((name, greedy_waves(g, width, priority, lookahead=False)))
        if small and exponent != 0.5:
            candidates.append((name + " with lookahead", greedy_waves(g, width, priority, True)))
    scored = [(waves_cost(w, g.dur), i, name, w) for i, (name, w) in enumerate(candidates)]
    scored.sort(key=lambda item: (item[0], item[1]))
    scored = scored[: len(scored) if small else 1]
    for i, (_, index, name, waves) in enumerate(scored if full else []):
        recut = resegment(waves, g, width)
        scored[i] = (waves_cost(recut, g.dur), index, name, recut)
    scored.sort(key=lambda item: (item[0], item[1]))
    budget = max((20 if small else 8) * n, 2_000)
    best_cost, best_name, best = math.inf, "", scored[0][3]
    for cost, _, name, waves in scored[: 4 if small else 1]:
        improved = improve_waves(waves, g, width, budget)
        improved_cost = waves_cost(improved, g.dur)
        if small and improved_cost < cost - _EPS:
            recut = resegment(improved, g, width)
            improved, improved_cost = recut, waves_cost(recut, g.dur)
        if min(cost, improved_cost) < best_cost - _EPS:
            best_cost, best_name = min(cost, improved_cost), name
            best = improved if improved_cost < cost - _EPS else waves
    return even_out(best, g, width), best_name


def plan_schedule(jobs: Sequence[Job], width: int, mode: Literal["waves", "stream"]) -> Schedule:
    """Plan `jobs` on at most `width` concurrent slots.

    Raises:
        DuplicateTaskError, UnknownDependencyError, DependencyCycleError, ValueError (width < 1).
    """
    if width < 1:
        raise ValueError("width must be at least 1")
    durations, known = planning_durations(jobs)
    g = graph_of(jobs, durations)
    if not jobs:
        return Schedule([], [], [], 0.0, 0.0)
    # In stream mode the batches are only a fallback plan: build them with less effort.
    waves, how = plan_waves(g, width, thorough=mode == "waves")
    notes = [f"waves built by {how}"] if known and g.edges else []
    waves_makespan = waves_cost(waves, g.dur)
    if mode == "waves":
        dispatch = [v for wave in waves for v in wave]
        makespan = waves_makespan
        bound = max(waves_lower_bound(g, width), stream_lower_bound(g, width))
    else:
        orders = [critical_path_order(g)]
        if len(jobs) <= _STREAM_ALTERNATIVES_MAX_TASKS:
            orders += [[v for wave in waves for v in wave], g.topo]
        timed = [(stream_makespan(g, order, width), i) for i, order in enumerate(orders)]
        makespan, pick = min(timed)
        dispatch = orders[pick]
        bound = stream_lower_bound(g, width)
    # Both are sums of the same floats in another order; keep bound <= makespan exactly.
    bound = min(bound, makespan)
    ids, dur = g.ids, g.dur
    return Schedule(
        batches=[[ids[v] for v in wave] for wave in waves],
        batch_estimates=[max([dur[v] for v in wave]) if known else None for wave in waves],
        dispatch_order=[ids[v] for v in dispatch],
        estimated_makespan_s=makespan if known else None,
        lower_bound_s=bound if known else None,
        notes=notes,
    )
