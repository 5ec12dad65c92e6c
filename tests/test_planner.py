"""The pure planner: validity, optimality on independent tasks, bounds, cycles."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_dispatch.errors import (
    DependencyCycleError,
    DuplicateTaskError,
    UnknownDependencyError,
)
from parallel_dispatch.planner import (
    Job,
    Schedule,
    baseline_input_chunks,
    baseline_level_chunks,
    build_graph,
    plan_schedule,
    stream_lower_bound,
    waves_cost,
    waves_lower_bound,
)


def assert_valid(jobs: list[Job], schedule: Schedule, width: int) -> None:
    placed = [t for batch in schedule.batches for t in batch]
    assert sorted(placed) == sorted(j.id for j in jobs)
    assert sorted(schedule.dispatch_order) == sorted(j.id for j in jobs)
    where = {t: i for i, batch in enumerate(schedule.batches) for t in batch}
    for job in jobs:
        for dep in job.depends_on:
            assert where[dep] < where[job.id]
    assert all(1 <= len(batch) <= width for batch in schedule.batches)


def brute_force_independent(durations: list[float], width: int) -> float:
    """Best waves makespan over every assignment of tasks to ceil(n/width)..n batches."""
    n = len(durations)
    best = math.inf
    for labels in itertools.product(range(n), repeat=n):
        groups: dict[int, list[float]] = {}
        for label, d in zip(labels, durations, strict=True):
            groups.setdefault(label, []).append(d)
        if all(len(g) <= width for g in groups.values()):
            best = min(best, sum(max(g) for g in groups.values()))
    return best


@pytest.mark.parametrize("n", [2, 4, 6, 8, 10])
def test_up_to_ten_tasks_without_estimates_run_in_one_batch(n: int) -> None:
    jobs = [Job(f"t{i}") for i in range(n)]
    schedule = plan_schedule(jobs, 10, "waves")
    assert [len(b) for b in schedule.batches] == [n]
    assert schedule.estimated_makespan_s is None
    assert schedule.lower_bound_s is None


@pytest.mark.parametrize(
    ("n", "sizes"), [(12, [6, 6]), (25, [9, 8, 8]), (11, [6, 5]), (30, [10, 10, 10])]
)
def test_more_tasks_than_the_width_split_into_balanced_batches(n: int, sizes: list[int]) -> None:
    jobs = [Job(f"t{i}") for i in range(n)]
    schedule = plan_schedule(jobs, 10, "waves")
    assert [len(b) for b in schedule.batches] == sizes


def test_equal_estimates_are_balanced_like_unknown_ones() -> None:
    jobs = [Job(f"t{i}", duration_s=30.0) for i in range(25)]
    schedule = plan_schedule(jobs, 10, "waves")
    assert [len(b) for b in schedule.batches] == [9, 8, 8]
    assert schedule.estimated_makespan_s == 90.0


def test_distinct_estimates_put_the_longest_tasks_together() -> None:
    jobs = [Job(f"t{i}", duration_s=float(i + 1)) for i in range(12)]
    schedule = plan_schedule(jobs, 10, "waves")
    # Optimal: the ten longest (12..3) together, then 2 and 1: 12 + 2 = 14.
    assert schedule.estimated_makespan_s == 14.0
    assert sorted(schedule.batches[1]) == ["t0", "t1"]
    assert schedule.lower_bound_s == 14.0


def test_ties_at_a_cut_are_used_to_balance_sizes() -> None:
    jobs = [Job(f"long{i}", duration_s=10.0) for i in range(6)]
    jobs += [Job(f"short{i}", duration_s=1.0) for i in range(6)]
    schedule = plan_schedule(jobs, 10, "waves")
    assert schedule.estimated_makespan_s == 11.0
    assert [len(b) for b in schedule.batches] == [6, 6]


def test_dependencies_sit_in_earlier_batches_and_the_critical_path_bounds_the_plan() -> None:
    jobs = [
        Job("build", (), 30.0),
        Job("test-a", ("build",), 60.0),
        Job("test-b", ("build",), 55.0),
        Job("lint", (), 5.0),
        Job("report", ("test-a", "test-b", "lint"), 10.0),
    ]
    for mode in ("waves", "stream"):
        schedule = plan_schedule(jobs, 10, mode)
        assert_valid(jobs, schedule, 10)
        assert schedule.lower_bound_s == 100.0
        assert schedule.estimated_makespan_s == 100.0


def test_stream_mode_launches_the_critical_path_first() -> None:
    jobs = [Job(f"side{i}", (), 10.0) for i in range(3)]
    jobs += [Job("head", (), 10.0), Job("tail", ("head",), 50.0)]
    schedule = plan_schedule(jobs, 2, "stream")
    assert schedule.dispatch_order[0] == "head"
    assert schedule.estimated_makespan_s == 60.0
    assert_valid(jobs, schedule, 2)


@pytest.mark.parametrize(
    ("jobs", "error"),
    [
        ([Job("a"), Job("a")], DuplicateTaskError),
        ([Job("a", ("ghost",))], UnknownDependencyError),
        ([Job("a", ("a",))], DependencyCycleError),
        ([Job("a", ("c",)), Job("b", ("a",)), Job("c", ("b",))], DependencyCycleError),
    ],
)
def test_invalid_inputs_raise_the_named_error(jobs: list[Job], error: type[Exception]) -> None:
    with pytest.raises(error):
        plan_schedule(jobs, 10, "waves")


def test_a_cycle_is_named_in_the_error() -> None:
    jobs = [Job("a", ("c",)), Job("b", ("a",)), Job("c", ("b",)), Job("d")]
    with pytest.raises(DependencyCycleError) as info:
        plan_schedule(jobs, 10, "waves")
    assert set(info.value.cycle) == {"a", "b", "c"}


def test_no_tasks_is_an_empty_plan() -> None:
    schedule = plan_schedule([], 10, "stream")
    assert schedule.batches == []
    assert schedule.estimated_makespan_s == 0.0


durations = st.sampled_from([1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 60.0, 120.0])


@st.composite
def dags(draw: st.DrawFn, max_tasks: int = 30) -> list[Job]:
    n = draw(st.integers(1, max_tasks))
    known = draw(st.booleans())
    jobs = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, max(0, i - 1)), max_size=3)) if i else []
        jobs.append(
            Job(
                f"t{i}",
                tuple(sorted({f"t{d}" for d in deps})),
                draw(durations) if known else None,
            )
        )
    return draw(st.permutations(jobs))


@settings(max_examples=150, deadline=None)
@given(jobs=dags(), width=st.integers(1, 6), mode=st.sampled_from(["waves", "stream"]))
def test_every_plan_is_valid_and_its_bound_holds(jobs: list[Job], width: int, mode: str) -> None:
    schedule = plan_schedule(jobs, width, "waves" if mode == "waves" else "stream")
    assert_valid(jobs, schedule, width)
    if schedule.estimated_makespan_s is not None:
        assert schedule.lower_bound_s is not None
        assert schedule.lower_bound_s <= schedule.estimated_makespan_s
        dur = {j.id: j.duration_s or 0.0 for j in jobs}
        g = build_graph(jobs, dur)
        assert schedule.lower_bound_s >= max(g.bottom) - 1e-9
        assert schedule.lower_bound_s >= sum(dur.values()) / width - 1e-9


@settings(max_examples=150, deadline=None)
@given(jobs=dags(max_tasks=40), width=st.integers(1, 6))
def test_the_waves_bound_is_at_least_both_classic_bounds(jobs: list[Job], width: int) -> None:
    dur = {j.id: j.duration_s or 1.0 for j in jobs}
    g = build_graph(jobs, dur)
    independent = sorted(dur.values(), reverse=True)[::width]
    bound = waves_lower_bound(g, width)
    assert bound >= max(g.bottom) - 1e-9
    assert bound >= sum(independent) - 1e-9
    filled = [Job(j.id, j.depends_on, dur[j.id]) for j in jobs]
    makespan = plan_schedule(filled, width, "waves").estimated_makespan_s
    assert makespan is not None
    assert bound <= makespan + 1e-9


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.sampled_from([1.0, 2.0, 3.0, 7.0, 10.0]), min_size=1, max_size=5),
    width=st.integers(1, 4),
)
def test_independent_tasks_are_planned_exactly_optimally(values: list[float], width: int) -> None:
    jobs = [Job(f"t{i}", (), d) for i, d in enumerate(values)]
    schedule = plan_schedule(jobs, width, "waves")
    assert schedule.estimated_makespan_s == brute_force_independent(values, width)
    assert len(schedule.batches) == math.ceil(len(values) / width)
    assert schedule.lower_bound_s == schedule.estimated_makespan_s


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 60), width=st.integers(1, 12))
def test_unknown_durations_give_the_fewest_batches_differing_by_at_most_one(
    n: int, width: int
) -> None:
    schedule = plan_schedule([Job(f"t{i}") for i in range(n)], width, "waves")
    sizes = [len(b) for b in schedule.batches]
    assert len(sizes) == math.ceil(n / width)
    assert max(sizes) - min(sizes) <= 1


def test_stream_bound_counts_two_of_the_longest_sharing_a_slot() -> None:
    jobs = [Job(f"t{i}", (), 10.0) for i in range(3)]
    g = build_graph(jobs, {j.id: 10.0 for j in jobs})
    assert stream_lower_bound(g, 2) == 20.0


def test_a_dag_plan_is_no_worse_than_dependency_levels() -> None:
    # Level 0: one long task and many short ones; level 1 depends on a short one only.
    jobs = [Job("long", (), 100.0), Job("s0", (), 1.0), Job("after", ("s0",), 100.0)]
    schedule = plan_schedule(jobs, 10, "waves")
    # Levels would cost 100 + 100; running "long" beside "after" costs 1 + 100.
    assert schedule.estimated_makespan_s == 101.0
    g = build_graph(jobs, {j.id: j.duration_s or 0.0 for j in jobs})
    index = {jid: i for i, jid in enumerate(g.ids)}
    assert waves_cost([[index[t] for t in b] for b in schedule.batches], g.dur) == 101.0


def layered_jobs(n: int, seed: int) -> list[Job]:
    """n tasks in ~sqrt(n) layers, each depending on up to three earlier ones, shuffled."""
    rng = random.Random(seed)
    layers = max(2, int(n**0.5))
    jobs = []
    for i in range(n):
        first_of_layer = (i * layers // n) * n // layers
        picks = rng.randint(0, 3) if first_of_layer else 0
        deps = sorted({f"t{rng.randrange(first_of_layer)}" for _ in range(picks)})
        jobs.append(Job(f"t{i}", tuple(deps), rng.random()))
    rng.shuffle(jobs)
    return jobs


@pytest.mark.parametrize("n", [300, 2_500])
@pytest.mark.parametrize("mode", ["waves", "stream"])
def test_large_jobs_take_the_cheaper_path_and_stay_valid(n: int, mode: str) -> None:
    jobs = layered_jobs(n, seed=n)
    schedule = plan_schedule(jobs, 10, "waves" if mode == "waves" else "stream")
    assert_valid(jobs, schedule, 10)
    assert schedule.lower_bound_s is not None and schedule.estimated_makespan_s is not None
    assert schedule.lower_bound_s <= schedule.estimated_makespan_s
    g = build_graph(jobs, {j.id: j.duration_s or 0.0 for j in jobs})
    index = {jid: i for i, jid in enumerate(g.ids)}
    naive = min(
        waves_cost(baseline_level_chunks(g, 10), g.dur),
        waves_cost(baseline_input_chunks(g, 10), g.dur),
    )
    batches = [[index[t] for t in b] for b in schedule.batches]
    assert waves_cost(batches, g.dur) <= naive + 1e-9


def test_the_same_jobs_always_get_the_same_plan() -> None:
    jobs = layered_jobs(400, seed=1)
    first = plan_schedule(jobs, 10, "waves")
    assert plan_schedule(list(jobs), 10, "waves") == first


def test_the_topological_order_keeps_the_input_order_where_dependencies_allow() -> None:
    jobs = [Job("c", ("b",)), Job("a"), Job("b"), Job("d", ("a",))]
    g = build_graph(jobs, dict.fromkeys("abcd", 1.0))
    assert [g.ids[v] for v in g.topo] == ["a", "b", "c", "d"]
    in_order = [Job("a"), Job("b", ("a",)), Job("c", ("a", "b"))]
    assert build_graph(in_order, dict.fromkeys("abc", 1.0)).topo == [0, 1, 2]


def test_a_cycle_behind_valid_tasks_is_still_named() -> None:
    jobs = [Job(f"ok{i}") for i in range(50)]
    jobs += [Job("x", ("ok3", "z")), Job("y", ("x",)), Job("z", ("y",))]
    with pytest.raises(DependencyCycleError) as info:
        plan_schedule(jobs, 10, "stream")
    assert set(info.value.cycle) == {"x", "y", "z"}
