"""From a request plus context to a Plan: width limits with notes, learning from history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from parallel_dispatch.capacity import HostThresholds, adapt_limit
from parallel_dispatch.errors import InvalidPlanError
from parallel_dispatch.models import TaskSpec
from parallel_dispatch.planner import Job, plan_schedule
from parallel_dispatch.planning import (
    HostReading,
    Observation,
    PlanningContext,
    decide_width,
    make_plan,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ctx(**overrides: object) -> PlanningContext:
    base: dict[str, object] = {"hard_cap": 10, "max_active_agents": 20}
    base.update(overrides)
    return PlanningContext(**base)  # type: ignore[arg-type]  # test helper, fields checked at runtime


def history(agent: str, seconds: list[float]) -> list[Observation]:
    return [
        Observation(agent, "succeeded", s, T0 - timedelta(minutes=i)) for i, s in enumerate(seconds)
    ]


def test_the_server_cap_sets_the_width_by_default() -> None:
    width, notes = decide_width(None, ctx())
    assert width == 10
    assert notes == ["width 10: server cap (PARALLEL_DISPATCH_MAX_PARALLEL)"]


def test_a_smaller_request_sets_the_width() -> None:
    assert decide_width(4, ctx()) == (4, ["width 4: requested max_parallel"])


def test_agent_slots_used_by_other_coordinations_shrink_the_width() -> None:
    width, notes = decide_width(None, ctx(in_flight=16))
    assert width == 4
    assert "only 4 of 20 agent slots free" in notes[-1]


def test_with_no_free_slot_the_width_is_one_and_the_wait_is_named() -> None:
    width, notes = decide_width(None, ctx(in_flight=20, next_slot_free_in_s=95.0))
    assert width == 1
    assert "all 20 agent slots are in use" in notes[-1]
    assert "~95 s" in notes[-1]


def test_host_pressure_shrinks_the_width_with_a_note() -> None:
    width, notes = decide_width(None, ctx(host=HostReading(3.0, 0.5)))
    assert width == 5
    assert notes[-1].startswith("width 5: host pressure, load 3.00 per core is above 1.5")


def test_host_thresholds_are_taken_from_the_context() -> None:
    relaxed = ctx(host=HostReading(3.0, 0.5), thresholds=HostThresholds(4.0, 0.1))
    assert decide_width(None, relaxed)[0] == 10


def test_the_adaptive_limit_falls_after_rate_limits_and_recovers_after_clean_batches() -> None:
    failures = [("failed", "rate_limit_error: 429")] * 3 + [("succeeded", None)] * 7
    limit, why = adapt_limit(None, 10, statuses_errors=failures, batch_width=10)
    recent = [
        Observation("coder", "failed", 3.0, T0 - timedelta(seconds=i), "429 Too Many Requests")
        for i in range(3)
    ]
    width, notes = decide_width(None, ctx(adaptive_limit=limit, history=recent))
    assert width == 5
    assert notes[-1].startswith("width 5: adaptive limit after 3 rate-limit/overload failures")
    width, notes = decide_width(None, ctx(adaptive_limit=limit, adaptive_reason=why))
    assert why is not None and why in notes[-1]
    for _ in range(5):
        limit, _ = adapt_limit(
            limit, 10, statuses_errors=[("succeeded", None)] * limit, batch_width=limit
        )
    assert decide_width(None, ctx(adaptive_limit=limit))[0] == 10


def test_the_learning_plan_groups_slow_agents_and_is_optimal() -> None:
    # Recorded: reviewers take ~30 s, test-runners ten times longer.
    past = history("reviewer", [28.0, 30.0, 31.0, 30.0, 29.0] * 3)
    past += history("test-runner", [300.0, 310.0, 295.0, 300.0, 305.0] * 3)
    tasks = [TaskSpec(id=f"review-{i}", agent="reviewer") for i in range(7)]
    tasks += [TaskSpec(id=f"test-{i}", agent="test-runner") for i in range(7)]
    plan = make_plan(tasks, "waves", None, ctx(history=past))
    slow = {t.id for t in tasks if t.agent == "test-runner"}
    # Seven slow tasks fit in one batch of ten: they must all share it.
    assert any(slow <= set(b.task_ids) for b in plan.batches)
    true = {"reviewer": 30.0, "test-runner": 300.0}
    optimum = plan_schedule(
        [Job(t.id, (), true[t.agent]) for t in tasks], 10, "waves"
    ).estimated_makespan_s
    assert plan.estimated_makespan_s == optimum == 330.0
    assert "test-runner: median 300 s over 15 runs" in plan.notes
    assert "reviewer: median 30 s over 15 runs" in plan.notes


def test_without_estimates_or_history_the_plan_balances_by_count_and_knows_no_makespan() -> None:
    plan = make_plan([TaskSpec(id=f"t{i}") for i in range(12)], "waves", None, ctx())
    assert [len(b.task_ids) for b in plan.batches] == [6, 6]
    assert plan.estimated_makespan_s is None
    assert plan.lower_bound_s is None
    assert any("batches balanced by count" in n for n in plan.notes)


@pytest.mark.parametrize("n", [2, 4, 6, 8, 10])
def test_up_to_ten_tasks_are_one_batch(n: int) -> None:
    plan = make_plan([TaskSpec(id=f"t{i}") for i in range(n)], "waves", None, ctx())
    assert len(plan.batches) == 1
    assert plan.width == 10


def test_twenty_five_tasks_under_cap_ten_are_nine_eight_eight() -> None:
    plan = make_plan([TaskSpec(id=f"t{i}") for i in range(25)], "waves", None, ctx())
    assert [len(b.task_ids) for b in plan.batches] == [9, 8, 8]


def test_caller_estimates_fill_agents_without_history() -> None:
    tasks = [TaskSpec(id="a", estimate_s=100.0), TaskSpec(id="b", agent="new-kind")]
    plan = make_plan(tasks, "stream", None, ctx())
    assert plan.estimated_makespan_s == 100.0
    assert any("new-kind: no history" in n for n in plan.notes)


def test_stream_plans_report_a_bound_no_larger_than_the_makespan() -> None:
    tasks = [TaskSpec(id=f"t{i}", estimate_s=float(10 + i)) for i in range(15)]
    tasks.append(TaskSpec(id="join", depends_on=[t.id for t in tasks], estimate_s=5.0))
    plan = make_plan(tasks, "stream", 4, ctx())
    assert plan.lower_bound_s is not None and plan.estimated_makespan_s is not None
    assert plan.lower_bound_s <= plan.estimated_makespan_s
    assert plan.dispatch_order[-1] == "join"
    assert all(len(b.task_ids) <= 4 for b in plan.batches)


def test_explicit_batches_are_validated_against_the_width() -> None:
    tasks = [TaskSpec(id=f"t{i}") for i in range(4)]
    with pytest.raises(InvalidPlanError):
        make_plan(tasks, "waves", 2, ctx(), explicit_batches=[["t0", "t1", "t2"], ["t3"]])
    plan = make_plan(tasks, "waves", 2, ctx(), explicit_batches=[["t0", "t1"], ["t2", "t3"]])
    assert [b.task_ids for b in plan.batches] == [["t0", "t1"], ["t2", "t3"]]
    assert "batches as given by the caller (validated)" in plan.notes
