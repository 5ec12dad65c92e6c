"""Tool-call latency through the SDK's in-memory client, with a realistic history loaded.

Prints p50 / p95 / p99 per tool and the ratio to an uncached `tools/list` measured in the
same run (the machines are shared and noisy: compare ratios, not milliseconds). Also times
`plan_batches` in the service alone (no MCP): the "server time" the planning targets mean.

    .venv/bin/python bench/tool_latency.py [--rounds 200] [--history 2000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from parallel_dispatch.models import Mode, ResultIn, TaskSpec
from parallel_dispatch.server import build_server, build_service
from parallel_dispatch.service import DispatchService
from parallel_dispatch.settings import Settings

AGENTS = ("code-reviewer", "test-runner", "general-purpose")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load_history(service: DispatchService, results: int, rng: random.Random) -> None:
    for start in range(0, results, 500):
        specs = [
            TaskSpec(id=f"h{i}", agent=rng.choice(AGENTS))
            for i in range(start, min(results, start + 500))
        ]
        record_all(service, service.register_coordination(specs).coordination_id, specs, rng)


def record_all(
    service: DispatchService, cid: str, specs: list[TaskSpec], rng: random.Random
) -> None:
    for spec in specs:
        service.record_result(
            ResultIn(
                coordination_id=cid,
                task_id=spec.id,
                status="succeeded",
                summary="history",
                duration_s=rng.lognormvariate(4.5, 0.6),
            )
        )


def dag(n: int, rng: random.Random) -> list[dict[str, Any]]:
    tasks = []
    for i in range(n):
        deps = rng.sample(range(i), min(i, rng.randint(0, 2)))
        tasks.append(
            {"id": f"t{i}", "agent": rng.choice(AGENTS), "depends_on": [f"t{j}" for j in deps]}
        )
    return tasks


async def timed(rounds: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    samples = []
    for i in range(rounds):
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)
    return samples


async def measure(rounds: int, history: int) -> list[tuple[str, list[float]]]:
    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="tool-latency-") as scratch:
        settings = Settings(database_url=f"sqlite:///{Path(scratch) / 'b.db'}", host_pressure=False)
        service = build_service(settings)
        load_history(service, history, rng)
        ten = dag(10, rng)
        thousand = [TaskSpec.model_validate(t) for t in dag(1000, rng)]
        rows: list[tuple[str, list[float]]] = []
        async with Client(build_server(settings, service), cache=None) as client:

            async def list_tools(_: int) -> None:
                await client.list_tools()

            async def plan10(_: int) -> None:
                await client.call_tool("plan_batches", {"tasks": ten})

            registered: list[str] = []

            async def register10(_: int) -> None:
                answer = await client.call_tool("register_coordination", {"tasks": ten})
                assert answer.structured_content is not None
                registered.append(answer.structured_content["coordination_id"])

            async def record(i: int) -> None:
                cid = registered[i // 10]
                await client.call_tool(
                    "record_result",
                    {
                        "coordination_id": cid,
                        "task_id": f"t{i % 10}",
                        "status": "succeeded",
                        "summary": "done",
                    },
                )

            async def get(i: int) -> None:
                await client.call_tool("get_coordination", {"coordination_id": registered[i]})

            rows.append(("tools/list (baseline)", await timed(rounds, list_tools)))
            rows.append(("plan_batches, 10 tasks", await timed(rounds, plan10)))
            rows.append(("register_coordination, 10 tasks", await timed(rounds // 10, register10)))
            rows.append(("record_result", await timed(len(registered) * 10, record)))
            rows.append(("get_coordination, 10 tasks", await timed(len(registered), get)))
        modes: tuple[Mode, ...] = ("waves", "stream")
        for mode in modes:
            samples = []
            for _ in range(max(10, rounds // 20)):
                started = time.perf_counter()
                service.plan_batches(thousand, None, mode)
                samples.append(time.perf_counter() - started)
            rows.append((f"service plan, 1,000-task DAG, {mode}", samples))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--history", type=int, default=2000)
    args = parser.parse_args()
    rows = anyio.run(measure, args.rounds, args.history)
    baseline = statistics.median(rows[0][1])
    print(f"history: {args.history} recorded results; in-memory MCP client; SQLite file")
    print(f"{'call':<38}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'p50/base':>10}")
    for name, samples in rows:
        p50 = statistics.median(samples)
        print(
            f"{name:<38}{len(samples):>6}{p50 * 1e3:>9.2f}{percentile(samples, 0.95) * 1e3:>9.2f}"
            f"{percentile(samples, 0.99) * 1e3:>9.2f}{p50 / baseline:>10.1f}"
        )


if __name__ == "__main__":
    main()
