"""The four tools through the SDK's in-memory client: every rule of the contract."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from tests.conftest import FakeClock, call_error, call_ok

pytestmark = pytest.mark.anyio


def tasks(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"t{i}", "prompt": f"do part {i}", **extra} for i in range(n)]


async def finish(
    client: Client, cid: str, task_id: str, status: str = "succeeded", **extra: Any
) -> dict[str, Any]:
    return await call_ok(
        client,
        "record_result",
        coordination_id=cid,
        task_id=task_id,
        status=status,
        summary=f"{task_id} {status}",
        **extra,
    )


async def test_tools_list_has_the_four_contract_tools_with_annotations(client: Client) -> None:
    listed = {t.name: t for t in (await client.list_tools()).tools}
    assert set(listed) == {
        "plan_batches",
        "register_coordination",
        "record_result",
        "get_coordination",
    }
    hints = {name: tool.annotations for name, tool in listed.items()}
    assert all(hint is not None for hint in hints.values())
    assert getattr(hints["plan_batches"], "read_only_hint", None) is True
    assert getattr(hints["get_coordination"], "read_only_hint", None) is True
    assert getattr(hints["record_result"], "idempotent_hint", None) is True
    assert getattr(hints["register_coordination"], "read_only_hint", None) is False
    for tool in listed.values():
        assert tool.output_schema is not None
        assert tool.description and len(tool.description) < 400


@pytest.mark.parametrize("n", [2, 4, 6, 8, 10])
async def test_small_fan_outs_run_in_one_batch(client: Client, n: int) -> None:
    plan = await call_ok(client, "plan_batches", tasks=tasks(n))
    assert plan["width"] == n or plan["width"] == 10
    assert [b["task_ids"] for b in plan["batches"]] == [[f"t{i}" for i in range(n)]]


@pytest.mark.parametrize(("n", "sizes"), [(12, [6, 6]), (25, [9, 8, 8])])
async def test_larger_fan_outs_split_into_balanced_batches_under_the_cap(
    client: Client, n: int, sizes: list[int]
) -> None:
    plan = await call_ok(client, "plan_batches", tasks=tasks(n))
    assert plan["width"] == 10
    assert [len(b["task_ids"]) for b in plan["batches"]] == sizes
    assert sorted(t for b in plan["batches"] for t in b["task_ids"]) == sorted(
        f"t{i}" for i in range(n)
    )
    assert any("cap" in note for note in plan["notes"])


async def test_requested_max_parallel_narrows_the_width(client: Client) -> None:
    plan = await call_ok(client, "plan_batches", tasks=tasks(6), max_parallel=3)
    assert plan["width"] == 3
    assert [len(b["task_ids"]) for b in plan["batches"]] == [3, 3]


async def test_whole_waves_fan_out_of_twelve_launches_two_batches_then_synthesis(
    client: Client,
) -> None:
    reg = await call_ok(client, "register_coordination", tasks=tasks(12), label="review")
    cid = reg["coordination_id"]
    first = [item["task_id"] for item in reg["launch"]]
    assert len(first) == 6
    assert reg["launch"][0]["prompt"].startswith("do part")
    assert "ONE message" in reg["instructions"] and cid in reg["instructions"]
    for task_id in first[:-1]:
        progress = await finish(client, cid, task_id)
        assert progress["launch"] == [] and progress["results"] is None
        assert progress["state"] == "running"
    progress = await finish(client, cid, first[-1])
    second = [item["task_id"] for item in progress["launch"]]
    assert len(second) == 6 and not set(second) & set(first)
    for task_id in second:
        progress = await finish(client, cid, task_id)
    assert progress["state"] == "completed"
    assert progress["done"] == progress["total"] == 12
    results = progress["results"]
    assert {r["task_id"] for r in results} == {f"t{i}" for i in range(12)}
    assert all(r["status"] == "succeeded" and r["summary"] for r in results)


async def test_stream_mode_refills_one_slot_per_finished_task(client: Client) -> None:
    reg = await call_ok(
        client, "register_coordination", tasks=tasks(5), mode="stream", max_parallel=2
    )
    cid = reg["coordination_id"]
    assert len(reg["launch"]) == 2
    assert "run_in_background: true" in reg["instructions"]
    progress = await finish(client, cid, reg["launch"][0]["task_id"])
    assert len(progress["launch"]) == 1
    view = await call_ok(client, "get_coordination", coordination_id=cid)
    assert sum(1 for t in view["tasks"] if t["status"] == "running") == 2


async def test_dependencies_wait_and_dependents_of_failures_are_skipped(client: Client) -> None:
    spec = [
        {"id": "build"},
        {"id": "lint"},
        {"id": "test", "depends_on": ["build"]},
        {"id": "deploy", "depends_on": ["test", "lint"]},
    ]
    reg = await call_ok(client, "register_coordination", tasks=spec)
    cid = reg["coordination_id"]
    assert {i["task_id"] for i in reg["launch"]} == {"build", "lint"}
    await finish(client, cid, "lint")
    progress = await finish(client, cid, "build", "failed", error="compile error")
    assert progress["state"] == "completed_with_failures"
    by_id = {r["task_id"]: r for r in progress["results"]}
    assert by_id["test"]["status"] == "skipped"
    assert "build" in by_id["test"]["error"]
    assert by_id["deploy"]["status"] == "skipped"
    assert by_id["lint"]["status"] == "succeeded"
    assert progress["failed"] == 3


async def test_record_result_is_idempotent_and_refuses_conflicts(client: Client) -> None:
    reg = await call_ok(client, "register_coordination", tasks=tasks(2))
    cid = reg["coordination_id"]
    first = await finish(client, cid, "t0")
    assert first["recorded"] is True
    again = await finish(client, cid, "t0")
    assert again["recorded"] is False and again["done"] == 1
    text = await call_error(
        client, "record_result", coordination_id=cid, task_id="t0", status="failed", summary="x"
    )
    assert "already has a final result" in text and "status" in text
    view = await call_ok(client, "get_coordination", coordination_id=cid)
    assert [t["status"] for t in view["tasks"] if t["task_id"] == "t0"] == ["succeeded"]


async def test_the_server_measures_duration_from_launch_when_none_is_given(
    client: Client, clock: FakeClock
) -> None:
    reg = await call_ok(client, "register_coordination", tasks=tasks(1))
    clock.advance(42.5)
    progress = await finish(client, reg["coordination_id"], "t0")
    assert progress["results"][0]["duration_s"] == pytest.approx(42.5)


async def test_lost_tasks_time_out_when_the_coordination_is_touched(
    client: Client, clock: FakeClock
) -> None:
    reg = await call_ok(
        client,
        "register_coordination",
        tasks=[{"id": "a"}, {"id": "b"}, {"id": "c", "depends_on": ["a"]}],
        task_timeout_s=60,
    )
    cid = reg["coordination_id"]
    await finish(client, cid, "b")
    clock.advance(61)
    view = await call_ok(client, "get_coordination", coordination_id=cid)
    statuses = {t["task_id"]: t["status"] for t in view["tasks"]}
    assert statuses == {"a": "timed_out", "b": "succeeded", "c": "skipped"}
    assert view["state"] == "completed_with_failures"
    assert {r["task_id"] for r in view["results"]} == {"a", "b", "c"}


async def test_a_timeout_unblocks_the_next_wave(client: Client, clock: FakeClock) -> None:
    reg = await call_ok(
        client,
        "register_coordination",
        tasks=tasks(4),
        max_parallel=2,
        task_timeout_s=30,
    )
    cid = reg["coordination_id"]
    await finish(client, cid, reg["launch"][0]["task_id"])
    clock.advance(31)
    view = await call_ok(client, "get_coordination", coordination_id=cid)
    assert len(view["launch"]) == 2
    assert view["state"] == "running"


async def test_a_late_result_after_timeout_is_kept(client: Client, clock: FakeClock) -> None:
    reg = await call_ok(client, "register_coordination", tasks=tasks(1), task_timeout_s=10)
    cid = reg["coordination_id"]
    clock.advance(11)
    await call_ok(client, "get_coordination", coordination_id=cid)
    progress = await finish(client, cid, "t0")
    assert progress["recorded"] is True
    assert progress["results"][0]["summary"] == "t0 succeeded"


async def test_cancelled_tasks_count_as_failures(client: Client) -> None:
    reg = await call_ok(client, "register_coordination", tasks=tasks(2))
    cid = reg["coordination_id"]
    await finish(client, cid, "t0", "cancelled")
    progress = await finish(client, cid, "t1")
    assert progress["state"] == "completed_with_failures" and progress["failed"] == 1


async def test_nested_coordinations_link_to_their_parent_task(client: Client) -> None:
    outer = await call_ok(client, "register_coordination", tasks=tasks(2), label="outer")
    parent = {"coordination_id": outer["coordination_id"], "task_id": "t1"}
    inner = await call_ok(
        client, "register_coordination", tasks=tasks(3), label="inner", parent=parent
    )
    view = await call_ok(client, "get_coordination", coordination_id=inner["coordination_id"])
    assert view["parent"] == parent
    outer_view = await call_ok(client, "get_coordination", coordination_id=outer["coordination_id"])
    assert [c["coordination_id"] for c in outer_view["children"]] == [inner["coordination_id"]]
    assert outer_view["children"][0]["label"] == "inner"


async def test_nesting_under_an_unknown_parent_task_is_refused(client: Client) -> None:
    outer = await call_ok(client, "register_coordination", tasks=tasks(1))
    text = await call_error(
        client,
        "register_coordination",
        tasks=tasks(1),
        parent={"coordination_id": outer["coordination_id"], "task_id": "nope"},
    )
    assert "no task 'nope'" in text


async def test_listing_without_an_id_shows_open_coordinations_only(client: Client) -> None:
    done = await call_ok(client, "register_coordination", tasks=tasks(1), label="done")
    await finish(client, done["coordination_id"], "t0")
    open_ = await call_ok(client, "register_coordination", tasks=tasks(1), label="open")
    view = await call_ok(client, "get_coordination")
    listed = [c["coordination_id"] for c in view["open_coordinations"]]
    assert listed == [open_["coordination_id"]]
    assert view["open_coordinations"][0]["label"] == "open"


async def test_explicit_batches_are_used_after_validation(client: Client) -> None:
    reg = await call_ok(
        client,
        "register_coordination",
        tasks=tasks(3),
        batches=[["t2"], ["t0", "t1"]],
    )
    assert [i["task_id"] for i in reg["launch"]] == ["t2"]
    assert [b["task_ids"] for b in reg["plan"]["batches"]] == [["t2"], ["t0", "t1"]]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"tasks": [{"id": "a"}, {"id": "a"}]}, "duplicate task id"),
        ({"tasks": [{"id": "a", "depends_on": ["zz"]}]}, "not one of the tasks"),
        (
            {
                "tasks": [
                    {"id": "a", "depends_on": ["b"]},
                    {"id": "b", "depends_on": ["a"]},
                ]
            },
            "dependency cycle: ",
        ),
        ({"tasks": [{"id": "has space"}]}, "tasks.0.id"),
        ({"tasks": [{"id": "x" * 65}]}, "tasks.0.id"),
        ({"tasks": [{"id": "a", "estimate_s": -1}]}, "estimate_s"),
        ({"tasks": [{"id": "a", "estimate_s": 1e12}]}, "estimate_s"),
        ({"tasks": [{"id": "a"}], "max_parallel": 0}, "max_parallel"),
        ({"tasks": [{"id": "a"}], "task_timeout_s": -5}, "task_timeout_s"),
        ({"tasks": [{"id": "a"}, {"id": "b"}], "batches": [["a", "b", "a"]]}, "batches"),
        (
            {"tasks": [{"id": "a"}, {"id": "b", "depends_on": ["a"]}], "batches": [["a", "b"]]},
            "earlier batch",
        ),
        ({"tasks": []}, "tasks"),
        ({"tasks": [{"id": f"t{i}"} for i in range(1001)]}, "limit is 1000"),
    ],
)
async def test_bad_registrations_get_clear_errors_and_change_nothing(
    client: Client, arguments: dict[str, Any], expected: str
) -> None:
    text = await call_error(client, "register_coordination", **arguments)
    assert expected in text
    listing = await call_ok(client, "get_coordination")
    assert listing["open_coordinations"] == []
    # the server keeps serving
    await call_ok(client, "plan_batches", tasks=tasks(2))


async def test_cycles_are_named_in_the_error(client: Client) -> None:
    text = await call_error(
        client,
        "plan_batches",
        tasks=[
            {"id": "a", "depends_on": ["c"]},
            {"id": "b", "depends_on": ["a"]},
            {"id": "c", "depends_on": ["b"]},
            {"id": "d"},
        ],
    )
    cycle = text.split("dependency cycle: ")[1].split(".")[0]
    assert set(cycle.split(" -> ")) == {"a", "b", "c"}
    assert "d" not in cycle.split(" -> ")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"coordination_id": "co_missing", "task_id": "t0"}, "unknown coordination_id"),
        ({"task_id": "nope"}, "has no task 'nope'"),
        ({"task_id": "t0", "summary": "x" * 8001}, "summary"),
        ({"task_id": "t0", "output": {"blob": "x" * 70_000}}, "bytes of JSON"),
        ({"task_id": "t0", "output": ["not", "an", "object"]}, "output"),
        ({"task_id": "t0", "duration_s": -1}, "duration_s"),
        ({"task_id": "t0", "tokens": -3}, "tokens"),
        ({"task_id": "t0", "status": "done"}, "status"),
    ],
)
async def test_bad_results_get_clear_errors_and_change_nothing(
    client: Client, arguments: dict[str, Any], expected: str
) -> None:
    reg = await call_ok(client, "register_coordination", tasks=tasks(1))
    call = {
        "coordination_id": reg["coordination_id"],
        "status": "succeeded",
        "summary": "ok",
        **arguments,
    }
    text = await call_error(client, "record_result", **call)
    assert expected in text
    view = await call_ok(client, "get_coordination", coordination_id=reg["coordination_id"])
    assert view["done"] == 0
    await finish(client, reg["coordination_id"], "t0")


async def test_unknown_coordination_in_get_coordination_says_how_to_list(client: Client) -> None:
    text = await call_error(client, "get_coordination", coordination_id="co_nope")
    assert "without an id" in text


async def test_structured_output_is_accepted_within_bounds(client: Client) -> None:
    reg = await call_ok(client, "register_coordination", tasks=tasks(1))
    progress = await finish(
        client, reg["coordination_id"], "t0", output={"files": ["a.py"], "score": 3}, tokens=1200
    )
    assert progress["state"] == "completed"


async def test_the_orchestrator_hears_of_a_batch_a_sub_agent_unblocked_exactly_once(
    client: Client, clock: FakeClock
) -> None:
    reg = await call_ok(client, "register_coordination", tasks=tasks(12))
    cid = reg["coordination_id"]
    first = [item["task_id"] for item in reg["launch"]]
    for task_id in first:
        progress = await finish(client, cid, task_id)
    # the last sub-agent's answer names the next wave but tells it not to launch it ...
    second = [item["task_id"] for item in progress["launch"]]
    assert len(second) == 6
    assert "get_coordination" in progress["instructions"]
    # ... and the orchestrator gets it, once, from get_coordination
    clock.advance(30)
    view = await call_ok(client, "get_coordination", coordination_id=cid)
    assert [item["task_id"] for item in view["launch"]] == second
    assert "ONE message" in view["instructions"]
    again = await call_ok(client, "get_coordination", coordination_id=cid)
    assert again["launch"] == []
    assert "waiting for 6 running" in again["instructions"]
    # its clock starts when the orchestrator heard of it, not when the sub-agent reported
    clock.advance(10)
    done = await finish(client, cid, second[0])
    assert done["recorded"] is True
    view = await call_ok(client, "get_coordination", coordination_id=cid)
    durations = {t["task_id"]: t["duration_s"] for t in view["tasks"]}
    assert durations[second[0]] == pytest.approx(10.0)


async def test_tools_list_stays_compact_and_optional_nulls_are_still_accepted(
    client: Client,
) -> None:
    listed = (await client.list_tools()).tools
    seen = json.dumps(
        [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema}
            for t in listed
        ],
        separators=(",", ":"),
    )
    assert '"title"' not in seen and '"default":null' not in seen
    assert len(seen) < 6000  # ~1,500 tokens; the budget bench has the detail
    plan = await call_ok(client, "plan_batches", tasks=tasks(3), max_parallel=None)
    assert plan["width"] == 10
