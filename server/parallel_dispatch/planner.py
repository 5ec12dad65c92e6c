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
"""

from __future__ import annotations

import bisect
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

#: Above this many tasks the waves greedy drops its O(n) per-choice lookahead to stay fast.
LOOKAHEAD_MAX_TASKS = 200
#: How many ready tasks (in priority order, times the width) the greedy considers per wave.
_POOL_FACTOR = 3
#: How many wave durations (the top tasks' own) the lookahead compares.
_LOOKAHEAD_CAPS = 8
#: Up to this many tasks, stream mode also simulates the waves order and the input order.
_STREAM_ALTERNATIVES_MAX_TASKS = 2_000
_EPS = 1e-9


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


def build_graph(jobs: Sequence[Job], dur: dict[str, float]) -> Graph:
    """Index validated jobs; `topo` is the topological order closest to the input order."""
    index = {job.id: i for i, job in enumerate(jobs)}
    preds = [sorted({index[d] for d in job.depends_on}) for job in jobs]
    succs: list[list[int]] = [[] for _ in jobs]
    for v, ps in enumerate(preds):
        for p in ps:
            succs[p].append(v)
    remaining = [len(ps) for ps in preds]
    ready = [v for v, r in enumerate(remaining) if r == 0]
    heapq.heapify(ready)
    topo: list[int] = []
    while ready:
        v = heapq.heappop(ready)
        topo.append(v)
        for s in succs[v]:
            remaining[s] -= 1
            if remaining[s] == 0:
                heapq.heappush(ready, s)
    durations = [dur[job.id] for job in jobs]
    bottom = [0.0] * len(jobs)
    for v in reversed(topo):
        bottom[v] = durations[v] + max((bottom[s] for s in succs[v]), default=0.0)
    return Graph(
        ids=[job.id for job in jobs],
        dur=durations,
        preds=preds,
        succs=succs,
        topo=topo,
        bottom=bottom,
        edges=sum(len(ps) for ps in preds),
    )


def _durations(jobs: Sequence[Job]) -> tuple[dict[str, float], bool]:
    """Durations to plan with; unknown ones count as the median of known ones (or 1)."""
    known = sorted(j.duration_s for j in jobs if j.duration_s is not None)
    if not known:
        return {j.id: 1.0 for j in jobs}, False
    fill = known[len(known) // 2]
    return {j.id: (j.duration_s if j.duration_s is not None else fill) for j in jobs}, True


# --------------------------------------------------------------------------- lower bounds


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
    """A bound no schedule in either mode can beat (see `stream_lower_bound`)."""
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
    values = sorted(set(g.dur), reverse=True)
    if max_thresholds is None:
        # Each threshold costs two passes over nodes and edges; keep the total bounded.
        max_thresholds = max(2, min(len(values), 8_000 // (n + g.edges + 1)))
    if len(values) <= max_thresholds:
        picked = list(range(len(values)))
    else:
        step = (len(values) - 1) / (max_thresholds - 1)
        picked = sorted({round(i * step) for i in range(max_thresholds)})
    chain_need: dict[int, int] = {}
    for vi in picked:
        chain_need[vi] = _hu_need(g, values[vi], width)
    counts_desc = sorted(g.dur, reverse=True)
    total = 0.0
    carried = 0
    at = 0
    for vi, x in enumerate(values):
        while at < n and counts_desc[at] >= x:
            at += 1
        carried = max(carried, chain_need.get(vi, 0))
        need = max(carried, math.ceil(at / width))
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
    height = [0] * n
    depth = [0] * n
    for v in reversed(g.topo):
        h = 0
        for s in g.succs[v]:
            if height[s] > h:
                h = height[s]
        height[v] = heavy[v] + h
    for v in g.topo:
        k = 0
        for p in g.preds[v]:
            if depth[p] > k:
                k = depth[p]
        depth[v] = heavy[v] + k
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
        for h in range(tall, 0, -1):
            row, below = grid[h], grid[h + 1]
            for k in range(tall, 0, -1):
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


# --------------------------------------------------------------------------- waves plans


def waves_cost(waves: Sequence[Sequence[int]], dur: Sequence[float]) -> float:
    """Makespan of a waves plan: the sum of each wave's longest task."""
    return sum(max(dur[v] for v in wave) for wave in waves if wave)


