"""Plan latency and peak memory for 10 / 100 / 1,000 / 10,000 tasks with dependencies.

The machine may be shared and noisy, so every size is also timed for a naive baseline in the
same run, and the ratio is printed. The baseline (dependency levels by Kahn's algorithm over
dicts, each level chunked by the width) is written out here rather than taken from the
planner, so it stays the same yardstick when the planner's code gets faster.

    .venv/bin/python bench/plan_speed.py [--seed 3] [--repeats 30]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

from parallel_dispatch.models import TaskSpec
from parallel_dispatch.planning import PlanningContext, make_plan

TARGETS_MS = {1_000: 50.0, 10_000: 1_000.0}


def workload(rng: random.Random, n: int) -> list[TaskSpec]:
    """n tasks in ~sqrt(n) layers, each depending on up to three tasks of earlier layers."""
    layers = max(2, int(n**0.5))
    tasks: list[TaskSpec] = []
    for i in range(n):
        layer = i * layers // n
        first_of_layer = layer * n // layers
        deps = (
            sorted({f"t{rng.randrange(first_of_layer)}" for _ in range(rng.randint(0, 3))})
            if layer
            else []
        )
        tasks.append(
            TaskSpec(id=f"t{i}", depends_on=deps, estimate_s=60.0 * rng.lognormvariate(0, 1))
        )
    rng.shuffle(tasks)
    return tasks


def naive_levels(tasks: list[TaskSpec], width: int = 10) -> list[list[str]]:
    """Dependency levels (Kahn's algorithm over dicts), each cut into chunks of `width`."""
    dependents: dict[str, list[str]] = {t.id: [] for t in tasks}
    waiting = {t.id: len(set(t.depends_on)) for t in tasks}
    for t in tasks:
        for dep in set(t.depends_on):
            dependents[dep].append(t.id)
    level = [t.id for t in tasks if waiting[t.id] == 0]
    batches: list[list[str]] = []
    while level:
        batches.extend(level[i : i + width] for i in range(0, len(level), width))
        following = []
        for task_id in level:
            for dependent in dependents[task_id]:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    following.append(dependent)
        level = following
    if sum(map(len, batches)) != len(tasks):
        raise ValueError("the dependencies have a cycle")
    return batches


def timings(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def peak_kib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ctx = PlanningContext(hard_cap=10, max_active_agents=20)
    header = (
        f"{'tasks':>6} {'mode':<7}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"
        f"{'naive p50':>11}{'ratio':>7}{'peak KiB':>10}"
    )
    print(f"seed {args.seed}; width 10; make_plan() on TaskSpecs with estimates and dependencies")
    print(header)
    print("-" * len(header))
    missed = []
    for n in (10, 100, 1_000, 10_000):
        tasks = workload(rng, n)
        repeats = max(3, args.repeats // (10 if n >= 10_000 else 1))
        naive = statistics.median(timings(partial(naive_levels, tasks), repeats))
        for mode in ("waves", "stream"):

            def plan(t: list[TaskSpec] = tasks, m: str = mode) -> object:
                return make_plan(t, "waves" if m == "waves" else "stream", None, ctx)

            times = sorted(timings(plan, repeats))
            p50 = statistics.median(times)
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            print(
                f"{n:>6} {mode:<7}{p50:>9.2f}{p95:>9.2f}{times[-1]:>9.2f}"
                f"{naive:>11.2f}{p50 / naive:>7.1f}{peak_kib(plan):>10.0f}"
            )
            if n in TARGETS_MS and p50 > TARGETS_MS[n]:
                missed.append(f"{n} tasks {mode}: p50 {p50:.1f} ms > {TARGETS_MS[n]:.0f} ms")
    for line in missed:
        print(f"TARGET MISSED: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
