"""The issue's reference fan-out, driven through any MCP client."""

from __future__ import annotations

from typing import Any

from mcp import Client

from tests.conftest import call_ok

LABEL = "twelve"


async def run_twelve_task_fan_out(client: Client) -> dict[str, Any]:
    """register 12 -> two batches of 6 -> all results -> the synthesis payload.

    Checks on the way that each wave launched is the planned batch, in plan order.
    """
    tasks = [{"id": f"t{i}", "prompt": f"part {i}"} for i in range(12)]
    reg = await call_ok(client, "register_coordination", tasks=tasks, label=LABEL)
    cid = reg["coordination_id"]
    planned = [b["task_ids"] for b in reg["plan"]["batches"]]
    assert [len(b) for b in planned] == [6, 6]
    launched = [item["task_id"] for item in reg["launch"]]
    batches = [launched]
    progress: dict[str, Any] = {}
    while launched:
        next_launch: list[str] = []
        for task_id in launched:
            progress = await call_ok(
                client,
                "record_result",
                coordination_id=cid,
                task_id=task_id,
                status="succeeded",
                summary=f"summary of {task_id}",
            )
            next_launch += [item["task_id"] for item in progress["launch"]]
        launched = next_launch
        if launched:
            assert progress["state"] == "running"
            batches.append(launched)
    assert [sorted(b) for b in batches] == [sorted(b) for b in planned]
    assert batches[0] == planned[0]
    return progress