def cut_longest_first(order: Sequence[int], dur: Sequence[float], width: int) -> list[list[int]]:
    """Optimal waves for independent tasks; `order` must be sorted longest-first.

    Block i may start anywhere its first task is as long as the (i*width)-th task (so the cost
    stays optimal); among those cuts take the lowest peak, then sizes as even as possible.
    """
    n = len(order)
    if n == 0:
        return []
    k = math.ceil(n / width)
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
    for peak in range(math.ceil(n / k), width + 1):
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


def _levels(g: Graph) -> list[int]:
    level = [0] * len(g.dur)
    for v in g.topo:
        level[v] = max((level[p] + 1 for p in g.preds[v]), default=0)
    return level


def level_waves(g: Graph, width: int) -> list[list[int]]:
    """Dependency levels, each cut optimally as independent tasks."""
    by_level: dict[int, list[int]] = {}
    for v, lvl in enumerate(_levels(g)):
        by_level.setdefault(lvl, []).append(v)
    waves: list[list[int]] = []
    for lvl in sorted(by_level):
        members = sorted(by_level[lvl], key=lambda v: (-g.dur[v], -g.bottom[v], v))
        waves.extend(cut_longest_first(members, g.dur, width))
    return waves


def baseline_level_chunks(g: Graph, width: int) -> list[list[int]]:
    """Naive baseline: dependency levels, each in input order, in chunks of `width`."""
    by_level: dict[int, list[int]] = {}
    for v, lvl in enumerate(_levels(g)):
        by_level.setdefault(lvl, []).append(v)
    return [
        by_level[lvl][i : i + width]
        for lvl in sorted(by_level)
        for i in range(0, len(by_level[lvl]), width)
    ]


def baseline_input_chunks(g: Graph, width: int) -> list[list[int]]:
    """Naive baseline: input order, chunks of `width`, closed early when a task needs the chunk.

    The input order is first made topological (the closest such order), so the plan is valid.
    """
    waves: list[list[int]] = []
    current: set[int] = set()
    chunk: list[int] = []
    for v in g.topo:
        if len(chunk) == width or any(p in current for p in g.preds[v]):
            waves.append(chunk)
            chunk, current = [], set()
        chunk.append(v)
        current.add(v)
    if chunk:
        waves.append(chunk)
    return waves


def bottom_levels(g: Graph, exponent: float) -> list[float]:
    """Longest chain to the end weighing each task by duration**exponent (0: count waves)."""
    weight = [d**exponent for d in g.dur]
    level = [0.0] * len(g.dur)
    for v in reversed(g.topo):
        level[v] = weight[v] + max((level[s] for s in g.succs[v]), default=0.0)
    return level


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
    n = len(g.dur)
    dur, succs = g.dur, g.succs
    remaining = [len(ps) for ps in g.preds]
    heap = [(-priority[v], -dur[v], v) for v in range(n) if remaining[v] == 0]
    heapq.heapify(heap)
    pool = sorted(-d for d in dur) if lookahead else []
    waves: list[list[int]] = []
    limit = _POOL_FACTOR * width
    while heap:
        cand = [heapq.heappop(heap) for _ in range(min(len(heap), limit))]
        nodes = [c[2] for c in cand]
        if lookahead and len(nodes) > 1:
            chosen = _best_wave(nodes, heap, pool, g, width)
        else:
            cap = dur[nodes[0]]
            chosen = [v for v in nodes if dur[v] <= cap][:width]
        taken = set(chosen)
        for c in cand:
            if c[2] not in taken:
                heapq.heappush(heap, c)
        if lookahead:
            for v in chosen:
                pool.pop(bisect.bisect_left(pool, -dur[v]))
        waves.append(chosen)
        for v in chosen:
            for s in succs[v]:
                remaining[s] -= 1
                if remaining[s] == 0:
                    heapq.heappush(heap, (-priority[s], -dur[s], s))
    return waves


