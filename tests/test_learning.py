"""Plans learn from recorded results, through the real tools: durations, slots, the limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from parallel_dispatch.planning import HostReading
from parallel_dispatch.server import build_server, build_service
from parallel_dispatch.settings import Settings
from tests.conftest import FakeClock, call_ok

pytestmark = pytest.mark.anyio


async def run_coordination(
    client: Client,
    clock: FakeClock,
    tasks: list[dict[str, Any]],
    seconds: dict[str, float],
    *,
    error: str | None = None,
    status: str = "succeeded",
) -> dict[str, Any]:
    """Register, then record every task with its (fake-clock) duration, batch by batch."""
    reg = await call_ok(client, "register_coordination", tasks=tasks)
    cid = reg["coordination_id"]
    launch = [item["task_id"] for item in reg["launch"]]
    progress: dict[str, Any] = {}
    while launch:
        following: list[str] = []
        for task_id in launch:
            progress = await call_ok(
                client,
                "record_result",
                coordination_id=cid,
                task_id=task_id,
                status=status,
                summary="done",
                duration_s=seconds[task_id],
                **({"error": error} if error else {}),
            )
            following += [item["task_id"] for item in progress["launch"]]
        clock.advance(1)
        launch = following
    return progress


async def test_history_groups_slow_agents_together_and_reaches_the_true_optimum(
    client: Client, clock: FakeClock
) -> None:
    history = [{"id": f"h{i}", "agent": "quick" if i % 2 else "slow"} for i in range(20)]
    durations = {f"h{i}": 30.0 if i % 2 else 300.0 for i in range(20)}
    await run_coordination(client, clock, history, durations)

    mixed = [{"id": f"s{i}", "agent": "slow"} for i in range(5)] + [
        {"id": f"q{i}", "agent": "quick"} for i in range(10)
    ]
    plan = await call_ok(client, "plan_batches", tasks=mixed)
    first, second = (set(b["task_ids"]) for b in plan["batches"])
    slow = {f"s{i}" for i in range(5)}
    assert slow <= first or slow <= second  # the slow ones share one wave
    # true durations: 5 x 300 s, 10 x 30 s, width 10 -> optimum is 300 + 30 s
    assert plan["estimated_makespan_s"] == pytest.approx(330.0)
    assert plan["lower_bound_s"] == pytest.approx(330.0)
    notes = " ".join(plan["notes"])
    assert "slow: median 300 s over 10 runs" in notes
    assert "quick: median 30 s over 10 runs" in notes


async def test_without_history_or_estimates_durations_stay_unknown(client: Client) -> None:
    plan = await call_ok(client, "plan_batches", tasks=[{"id": "a"}, {"id": "b"}])
    assert plan["estimated_makespan_s"] is None and plan["lower_bound_s"] is None


async def test_rate_limit_failures_shrink_the_width_and_clean_batches_restore_it(
    client: Client, clock: FakeClock
) -> None:
    ten = [{"id": f"r{i}"} for i in range(10)]
    seconds = {f"r{i}": 5.0 for i in range(10)}
    await run_coordination(
        client, clock, ten, seconds, status="failed", error="429 rate limit exceeded"
    )
    plan = await call_ok(client, "plan_batches", tasks=[{"id": f"x{i}"} for i in range(10)])
    assert plan["width"] == 5
    assert any("adaptive limit" in note for note in plan["notes"])

    five = [{"id": f"c{i}"} for i in range(5)]
    await run_coordination(client, clock, five, {f"c{i}": 5.0 for i in range(5)})
    plan = await call_ok(client, "plan_batches", tasks=[{"id": f"x{i}"} for i in range(10)])
    assert plan["width"] == 6


async def test_agent_slots_are_shared_across_open_coordinations(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'slots.db'}",
        host_pressure=False,
        max_active_agents=12,
    )
    async with Client(build_server(settings, build_service(settings))) as client:
        await call_ok(client, "register_coordination", tasks=[{"id": f"a{i}"} for i in range(8)])
        plan = await call_ok(client, "plan_batches", tasks=[{"id": f"b{i}"} for i in range(8)])
        assert plan["width"] == 4
        assert any("4 of 12 agent slots free" in n for n in plan["notes"])
        await call_ok(client, "register_coordination", tasks=[{"id": f"c{i}"} for i in range(4)])
        plan = await call_ok(client, "plan_batches", tasks=[{"id": f"d{i}"} for i in range(3)])
        assert plan["width"] == 1
        assert any("slot" in n and "in use" in n for n in plan["notes"])


@pytest.mark.parametrize(("pressure", "expect_narrower"), [(True, True), (False, False)])
async def test_host_pressure_shrinks_the_width_unless_turned_off(
    tmp_path: Path, pressure: bool, expect_narrower: bool
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'host.db'}", host_pressure=pressure)
    busy = HostReading(load_per_core=3.0, memory_available_fraction=0.5)
    service = build_service(settings, host_reader=lambda: busy)
    async with Client(build_server(settings, service)) as client:
        plan = await call_ok(client, "plan_batches", tasks=[{"id": f"t{i}"} for i in range(10)])
    if expect_narrower:
        assert plan["width"] < 10
        assert any("load" in note for note in plan["notes"])
    else:
        assert plan["width"] == 10


async def test_a_later_wave_launches_only_into_slots_other_coordinations_left(
    tmp_path: Path,
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'refill.db'}",
        host_pressure=False,
        max_active_agents=6,
    )
    async with Client(build_server(settings, build_service(settings))) as client:
        b = await call_ok(
            client, "register_coordination", tasks=[{"id": f"b{i}"} for i in range(12)]
        )
        bid = b["coordination_id"]
        assert len(b["launch"]) == 6
        for i in range(5):
            await call_ok(
                client,
                "record_result",
                coordination_id=bid,
                task_id=f"b{i}",
                status="succeeded",
                summary="ok",
            )
        a = await call_ok(
            client, "register_coordination", tasks=[{"id": f"a{i}"} for i in range(3)]
        )
        assert len(a["launch"]) == 3  # 5 slots were free
        last = await call_ok(
            client,
            "record_result",
            coordination_id=bid,
            task_id="b5",
            status="succeeded",
            summary="ok",
        )
        assert len(last["launch"]) == 3  # the second wave gets the 3 slots A left
        view = await call_ok(client, "get_coordination", coordination_id=bid)
        assert len(view["launch"]) == 3 and view["done"] == 6
        await call_ok(
            client,
            "record_result",
            coordination_id=a["coordination_id"],
            task_id="a0",
            status="succeeded",
            summary="ok",
        )
        view = await call_ok(client, "get_coordination", coordination_id=bid)
        assert len(view["launch"]) == 1  # one more slot freed, one more task starts
        running = sum(1 for t in view["tasks"] if t["status"] == "running")
        assert running == 4


async def test_a_coordination_with_nothing_running_may_always_start_one_task(
    tmp_path: Path,
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'one.db'}", host_pressure=False, max_active_agents=2
    )
    async with Client(build_server(settings, build_service(settings))) as client:
        await call_ok(client, "register_coordination", tasks=[{"id": "x"}, {"id": "y"}])
        starved = await call_ok(client, "register_coordination", tasks=[{"id": "p"}, {"id": "q"}])
        assert [item["task_id"] for item in starved["launch"]] == ["p"]
        assert starved["plan"]["width"] == 1


async def test_when_no_slot_is_free_the_plan_says_when_one_is_expected_from_history(
    tmp_path: Path,
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'wait.db'}", host_pressure=False, max_active_agents=2
    )
    clock = FakeClock()
    service = build_service(settings, clock=clock)
    async with Client(build_server(settings, service)) as client:
        history = [{"id": f"h{i}", "agent": "slow"} for i in range(2)]
        await run_coordination(client, clock, history, {"h0": 300.0, "h1": 300.0})
        await call_ok(
            client,
            "register_coordination",
            tasks=[{"id": f"s{i}", "agent": "slow"} for i in range(2)],
        )
        clock.advance(100)
        plan = await call_ok(client, "plan_batches", tasks=[{"id": "x"}, {"id": "y"}])
    assert plan["width"] == 1
    assert any("200 s" in note for note in plan["notes"]), plan["notes"]
