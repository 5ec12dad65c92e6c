"""Waves plans built from scratch: optimal cuts of independent tasks, dependency levels, the
naive baselines, and the critical-path greedy (with an optional lookahead).

A plan is a list of waves, each a list of task indices of a `Graph`.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Sequence

from parallel_dispatch.graph import Graph, chain_to_end, levels_from_start

#: How many ready tasks (in priority order, times the width) the greedy considers per wave.
_POOL_FACTOR = 3
#: How many wave durations (the top tasks' own) the lookahead compares.
_LOOKAHEAD_CAPS = 8


def waves_cost(waves: Sequence[Sequence[int]], dur: Sequence[float]) -> float:
    """Makespan of a waves plan: the sum of each wave's longest task."""
    return sum(max([dur[v] for v in wave]) for wave in waves if wave)


def cut_longest_first(order: Sequence[int], dur: Sequence[float], width: int) -> list[list[int]]:
    """Optimal waves for independent tasks; `order` must be sorted longest-first.

    Block i may start anywhere its first task is as long as the (i*width)-th task (so the cost
    stays optimal); among those cuts take the lowest peak, then sizes as even as possible.
    """
    n = len(order)
    if n == 0:
        return []
    k = -(-n // width)
    if k == 1:
        return [list(order)]
    d = [dur[v] for v in order]
    upper = [i * width for i in range(k)]
    lower = []
    for u in upper:
        j = u
        while j > 0 and d[j - 1] == d[u]:
            j -= 1
        lower.append(j)
    base, extra = divmod(n, k)
    for peak in range(-(-n // k), width + 1):
        bounds = _block_start_ranges(lower, upper, n, peak)
        if bounds is not None:
            break
    else:  # pragma: no cover - peak == width is always feasible (the plain blocks)
        raise AssertionError("no feasible cut")
    starts = [0]
    for i in range(1, k):
        target = i * base + min(i, extra)
        lo = max(bounds[i][0], starts[-1] + 1)
        hi = min(bounds[i][1], starts[-1] + peak)
        starts.append(min(max(target, lo), hi))
    starts.append(n)
    return [list(order[starts[i] : starts[i + 1]]) for i in range(k)]


def _block_start_ranges(
    lower: list[int], upper: list[int], n: int, peak: int
) -> list[tuple[int, int]] | None:
    """Where each block may start so that every block holds 1..peak tasks; None if nowhere."""
    k = len(upper)
    ranges: list[tuple[int, int]] = [(0, 0)] * k
    lo, hi = max(lower[-1], n - peak), min(upper[-1], n - 1)
    for i in range(k - 1, -1, -1):
        if i < k - 1:
            lo, hi = max(lower[i], ranges[i + 1][0] - peak), min(upper[i], ranges[i + 1][1] - 1)
        if lo > hi:
            return None
        ranges[i] = (lo, hi)
    return ranges if ranges[0][0] == 0 else None


def _by_level(g: Graph) -> list[list[int]]:
    """Tasks of each dependency level, in input order."""
    level = levels_from_start(g)
    groups: list[list[int]] = [[] for _ in range(max(level, default=-1) + 1)]
    for v, lvl in enumerate(level):
        groups[lvl].append(v)
    return groups


def level_waves(g: Graph, width: int) -> list[list[int]]:
    """Dependency levels, each cut optimally as independent tasks."""
    dur, bottom = g.dur, g.bottom
    waves: list[list[int]] = []
    for members in _by_level(g):
        # Input order, then by bottom level, then by duration: stable sorts, longest first.
        members.sort(key=bottom.__getitem__, reverse=True)
        members.sort(key=dur.__getitem__, reverse=True)
        waves.extend(cut_longest_first(members, dur, width))
    return waves


def baseline_level_chunks(g: Graph, width: int) -> list[list[int]]:
    """Naive baseline: dependency levels, each in input order, in chunks of `width`."""
    return [
        members[i : i + width] for members in _by_level(g) for i in range(0, len(members), width)
    ]


def baseline_input_chunks(g: Graph, width: int) -> list[list[int]]:
    """Naive baseline: input order, chunks of `width`, closed early when a task needs the chunk.

    The input order is first made topological (the closest such order), so the plan is valid.
    """
    waves: list[list[int]] = []
    chunk_of = [-1] * len(g.dur)
    preds = g.preds
    chunk: list[int] = []
    for v in g.topo:
        current = len(waves)
        if len(chunk) == width or any(chunk_of[p] == current for p in preds[v]):
            waves.append(chunk)
            chunk = []
            current += 1
        chunk.append(v)
        chunk_of[v] = current
    if chunk:
        waves.append(chunk)
    return waves


def bottom_levels(g: Graph, exponent: float) -> list[float]:
    """Longest chain to the end weighing each task by duration**exponent (0: count waves)."""
    weight = [1.0] * len(g.dur) if exponent == 0.0 else [d**exponent for d in g.dur]
    return chain_to_end(weight, g.succs, g.topo)


def greedy_waves(
    g: Graph, width: int, priority: Sequence[float], lookahead: bool
) -> list[list[int]]:
    """Build waves one at a time from the ready tasks, highest `priority` first.

    Each wave is "every ready task no longer than D, highest priority first, up to width" for
    some D among the ready durations. Without lookahead D is the top task's duration; with
    it, each D is scored by its cost plus a lower bound on the rest (the remaining critical
    path and the remaining no-dependency optimum), which groups tasks of similar duration and
    leaves long ones for waves that other long ones will share.
    """
    dur, succs = g.dur, g.succs
    pop, push = heapq.heappop, heapq.heappush
    remaining = [len(ps) for ps in g.preds]
    heap = [(-priority[v], -dur[v], v) for v, r in enumerate(remaining) if r == 0]
    heapq.heapify(heap)
    pool = sorted([-d for d in dur]) if lookahead else []
    waves: list[list[int]] = []
    limit = _POOL_FACTOR * width
    while heap:
        if lookahead:
            cand = [pop(heap) for _ in range(min(len(heap), limit))]
            nodes = [c[2] for c in cand]
            chosen = _best_wave(nodes, heap, pool, g, width) if len(nodes) > 1 else nodes
            taken = set(chosen)
            for c in cand:
                if c[2] not in taken:
                    push(heap, c)
            for v in chosen:
                pool.pop(bisect.bisect_left(pool, -dur[v]))
        else:
            # The first `width` of the top `limit` ready tasks no longer than the top one.
            top = pop(heap)
            neg_cap = top[1]
            chosen = [top[2]]
            rejected = []
            popped = 1
            while heap and popped < limit and len(chosen) < width:
                c = pop(heap)
                popped += 1
                if c[1] >= neg_cap:
                    chosen.append(c[2])
                else:
                    rejected.append(c)
            for c in rejected:
                push(heap, c)
        waves.append(chosen)
        for v in chosen:
            for s in succs[v]:
                remaining[s] -= 1
                if remaining[s] == 0:
                    push(heap, (-priority[s], -dur[s], s))
    return waves


def _best_wave(
    nodes: list[int],
    heap: list[tuple[float, float, int]],
    pool: list[float],
    g: Graph,
    width: int,
) -> list[int]:
    dur, bottom = g.dur, g.bottom
    outside = -heap[0][0] if heap else 0.0
    durations = [dur[v] for v in nodes]
    bottoms = [bottom[v] for v in nodes]
    caps: list[float] = []
    for d in durations:
        if d not in caps:
            caps.append(d)
            if len(caps) == _LOOKAHEAD_CAPS:
                break
    best: list[int] = []
    best_key = (math.inf, 0, 0.0)
    for cap in caps:
        chosen: list[int] = []
        removed: list[float] = []
        rest = outside
        for i, d in enumerate(durations):
            if d <= cap and len(chosen) < width:
                chosen.append(nodes[i])
                removed.append(d)
                tail = bottoms[i] - d
                if tail > rest:
                    rest = tail
            elif bottoms[i] > rest:
                rest = bottoms[i]
        rest = max(rest, _stride_sum_without(pool, removed, width))
        key = (cap + rest, -len(chosen), cap)
        if key < best_key:
            best_key, best = key, chosen
    return best


def _stride_sum_without(neg: list[float], removed: list[float], width: int) -> float:
    """No-dependency optimum of the durations `neg` (negated, ascending) minus `removed`.

    After removing the tasks at ranks r_1 < r_2 < ..., a task of old rank i in the k-th gap
    has new rank i - k, so each gap contributes one strided slice (summed in C).
    """
    ranks: list[int] = []
    previous_x, previous_rank = math.nan, -1
    for x in sorted(removed, reverse=True):
        rank = previous_rank + 1 if x == previous_x else bisect.bisect_left(neg, -x)
        ranks.append(rank)
        previous_x, previous_rank = x, rank
    total = 0.0
    start = 0
    for k, rank in enumerate([*ranks, len(neg)]):
        first = start + (k - start) % width
        total -= sum(neg[first:rank:width])
        start = rank + 1
    return total