def resegment(waves: Sequence[Sequence[int]], g: Graph, width: int) -> list[list[int]]:
    """Re-cut the plan's task sequence (each wave longest-first) into the best waves.

    Dynamic programming over cut points: a segment is a valid wave when it holds at most
    `width` tasks and none depends on another in it. The old waves are one such cut, so the
    result is never worse. O(n * width).
    """
    seq = [v for wave in waves for v in sorted(wave, key=lambda u: -g.dur[u])]
    n = len(seq)
    pos = [0] * n
    for i, v in enumerate(seq):
        pos[v] = i
    first_dependent = [min((pos[s] for s in g.succs[v]), default=n) for v in seq]
    dur = [g.dur[v] for v in seq]
    cost = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for i in range(1, n + 1):
        longest = 0.0
        reach = n
        for j in range(i - 1, max(-1, i - 1 - width), -1):
            reach = min(reach, first_dependent[j])
            if reach < i:
                break
            longest = max(longest, dur[j])
            if cost[j] + longest < cost[i]:
                cost[i] = cost[j] + longest
                cut[i] = j
    out: list[list[int]] = []
    i = n
    while i > 0:
        out.append(seq[cut[i] : i])
        i = cut[i]
    out.reverse()
    return out


def _best_wave(
    nodes: list[int],
    heap: list[tuple[float, float, int]],
    pool: list[float],
    g: Graph,
    width: int,
) -> list[int]:
    dur, bottom = g.dur, g.bottom
    outside = -heap[0][0] if heap else 0.0
    caps: list[float] = []
    for v in nodes:
        if dur[v] not in caps:
            caps.append(dur[v])
            if len(caps) == _LOOKAHEAD_CAPS:
                break
    best: list[int] = []
    best_key = (math.inf, 0, 0.0)
    for cap in caps:
        chosen = [v for v in nodes if dur[v] <= cap][:width]
        taken = set(chosen)
        rest = outside
        for v in nodes:
            if v in taken:
                rest = max(rest, bottom[v] - dur[v])
            elif bottom[v] > rest:
                rest = bottom[v]
        rest = max(rest, _stride_sum_without(pool, [dur[v] for v in chosen], width))
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


class _Layout:
    """A waves plan being edited: members of each wave, where each task is, wave maxima."""

    def __init__(self, waves: Sequence[Sequence[int]], g: Graph) -> None:
        self.g = g
        self.members = [list(w) for w in waves]
        self.where = [0] * len(g.dur)
        for i, wave in enumerate(self.members):
            for v in wave:
                self.where[v] = i
        self.top = [max((g.dur[v] for v in wave), default=0.0) for wave in self.members]

    def window(self, v: int) -> tuple[int, int]:
        """The waves `v` may move to without breaking a dependency."""
        where = self.where
        lo = max((where[p] + 1 for p in self.g.preds[v]), default=0)
        hi = min((where[s] - 1 for s in self.g.succs[v]), default=len(self.members) - 1)
        return lo, hi

    def move(self, v: int, target: int) -> None:
        source = self.where[v]
        self.members[source].remove(v)
        self.members[target].append(v)
        self.where[v] = target
        self.top[target] = max(self.top[target], self.g.dur[v])
        self.top[source] = max((self.g.dur[u] for u in self.members[source]), default=0.0)

    def waves(self) -> list[list[int]]:
        return [wave for wave in self.members if wave]


def improve_waves(
    waves: Sequence[Sequence[int]], g: Graph, width: int, budget: int
) -> list[list[int]]:
    """Local search: move the longest tasks of a wave to where they cost less.

    A move keeps every dependency in an earlier wave and no wave over `width`; `budget`
    bounds the waves examined so large plans stay fast.
    """
    layout = _Layout(waves, g)
    members, top, dur = layout.members, layout.top, g.dur
    improved = True
    while improved and budget > 0:
        improved = False
        for a in range(len(members)):
            if not members[a]:
                continue
            peak = top[a]
            heads = [v for v in members[a] if dur[v] >= peak]
            gain = peak - max((dur[v] for v in members[a] if dur[v] < peak), default=0.0)
            budget -= len(members[a])
            moves: list[tuple[int, int]] = []
            extra = 0.0
            added: dict[int, int] = {}
            raised: dict[int, float] = {}
            for v in heads:
                lo, hi = layout.window(v)
                budget -= hi - lo + 1
                best_c, best_inc = -1, math.inf
                for c in range(lo, hi + 1):
                    if c == a or len(members[c]) + added.get(c, 0) >= width:
                        continue
                    inc = max(0.0, dur[v] - raised.get(c, top[c]))
                    if inc < best_inc:
                        best_c, best_inc = c, inc
                if best_c < 0:
                    break
                moves.append((v, best_c))
                extra += best_inc
                added[best_c] = added.get(best_c, 0) + 1
                raised[best_c] = max(raised.get(best_c, top[best_c]), dur[v])
            else:
                if gain - extra > _EPS:
                    for v, c in moves:
                        layout.move(v, c)
                    improved = True
            if budget <= 0:
                break
    return layout.waves()


