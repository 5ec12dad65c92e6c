"""End to end with the real Claude Code CLI: a fan-out really runs through parallel-dispatch.

A scripted model (tests/support/fake_anthropic.py) plays the orchestrator and every sub-agent.
The orchestrator registers N tasks, launches each ``launch`` list as Agent calls in one
message (``run_in_background: false``: waves), asks ``get_coordination`` after every wave, and
ends with the results. Each sub-agent calls ``record_result`` and ends its turn. Everything in
between — spawning sub-agents, giving them the MCP tools, calling the server over stdio — is
the real Claude Code and the real server.

What is asserted comes from outside the script: the server's own record (read back with a
fresh MCP client after Claude Code exited), Claude Code's stream-json output, and the
timestamps of the requests Claude Code made.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.support.claude_cli import (
    claude_executable_or_skip,
    mcp_server_log,
    run_print_mode,
    stream_events,
)
from tests.support.fake_anthropic import (
    FakeAnthropic,
    ModelRequest,
    Reply,
    Text,
    ToolResult,
    ToolUse,
    reply,
)

pytestmark = pytest.mark.slow

SERVER = "parallel-dispatch"
REGISTER = f"mcp__{SERVER}__register_coordination"
RECORD = f"mcp__{SERVER}__record_result"
GET = f"mcp__{SERVER}__get_coordination"
CLI_TIMEOUT_S = 180.0
# How long a sub-agent's last reply waits for its siblings to start. Only a Claude Code that
# did not run the batch concurrently ever waits this long, and then the overlap check fails.
SIBLING_WAIT_S = 20.0
STRAGGLER_WAIT_S = 60.0
TASK_MARKER = re.compile(
    r"coordination_id=(?P<cid>[A-Za-z0-9._:-]+) task_id=(?P<tid>[A-Za-z0-9._:-]+)"
)


def server_command() -> list[str]:
    return [sys.executable, "-m", "parallel_dispatch", "serve"]


def server_env(database: Path) -> dict[str, str]:
    return {
        "PARALLEL_DISPATCH_DATABASE_URL": f"sqlite:///{database}",
        # Host load on a busy CI machine must not change the batch shape under test.
        "PARALLEL_DISPATCH_HOST_PRESSURE": "off",
    }


def expected_batches(task_ids: list[str], cap: int = 10) -> list[list[str]]:
    """What a balanced waves plan under the default cap looks like (12 tasks: 6 + 6)."""
    count = -(-len(task_ids) // cap)
    width = -(-len(task_ids) // count)
    return [task_ids[i : i + width] for i in range(0, len(task_ids), width)]


@dataclass
class FanOutScript:
    """The scripted model: orchestrator and sub-agents, decided from each request."""

    task_count: int
    # Stream mode: Agent calls run in the background and each finish arrives as a
    # notification; the orchestrator refills from get_coordination after each one.
    background: bool = False
    max_parallel: int | None = None
    # A sub-agent that reports only after every other task has (it holds its slot till then).
    straggler: str | None = None
    coordination_id: str | None = None
    waves: list[list[str]] = field(default_factory=list)
    final_coordination: dict[str, Any] | None = None
    register_answer: dict[str, Any] | None = None
    record_answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    record_calls: Counter[str] = field(default_factory=Counter)
    agent_tasks: dict[str, str] = field(default_factory=dict)
    agent_results_per_turn: list[int] = field(default_factory=list)
    side_requests: list[int] = field(default_factory=list)
    _started: dict[str, float] = field(default_factory=dict)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _broken_waves: set[int] = field(default_factory=set)

    @property
    def task_ids(self) -> list[str]:
        return [f"task-{i:02d}" for i in range(1, self.task_count + 1)]

    def __call__(self, request: ModelRequest) -> Reply:
        if request.agent_id is not None and RECORD in request.tool_names:
            return self._sub_agent(request)
        if request.agent_id is None and "Agent" in request.tool_names:
            return self._orchestrator(request)
        # Anything else Claude Code asks on the side (titles, summaries) gets a plain answer.
        self.side_requests.append(request.seq)
        return reply(Text("ok"))

    # -- orchestrator -------------------------------------------------------------------

    def _orchestrator(self, request: ModelRequest) -> Reply:
        results = request.tool_results()
        notified = any("<task-notification>" in text for text in request.texts_since_last_turn())
        if not results and notified and self.background:
            return self._check_progress()
        if not results:
            if not self._is_first_turn(request):
                raise AssertionError("orchestrator turn without tool results after the first")
            if REGISTER not in request.tool_names:
                offered = [name for name in request.tool_names if name.startswith("mcp__")]
                raise AssertionError(f"the model was not offered {REGISTER}; MCP tools: {offered}")
            tasks = [
                {"id": tid, "agent": "general-purpose", "prompt": f"Work on {tid}."}
                for tid in self.task_ids
            ]
            arguments: dict[str, Any] = {"tasks": tasks, "label": f"fan-out of {self.task_count}"}
            if self.background:
                arguments["mode"] = "stream"
            if self.max_parallel is not None:
                arguments["max_parallel"] = self.max_parallel
            return reply(Text("Registering the fan-out."), ToolUse(REGISTER, arguments))
        for result in results:
            if result.is_error:
                raise AssertionError(f"{result.name} failed: {result.text}")
        names = {result.name for result in results}
        if names == {REGISTER}:
            answer = _json_of(results[0])
            self.register_answer = answer
            self.coordination_id = answer["coordination_id"]
            return self._launch(answer["launch"])
        if names == {"Agent"}:
            self.agent_results_per_turn.append(len(results))
            if self.background and not notified:
                return reply(Text("Launched in the background; waiting for them to finish."))
            return self._check_progress()
        if names == {GET}:
            answer = _json_of(results[0])
            if answer.get("launch"):
                return self._launch(answer["launch"])
            if self.background and answer.get("state") == "running":
                if notified:  # another sub-agent finished while we were asking
                    return self._check_progress()
                return reply(Text("Waiting for the running sub-agents."))
            if answer.get("state") == "running" or answer.get("results") is None:
                waiting = [
                    task["task_id"]
                    for task in answer.get("tasks", [])
                    if task.get("status") not in ("succeeded", "failed", "cancelled", "skipped")
                ]
                launched = {tid for wave in self.waves for tid in wave}
                raise AssertionError(
                    "every sub-agent the orchestrator launched has returned, yet get_coordination "
                    f"offers nothing to launch and is still {answer.get('state')!r}; unfinished "
                    f"{waiting}, of which never launched by the orchestrator "
                    f"{sorted(set(waiting) - launched)}; "
                    f"instructions: {answer.get('instructions')!r}"
                )
            self.final_coordination = answer
            lines = [f"- {item['task_id']}: {item['status']}" for item in answer["results"]]
            return reply(Text("All tasks finished:\n" + "\n".join(lines)))
        raise AssertionError(f"unexpected tool results in orchestrator turn: {names}")

    def _check_progress(self) -> Reply:
        return reply(ToolUse(GET, {"coordination_id": self.coordination_id}))

    def _is_first_turn(self, request: ModelRequest) -> bool:
        return not any(message.get("role") == "assistant" for message in request.messages)

    def _launch(self, launch: list[dict[str, Any]]) -> Reply:
        if not launch:
            raise AssertionError("the server gave nothing to launch")
        with self._changed:
            self.waves.append([item["task_id"] for item in launch])
        calls = [
            ToolUse(
                "Agent",
                {
                    "description": f"Run {item['task_id']}",
                    "subagent_type": item.get("agent") or "general-purpose",
                    "run_in_background": self.background,
                    "prompt": (
                        f"coordination_id={self.coordination_id} task_id={item['task_id']}\n"
                        f"{item.get('prompt') or ''}\n"
                        f"When done, call {RECORD} with this coordination_id and task_id."
                    ),
                },
            )
            for item in launch
        ]
        return reply(Text(f"Launching {len(calls)} sub-agents at once."), *calls)

    # -- sub-agents ---------------------------------------------------------------------

    def _sub_agent(self, request: ModelRequest) -> Reply:
        marker = TASK_MARKER.search(request.first_user_text())
        if marker is None:
            raise AssertionError("sub-agent prompt without coordination_id/task_id")
        cid, tid = marker["cid"], marker["tid"]
        agent_id = request.agent_id or ""
        with self._changed:
            self.agent_tasks.setdefault(agent_id, tid)
            self._started.setdefault(tid, request.started_mono)
            self._changed.notify_all()
        results = request.tool_results()
        if not results:
            if tid == self.straggler:
                self._wait_for_the_others(tid)
            with self._changed:
                self.record_calls[tid] += 1
            return reply(
                ToolUse(
                    RECORD,
                    {
                        "coordination_id": cid,
                        "task_id": tid,
                        "status": "succeeded",
                        "summary": f"summary of {tid}",
                    },
                )
            )
        (result,) = results
        if result.name != RECORD or result.is_error:
            raise AssertionError(f"{tid}: record_result failed: {result.text}")
        answer = _json_of(result)
        with self._changed:
            self.record_answers[tid] = answer
            self._changed.notify_all()
        if tid != self.straggler:
            self._wait_for_siblings(tid)
        return reply(Text(f"{tid} done"))

    def _wait_for_siblings(self, tid: str) -> None:
        """Hold a sub-agent's last reply until every task of its wave has started.

        Real sub-agents take a while; an instant fake would let an early one finish before a
        sibling was even spawned, which says nothing about Claude Code. Bounded: a wave whose
        siblings never start in time is marked broken and nobody waits for it again.
        """
        with self._changed:
            index, wave = next((i, w) for i, w in enumerate(self.waves) if tid in w)
            deadline = time.monotonic() + SIBLING_WAIT_S
            while index not in self._broken_waves and not all(
                sibling in self._started for sibling in wave
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._broken_waves.add(index)
                    break
                self._changed.wait(remaining)

    def _wait_for_the_others(self, tid: str) -> None:
        """Hold the straggler's report until every other task has reported (bounded)."""
        others = set(self.task_ids) - {tid}
        with self._changed:
            self._changed.wait_for(lambda: others <= self.record_answers.keys(), STRAGGLER_WAIT_S)


