"""Stream mode: list scheduling (launch the first ready task in an order when a slot frees)
and the critical-path-first order it is usually given."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from parallel_dispatch.graph import Graph, Job, build_graph


def simulate_stream(
    by_id: dict[str, Job], dur: dict[str, float], order: Sequence[str], width: int
) -> float:
    """Makespan of list scheduling: when a slot is free, start the first ready job in `order`.

    Raises:
        DependencyCycleError: `by_id` was not validated and has a cycle.
    """
    g = build_graph(list(by_id.values()), dur)
    index = {jid: i for i, jid in enumerate(g.ids)}
    return stream_makespan(g, [index[j] for j in order], width)


def stream_makespan(g: Graph, order: Sequence[int], width: int) -> float:
    """`simulate_stream` on a `Graph` and an order of its indices."""
    rank = [0] * len(g.dur)
    for i, v in enumerate(order):
        rank[v] = i
    remaining = [len(ps) for ps in g.preds]
    ready = [(rank[v], v) for v, r in enumerate(remaining) if r == 0]
    heapq.heapify(ready)
    pop, push = heapq.heappop, heapq.heappush
    running: list[tuple[float, int]] = []
    now = 0.0
    dur, succs = g.dur, g.succs
    while ready or running:
        while ready and len(running) < width:
            v = pop(ready)[1]
            push(running, (now + dur[v], v))
        now, finished = pop(running)
        for s in succs[finished]:
            remaining[s] -= 1
            if remaining[s] == 0:
                push(ready, (rank[s], s))
    return now


def critical_path_order(g: Graph) -> list[int]:
    """Longest remaining chain first, then longest task, then the topological position."""
    # Two stable sorts of the topological order (reverse=True keeps ties in place) give the
    # same order as one sort on (-bottom, -duration, position) without a key tuple per task.
    order = sorted(g.topo, key=g.dur.__getitem__, reverse=True)
    order.sort(key=g.bottom.__getitem__, reverse=True)
    return order