def even_out(waves: Sequence[Sequence[int]], g: Graph, width: int) -> list[list[int]]:
    """Lower the peak at no cost: move tasks from crowded waves to emptier ones.

    A task moves only into a wave whose longest task is at least as long, and only where its
    dependencies allow, so the makespan never grows.
    """
    layout = _Layout(waves, g)
    members, dur = layout.members, g.dur
    if not members:
        return []
    target = math.ceil(len(dur) / len(members))
    budget = 20 * len(dur) + 1_000
    for a in range(len(members)):
        for v in sorted(members[a], key=lambda u: dur[u]):
            if len(members[a]) <= target or budget <= 0:
                break
            lo, hi = layout.window(v)
            budget -= hi - lo + 1
            for c in range(lo, hi + 1):
                if len(members[c]) < min(width, len(members[a]) - 1) and layout.top[c] >= dur[v]:
                    layout.move(v, c)
                    break
    return layout.waves()


# --------------------------------------------------------------------------- stream


def simulate_stream(
    by_id: dict[str, Job], dur: dict[str, float], order: Sequence[str], width: int
) -> float:
    """Makespan of list scheduling: when a slot is free, start the first ready job in `order`."""
    jobs = list(by_id.values())
    g = build_graph(jobs, dur)
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
    running: list[tuple[float, int]] = []
    now = 0.0
    dur, succs = g.dur, g.succs
    while ready or running:
        while ready and len(running) < width:
            _, v = heapq.heappop(ready)
            heapq.heappush(running, (now + dur[v], v))
        now, finished = heapq.heappop(running)
        for s in succs[finished]:
            remaining[s] -= 1
            if remaining[s] == 0:
                heapq.heappush(ready, (rank[s], s))
    return now


def critical_path_order(g: Graph) -> list[int]:
    """Longest remaining chain first, then longest task, then the topological position."""
    position = [0] * len(g.dur)
    for i, v in enumerate(g.topo):
        position[v] = i
    return sorted(range(len(g.dur)), key=lambda v: (-g.bottom[v], -g.dur[v], position[v]))


# --------------------------------------------------------------------------- entry point


def plan_waves(g: Graph, width: int, thorough: bool = True) -> tuple[list[list[int]], str]:
    """The cheapest waves plan found, and which construction produced it.

    `thorough` tries more constructions on jobs of up to LOOKAHEAD_MAX_TASKS tasks.
    """
    n = len(g.dur)
    if g.edges == 0:
        order = sorted(range(n), key=lambda v: (-g.dur[v], v))
        return cut_longest_first(order, g.dur, width), "longest-first blocks (optimal)"
    small = thorough and n <= LOOKAHEAD_MAX_TASKS
    candidates: list[tuple[str, list[list[int]]]] = [
        ("dependency levels", level_waves(g, width)),
        ("input-order chunks", baseline_input_chunks(g, width)),
    ]
    for exponent in (1.0, 0.5, 0.0) if small else (1.0, 0.0):
        priority = g.bottom if exponent == 1.0 else bottom_levels(g, exponent)
        name = f"critical-path greedy (chain weight duration^{exponent:g})"
        candidates.append((name, greedy_waves(g, width, priority, lookahead=False)))
        if small and exponent != 0.5:
            candidates.append((name + " with lookahead", greedy_waves(g, width, priority, True)))
    scored = [(waves_cost(w, g.dur), i, name, w) for i, (name, w) in enumerate(candidates)]
    scored.sort(key=lambda item: (item[0], item[1]))
    scored = scored[: len(scored) if small else 1]
    for i, (_, index, name, waves) in enumerate(scored):
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
    validate_jobs(jobs)
    if not jobs:
        return Schedule([], [], [], 0.0, 0.0)
    dur, known = _durations(jobs)
    g = build_graph(jobs, dur)
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
    return Schedule(
        batches=[[g.ids[v] for v in wave] for wave in waves],
        batch_estimates=[max(g.dur[v] for v in wave) if known else None for wave in waves],
        dispatch_order=[g.ids[v] for v in dispatch],
        estimated_makespan_s=makespan if known else None,
        lower_bound_s=bound if known else None,
        notes=notes,
    )
