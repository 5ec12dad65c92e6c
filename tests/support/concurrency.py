"""Workers for tests that race several processes against one database."""

from __future__ import annotations

from multiprocessing.synchronize import Barrier
from typing import Any

from parallel_dispatch.models import TaskSpec
from parallel_dispatch.server import build_service
from parallel_dispatch.settings import Settings


def register_after_barrier(
    database_url: str, name: str, tasks: int, max_active_agents: int, barrier: Barrier, out: Any
) -> None:
    """Register `tasks` tasks as soon as every racer is ready; report how many launched."""
    service = build_service(
        Settings(
            database_url=database_url, host_pressure=False, max_active_agents=max_active_agents
        )
    )
    barrier.wait(timeout=60)
    registration = service.register_coordination(
        [TaskSpec(id=f"{name}{i}") for i in range(tasks)], label=name
    )
    out.put((name, len(registration.launch), registration.plan.width))


def race_registrations(
    database_url: str, racers: int, tasks: int, max_active_agents: int
) -> list[tuple[str, int, int]]:
    """Start `racers` processes registering at once; return (name, launched, width) each."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(racers)
    out = context.Queue()
    processes = [
        context.Process(
            target=register_after_barrier,
            args=(database_url, f"r{k}_", tasks, max_active_agents, barrier, out),
        )
        for k in range(racers)
    ]
    for process in processes:
        process.start()
    results = [out.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return results
