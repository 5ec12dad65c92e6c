"""How close are plans to optimal? Seeded, reproducible; exits 1 if a target is missed.

For each family of workloads it plans every instance in waves and stream mode and divides the
planned makespan by the proven lower bound (waves bound for waves plans and baselines, stream
bound for stream plans). Two naive baselines are measured in the same run: input-order chunks
of the width, and dependency levels chunked by the width. For small DAGs the true waves
optimum is found by exhaustive search, so the real gap is known.

    .venv/bin/python bench/plan_quality.py [--seed 7] [--instances 60]
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

from parallel_dispatch.planner import (
    Graph,
    Job,
    baseline_input_chunks,
    baseline_level_chunks,
    build_graph,
    plan_schedule,
    waves_cost,
    waves_lower_bound,
)

WIDTH = 10
TARGETS = {
    "independent_waves_vs_optimum": 1.0,
    "small_waves_mean_vs_optimum": 1.02,
    "small_waves_worst_vs_optimum": 1.10,
    "dag_waves_mean_vs_bound": 1.25,
    "stream_mean_vs_bound": 1.05,
}


def lognormal(rng: random.Random) -> float:
    return round(60.0 * rng.lognormvariate(0.0, 1.0), 1) + 1.0


def independent(rng: random.Random) -> list[Job]:
    n = rng.randint(2, 200)
    return [Job(f"t{i}", (), lognormal(rng)) for i in range(n)]


def layered_dag(rng: random.Random, n: int) -> list[Job]:
    """n tasks in a random number of layers; each task depends on a few earlier ones."""
    layers = rng.randint(2, max(2, n // 3))
    layer = sorted(rng.randrange(layers) for _ in range(n))
    jobs: list[Job] = []
    density = rng.uniform(0.5, 3.0)
    for i in range(n):
        earlier = [j for j in range(i) if layer[j] < layer[i]]
        k = min(len(earlier), max(0, round(rng.expovariate(1 / density))))
        deps = rng.sample(earlier, k) if k else []
        jobs.append(Job(f"t{i}", tuple(f"t{d}" for d in deps), lognormal(rng)))
    rng.shuffle(jobs)
    return jobs


def random_dag(rng: random.Random) -> list[Job]:
    return layered_dag(rng, rng.randint(10, 200))


def small_dag(rng: random.Random) -> list[Job]:
    n = rng.randint(4, 12)
    p = rng.uniform(0.05, 0.45)
    return [
        Job(
            f"t{i}",
            tuple(f"t{j}" for j in range(i) if rng.random() < p),
            float(rng.choice([1, 2, 3, 5, 8, 13, 30, 60])),
        )
        for i in range(n)
    ]


def chains(rng: random.Random) -> list[Job]:
    jobs: list[Job] = []
    for c in range(rng.randint(1, 15)):
        prev: str | None = None
        for i in range(rng.randint(1, 12)):
            jid = f"c{c}.{i}"
            jobs.append(Job(jid, (prev,) if prev else (), lognormal(rng)))
            prev = jid
    return jobs


def fan_out_in(rng: random.Random) -> list[Job]:
    """Stages of source -> many parallel tasks -> sink (a map-reduce pipeline)."""
    jobs: list[Job] = []
    prev: tuple[str, ...] = ()
    for s in range(rng.randint(1, 4)):
        source = f"s{s}"
        jobs.append(Job(source, prev, lognormal(rng)))
        fan = [f"s{s}.{i}" for i in range(rng.randint(5, 80))]
        jobs.extend(Job(f, (source,), lognormal(rng)) for f in fan)
        sink = f"s{s}.join"
        jobs.append(Job(sink, tuple(fan), lognormal(rng)))
        prev = (sink,)
    return jobs


def optimum_waves(g: Graph, width: int) -> float:
    """The best waves makespan, by exhaustive search over ready sets (small graphs only)."""
    n = len(g.dur)
    pred_mask = [sum(1 << p for p in g.preds[v]) for v in range(n)]
    full = (1 << n) - 1

    @cache
    def best(done: int) -> float:
        if done == full:
            return 0.0
        ready = [v for v in range(n) if not done >> v & 1 and pred_mask[v] & ~done == 0]
        result = math.inf
        for cap in sorted({g.dur[v] for v in ready}):
            eligible = [v for v in ready if g.dur[v] <= cap]
            # A wave with room never gains by leaving out a ready task no longer than its cap.
            groups = (
                [eligible]
                if len(eligible) <= width
                else [list(c) for c in itertools.combinations(eligible, width)]
            )
            for group in groups:
                if max(g.dur[v] for v in group) < cap:
                    continue
                mask = sum(1 << v for v in group)
                result = min(result, cap + best(done | mask))
        return result

    return best(0)


@dataclass
class Row:
    family: str
    instances: int = 0
    waves: list[float] = field(default_factory=list)
    stream: list[float] = field(default_factory=list)
    input_chunks: list[float] = field(default_factory=list)
    level_chunks: list[float] = field(default_factory=list)
    waves_vs_optimum: list[float] = field(default_factory=list)
    worse_than_baseline: int = 0


def measure(
    family: str,
    make: Callable[[random.Random], list[Job]],
    rng: random.Random,
    count: int,
    widths: Sequence[int],
    exact: bool = False,
) -> Row:
    row = Row(family)
    for _ in range(count):
        jobs = make(rng)
        width = rng.choice(list(widths))
        waves = plan_schedule(jobs, width, "waves")
        stream = plan_schedule(jobs, width, "stream")
        assert waves.estimated_makespan_s is not None and waves.lower_bound_s is not None
        assert stream.estimated_makespan_s is not None and stream.lower_bound_s is not None
        dur = {j.id: j.duration_s or 0.0 for j in jobs}
        g = build_graph(jobs, dur)
        # The planner bounds its effort; offline, the same bound on every threshold is tighter.
        bound = max(waves.lower_bound_s, waves_lower_bound(g, width, max_thresholds=len(jobs)))
        naive_input = waves_cost(baseline_input_chunks(g, width), g.dur)
        naive_level = waves_cost(baseline_level_chunks(g, width), g.dur)
        row.instances += 1
        row.waves.append(waves.estimated_makespan_s / bound)
        row.stream.append(stream.estimated_makespan_s / stream.lower_bound_s)
        row.input_chunks.append(naive_input / bound)
        row.level_chunks.append(naive_level / bound)
        if waves.estimated_makespan_s > min(naive_input, naive_level) + 1e-9:
            row.worse_than_baseline += 1
        if exact:
            row.waves_vs_optimum.append(waves.estimated_makespan_s / optimum_waves(g, width))
    return row


def fmt(values: list[float]) -> str:
    if not values:
        return "     -      "
    return f"{statistics.fmean(values):.3f} / {max(values):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--instances", type=int, default=60)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    count = args.instances
    rows = [
        measure("independent lognormal", independent, rng, count, [WIDTH]),
        measure("small DAGs <=12 (w 2-4)", small_dag, rng, count * 3, [2, 3, 4], exact=True),
        measure("random DAGs 10-200", random_dag, rng, count, [WIDTH]),
        measure("chains", chains, rng, count, [WIDTH]),
        measure("fan-out / fan-in", fan_out_in, rng, count, [WIDTH]),
    ]
    print(f"seed {args.seed}; ratio = planned makespan / lower bound, shown as mean / worst")
    header = (
        f"{'family':<26}{'n':>4}  {'waves':^13}  {'stream':^13}  "
        f"{'input chunks':^13}  {'level chunks':^13}  {'waves/optimum':^13}  worse"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.family:<26}{r.instances:>4}  {fmt(r.waves):^13}  {fmt(r.stream):^13}  "
            f"{fmt(r.input_chunks):^13}  {fmt(r.level_chunks):^13}  "
            f"{fmt(r.waves_vs_optimum):^13}  {r.worse_than_baseline:>5}"
        )
    print("worse = instances where the waves plan is worse than either baseline")
    missed = check_targets(rows)
    for line in missed:
        print(f"TARGET MISSED: {line}")
    if not missed:
        print("all targets met")
    return 1 if missed else 0


def check_targets(rows: list[Row]) -> list[str]:
    by_family = {r.family.split()[0]: r for r in rows}
    missed: list[str] = []
    ind = by_family["independent"]
    if max(ind.waves) > TARGETS["independent_waves_vs_optimum"] + 1e-9:
        missed.append(f"independent waves worst {max(ind.waves):.4f} > 1.000")
    small = by_family["small"]
    mean, worst = statistics.fmean(small.waves_vs_optimum), max(small.waves_vs_optimum)
    if mean > TARGETS["small_waves_mean_vs_optimum"]:
        missed.append(f"small DAGs waves mean {mean:.3f} > 1.02 vs optimum")
    if worst > TARGETS["small_waves_worst_vs_optimum"]:
        missed.append(f"small DAGs waves worst {worst:.3f} > 1.10 vs optimum")
    dag = by_family["random"]
    if statistics.fmean(dag.waves) > TARGETS["dag_waves_mean_vs_bound"]:
        missed.append(f"random DAGs waves mean {statistics.fmean(dag.waves):.3f} > 1.25")
    for r in rows:
        if statistics.fmean(r.stream) > TARGETS["stream_mean_vs_bound"]:
            missed.append(f"{r.family}: stream mean {statistics.fmean(r.stream):.3f} > 1.05")
        if r.worse_than_baseline:
            missed.append(f"{r.family}: {r.worse_than_baseline} plans worse than a baseline")
    return missed


if __name__ == "__main__":
    sys.exit(main())
