"""Lower bounds on the makespan: what no plan can beat, in stream and in waves mode."""

from __future__ import annotations

import heapq
import math

from parallel_dispatch.graph import Graph, Job, build_graph

#: Work allowed for the chain part of the waves bound, in node-and-edge visits: each threshold
#: costs two passes over the graph, so larger graphs get fewer thresholds.
WAVES_BOUND_WORK = 8_000


def stream_lower_bound(g: Graph, width: int) -> float:
    """max(critical path, total work / width, and two of the width+1 longest share a slot)."""
    if not g.dur:
        return 0.0
    critical = max(g.bottom)
    bound = max(critical, sum(g.dur) / width)
    if len(g.dur) > width:
        top = heapq.nlargest(width + 1, g.dur)
        bound = max(bound, top[width - 1] + top[width])
    return bound


def lower_bound(by_id: dict[str, Job], dur: dict[str, float], width: int) -> float:
    """A bound no schedule in either mode can beat (see `stream_lower_bound`).

    Raises:
        DependencyCycleError: `by_id` was not validated and has a cycle.
    """
    return stream_lower_bound(build_graph(list(by_id.values()), dur), width)


def waves_lower_bound(g: Graph, width: int, max_thresholds: int | None = None) -> float:
    """A bound no waves plan can beat.

    Sort the waves by their cost, most expensive first: the i-th one costs at least x whenever
    the tasks of duration >= x cannot fit in i - 1 waves. So the total is at least the integral
    over x of need(x), the number of waves that must hold a task of duration >= x. need(x) is
    bounded below by Hu's bound on those tasks: for every k, the tasks followed by a chain of
    k - 1 others of duration >= x must sit outside the last k - 1 such waves. The count part
    is exact for every x; the chain part is computed on a few thresholds (need only grows as x
    falls, so a threshold's value holds for every x below it).
    """
    n = len(g.dur)
    if n == 0:
        return 0.0
    counts_desc = sorted(g.dur, reverse=True)
    values = [counts_desc[0]]
    for d in counts_desc:
        if d != values[-1]:
            values.append(d)
    if max_thresholds is None:
        max_thresholds = max(2, min(len(values), WAVES_BOUND_WORK // (n + g.edges + 1)))
    if len(values) <= max_thresholds:
        picked = list(range(len(values)))
    else:
        step = (len(values) - 1) / (max_thresholds - 1)
        picked = sorted({round(i * step) for i in range(max_thresholds)})
    chain_need = {vi: _hu_need(g, values[vi], width) for vi in picked}
    total = 0.0
    carried = 0
    at = 0
    for vi, x in enumerate(values):
        while at < n and counts_desc[at] >= x:
            at += 1
        carried = max(carried, chain_need.get(vi, 0))
        need = max(carried, -(-at // width))
        nxt = values[vi + 1] if vi + 1 < len(values) else 0.0
        total += (x - nxt) * need
    return total


def _hu_need(g: Graph, threshold: float, width: int) -> int:
    """Waves that must contain a task of duration >= threshold ("heavy" tasks).

    A heavy task with h heavy tasks on a chain from it to the end (itself included) and k on
    a chain from the start must sit after k - 1 and before h - 1 other heavy waves, so
    need >= (k - 1) + (h - 1) + ceil(#{tasks with at least h and k} / width) (Hu's bound, from
    both ends). The pairs grid is used when small; otherwise each end alone.
    """
    n = len(g.dur)
    heavy = [1 if d >= threshold else 0 for d in g.dur]
    height = heavy[:]
    depth = heavy[:]
    succs, preds, topo = g.succs, g.preds, g.topo
    for v in reversed(topo):
        h = 0
        for s in succs[v]:
            if height[s] > h:
                h = height[s]
        height[v] += h
    for v in topo:
        k = 0
        for p in preds[v]:
            if depth[p] > k:
                k = depth[p]
        depth[v] += k
    tall = max(height)
    if tall == 0:
        return 0
    need = tall
    if tall * tall <= 4096:
        grid = [[0] * (tall + 2) for _ in range(tall + 2)]
        for v in range(n):
            if heavy[v]:
                grid[height[v]][depth[v]] += 1
        # Suffix sums: at_least[h][k] = heavy tasks with height >= h and depth >= k.
        # A task counted at (h, k) ends a heavy chain of h + k - 1 <= tall, so cells with
        # k > tall + 1 - h stay zero and are skipped.
        for h in range(tall, 0, -1):
            row, below = grid[h], grid[h + 1]
            for k in range(tall + 1 - h, 0, -1):
                row[k] += row[k + 1] + below[k] - below[k + 1]
                if row[k]:
                    need = max(need, h + k - 2 + math.ceil(row[k] / width))
        return need
    for levels in (height, depth):
        histogram: dict[int, int] = {}
        for v in range(n):
            if heavy[v]:
                histogram[levels[v]] = histogram.get(levels[v], 0) + 1
        at_least = 0
        for h in sorted(histogram, reverse=True):
            at_least += histogram[h]
            need = max(need, h - 1 + math.ceil(at_least / width))
    return need