def _json_of(result: ToolResult) -> dict[str, Any]:
    try:
        answer = result.json()
    except ValueError as exc:
        raise AssertionError(f"{result.name} answered non-JSON text: {result.text[:500]}") from exc
    assert isinstance(answer, dict), answer
    return answer


def _only(items: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(items) == 1, items
    return items[0]


async def _read_back(database: Path, coordination_id: str) -> dict[str, Any]:
    """The coordination as a fresh server process reports it from the same database."""
    params = StdioServerParameters(
        command=server_command()[0], args=server_command()[1:], env=server_env(database)
    )
    with anyio.fail_after(60):
        async with Client(params) as client:
            result = await client.call_tool(
                GET.rsplit("__", 1)[1], {"coordination_id": coordination_id}
            )
    assert not result.is_error, result.content
    answer = result.structured_content
    assert isinstance(answer, dict), result
    return answer


@dataclass(frozen=True)
class FanOutRun:
    """One Claude Code run of a scripted fan-out, and what the server stored."""

    script: FanOutScript
    fake: FakeAnthropic
    final: dict[str, Any]
    stored: dict[str, Any]
    context: str


def run_fan_out(tmp_path: Path, script: FanOutScript) -> FanOutRun:
    """Run Claude Code on the script and check what holds for any fan-out that worked.

    Claude Code connected to the server, exited cleanly with the orchestrator's final answer;
    the server (read back by a fresh process) has every task succeeded with its sub-agent's
    summary; every task had exactly one sub-agent, which recorded exactly once.
    """
    claude = claude_executable_or_skip()
    database = tmp_path / "dispatch.sqlite"
    run, fake, env = run_print_mode(
        claude,
        tmp_path,
        script,
        prompt=f"Fan out {script.task_count} tasks with parallel-dispatch and report the results.",
        server=SERVER,
        mcp_server={
            "command": server_command()[0],
            "args": server_command()[1:],
            "env": server_env(database),
        },
        timeout_s=CLI_TIMEOUT_S,
    )
    context = (
        f"{run.describe()}\n--- model requests ---\n{fake.describe()}\n"
        f"side requests: {script.side_requests}\n"
        f"--- Claude Code's log of the MCP server ---\n{mcp_server_log(env, SERVER)}"
    )
    events = list(stream_events(run.stdout))
    init = next((event for event in events if event.get("subtype") == "init"), None)
    assert init is not None, context
    assert {"name": SERVER, "status": "connected"}.items() <= _only(init["mcp_servers"]).items(), (
        f"Claude Code did not connect to the server: {init['mcp_servers']}\n{context}"
    )
    assert not fake.policy_errors, f"{fake.policy_errors[0][1]}\n{context}"
    assert not run.timed_out, context
    assert run.returncode == 0, context

    results = [event for event in events if event.get("type") == "result"]
    assert results, context
    final = results[-1]
    assert final["subtype"] == "success" and not final["is_error"], context
    assert "All tasks finished" in final["result"], context
    stats = final["subagent_stats"]
    assert stats["spawned"] == stats["completed"] == script.task_count, stats
    assert stats["failed"] == 0 and not any(stats["refused"].values()), stats

    # The server, not the script, says every task succeeded with what its sub-agent reported.
    assert script.coordination_id is not None, context
    stored = anyio.run(_read_back, database, script.coordination_id)
    assert stored["state"] == "completed", stored
    by_task = {item["task_id"]: item for item in stored["results"]}
    assert sorted(by_task) == script.task_ids, stored
    for tid, item in by_task.items():
        assert item["status"] == "succeeded", item
        assert item["summary"] == f"summary of {tid}", item
    seen_by_orchestrator = script.final_coordination
    assert seen_by_orchestrator is not None, context
    assert {
        item["task_id"]: item["status"] for item in seen_by_orchestrator["results"]
    } == dict.fromkeys(script.task_ids, "succeeded")

    # Nothing lost, nothing twice: each task launched once, by one sub-agent, recorded once.
    launched = [tid for wave in script.waves for tid in wave]
    assert sorted(launched) == script.task_ids, script.waves
    assert sorted(script.agent_tasks.values()) == script.task_ids, script.agent_tasks
    assert sorted(script.record_answers) == script.task_ids
    assert set(script.record_calls.values()) == {1}, script.record_calls
    # record_result: a first report is recorded; the one that completes the fan-out carries
    # every result, so a sub-agent-driven orchestrator could synthesise from it.
    assert all(answer["recorded"] is True for answer in script.record_answers.values())
    completing = [answer for answer in script.record_answers.values() if answer.get("results")]
    assert len(completing) == 1, script.record_answers
    assert completing[0]["state"] == "completed"
    assert sorted(item["task_id"] for item in completing[0]["results"]) == script.task_ids
    return FanOutRun(script, fake, final, stored, context)


@pytest.mark.parametrize("task_count", [2, 4, 6, 8, 10, 12])
def test_claude_code_runs_each_wave_concurrently_and_every_result_arrives(
    tmp_path: Path, task_count: int
) -> None:
    done = run_fan_out(tmp_path, FanOutScript(task_count))
    script, context = done.script, done.context

    # Claude Code's own account: every sub-agent ran in the foreground.
    assert done.final["subagent_stats"]["requested"]["foreground"] == task_count
    # Batches: one wave up to the cap, two balanced waves of 6 for 12, as planned, in order.
    assert script.waves == expected_batches(script.task_ids), script.waves
    assert script.register_answer is not None
    planned = [batch["task_ids"] for batch in script.register_answer["plan"]["batches"]]
    assert planned == script.waves, script.register_answer["plan"]
    # Claude Code returned each wave's Agent results together, in one orchestrator turn.
    assert script.agent_results_per_turn == [len(wave) for wave in script.waves], context

    # Concurrency, from the request timestamps Claude Code produced: within a wave every
    # sub-agent started before any sibling finished; a wave starts after the previous ended.
    lifetimes = _agent_lifetimes(done.fake, script)
    previous_end = 0.0
    for index, wave in enumerate(script.waves):
        starts = [lifetimes[tid][0] for tid in wave]
        ends = [lifetimes[tid][1] for tid in wave]
        assert max(starts) < min(ends), (
            f"wave {index}: a sub-agent finished before a sibling started\n{context}"
        )
        assert min(starts) > previous_end, f"wave {index} overlapped the previous wave\n{context}"
        previous_end = max(ends)


def test_claude_code_refills_freed_slots_in_stream_mode_while_a_straggler_runs(
    tmp_path: Path,
) -> None:
    width = 3
    done = run_fan_out(
        tmp_path,
        FanOutScript(6, background=True, max_parallel=width, straggler="task-01"),
    )
    script, context = done.script, done.context

    assert done.final["subagent_stats"]["started_in_background"] == 6, done.final
    assert script.register_answer is not None
    assert script.register_answer["plan"]["width"] == width, script.register_answer["plan"]
    assert script.waves[0] == ["task-01", "task-02", "task-03"], script.waves
    assert all(len(wave) <= width for wave in script.waves), script.waves

    lifetimes = _agent_lifetimes(done.fake, script)
    straggler_start, straggler_end = lifetimes["task-01"]
    # Every other task, the refills included, started and finished while the straggler ran:
    # in stream mode a slow sub-agent holds one slot, not the whole fan-out.
    for tid in script.task_ids[1:]:
        start, end = lifetimes[tid]
        assert end < straggler_end, f"{tid} outlived the straggler\n{context}"
        if tid not in script.waves[0]:
            assert straggler_start < start, f"{tid} refilled before the straggler began\n{context}"
    # The first launch really ran `width` sub-agents at once, and the server's width held:
    # never more than `width` tasks were between their start and their recorded result.
    assert _most_alive_at_once(lifetimes) >= width, f"{lifetimes}\n{context}"
    busy = _busy_until_recorded(done.fake, script)
    assert _most_alive_at_once(busy) <= width, f"{busy}\n{context}"


def _most_alive_at_once(lifetimes: dict[str, tuple[float, float]]) -> int:
    edges = sorted(
        [(start, 1) for start, _ in lifetimes.values()]
        + [(end, -1) for _, end in lifetimes.values()]
    )
    alive = most = 0
    for _, change in edges:
        alive += change
        most = max(most, alive)
    return most


def _agent_lifetimes(fake: FakeAnthropic, script: FanOutScript) -> dict[str, tuple[float, float]]:
    """Per task: when its sub-agent's first request arrived and its last answer was sent."""
    lifetimes: dict[str, tuple[float, float]] = {}
    for agent_id, requests in fake.by_agent().items():
        if agent_id is None or agent_id not in script.agent_tasks:
            continue
        finished = [request.finished_mono for request in requests]
        assert all(end is not None for end in finished), fake.describe(requests)
        lifetimes[script.agent_tasks[agent_id]] = (
            min(request.started_mono for request in requests),
            max(end for end in finished if end is not None),
        )
    return lifetimes


def _busy_until_recorded(
    fake: FakeAnthropic, script: FanOutScript
) -> dict[str, tuple[float, float]]:
    """Per task: from its sub-agent's first request until record_result had answered it.

    That is when the task held a slot as far as the server can know; the sub-agent may still
    be winding down after it, and the server may rightly refill the slot meanwhile.
    """
    busy: dict[str, tuple[float, float]] = {}
    for agent_id, requests in fake.by_agent().items():
        if agent_id is None or agent_id not in script.agent_tasks:
            continue
        acknowledged = [
            request.started_mono
            for request in requests
            if any(result.name == RECORD for result in request.tool_results())
        ]
        assert acknowledged, fake.describe(requests)
        busy[script.agent_tasks[agent_id]] = (requests[0].started_mono, min(acknowledged))
    return busy
