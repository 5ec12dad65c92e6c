"""Making a valid waves plan cheaper: an optimal re-cut of its task sequence, a local search
that moves the longest task of a wave where it costs less, and a pass that evens out sizes.

Every step keeps the plan valid and never raises its makespan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from parallel_dispatch.graph import Graph

_EPS = 1e-9


def resegment(waves: Sequence[Sequence[int]], g: Graph, width: int) -> list[list[int]]:
    """Re-cut the plan's task sequence (each wave longest-first) into the best waves.

    Dynamic programming over cut points: a segment is a valid wave when it holds at most
    `width` tasks and none depends on another in it. The old waves are one such cut, so the
    result is never worse. O(n * width).
    """
    key = g.dur.__getitem__
    # reverse=True keeps equal durations in their wave order (the sort stays stable).
    seq = [v for wave in waves for v in sorted(wave, key=key, reverse=True)]
    n = len(seq)
    pos = [0] * n
    for i, v in enumerate(seq):
        pos[v] = i
    succs = g.succs
    first_dependent = []
    for v in seq:
        first = n
        for s in succs[v]:
            if pos[s] < first:
                first = pos[s]
        first_dependent.append(first)
    dur = [g.dur[v] for v in seq]
    cost = [0.0] * (n + 1)
    cut = [0] * (n + 1)
    inf = math.inf
    for i in range(1, n + 1):
        longest = 0.0
        reach = n
        best, best_j = inf, 0
        for j in range(i - 1, max(-1, i - 1 - width), -1):
            if first_dependent[j] < reach:
                reach = first_dependent[j]
                if reach < i:
                    break
            if dur[j] > longest:
                longest = dur[j]
            if cost[j] + longest < best:
                best, best_j = cost[j] + longest, j
        cost[i] = best
        cut[i] = best_j
    out: list[list[int]] = []
    i = n
    while i > 0:
        out.append(seq[cut[i] : i])
        i = cut[i]
    out.reverse()
    return out


class _Layout:
    """A waves plan being edited: members of each wave, where each task is, wave maxima."""

    def __init__(self, waves: Sequence[Sequence[int]], g: Graph) -> None:
        self.g = g
        self.members = [list(w) for w in waves]
        self.where = [0] * len(g.dur)
        for i, wave in enumerate(self.members):
            for v in wave:
                self.where[v] = i
        dur = g.dur
        self.top = [max([dur[v] for v in wave], default=0.0) for wave in self.members]

    def window(self, v: int) -> tuple[int, int]:
        """The waves `v` may move to without breaking a dependency."""
        where = self.where
        lo = 0
        for p in self.g.preds[v]:
            if where[p] >= lo:
                lo = where[p] + 1
        hi = len(self.members) - 1
        for s in self.g.succs[v]:
            if where[s] <= hi:
                hi = where[s] - 1
        return lo, hi

    def move(self, v: int, target: int) -> None:
        source = self.where[v]
        self.members[source].remove(v)
        self.members[target].append(v)
        self.where[v] = target
        dur = self.g.dur
        self.top[target] = max(self.top[target], dur[v])
        self.top[source] = max([dur[u] for u in self.members[source]], default=0.0)

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
            wave = members[a]
            if not wave:
                continue
            peak = top[a]
            heads = []
            second = 0.0
            for v in wave:
                if dur[v] >= peak:
                    heads.append(v)
                elif dur[v] > second:
                    second = dur[v]
            gain = peak - second
            budget -= len(wave)
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
    if all(len(wave) <= target for wave in members):
        return layout.waves()
    budget = 20 * len(dur) + 1_000
    for a in range(len(members)):
        if len(members[a]) <= target:
            continue
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
