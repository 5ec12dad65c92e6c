"""End to end with the real Claude Code CLI: a sub-agent fans out again (nested coordinations).

A scripted model (tests/support/fake_anthropic.py) plays every conversation of one run:

- the orchestrator registers ``scan`` and ``deep`` and launches both as Agent calls in one
  message (``run_in_background: false``), then asks ``get_coordination`` and ends;
- the ``scan`` sub-agent records its result and ends;
- the ``deep`` sub-agent fans out itself: it registers ``deep.a`` and ``deep.b`` with
  ``parent: {outer coordination, "deep"}``, launches both as Agent calls in one message, reads
  their results back from the inner coordination once they returned, and records ``deep`` in
  the outer coordination with a summary built from theirs;
- the grandchildren ``deep.a`` and ``deep.b`` record their results in the inner coordination.

Each request is attributed to its conversation by what it says (the orchestrator by the CLI
prompt, sub-agents by the ``coordination_id=… task_id=…`` line of their Agent prompt), not by
arrival order. What is asserted comes from outside the script: the server's record read back
by a fresh MCP client after Claude Code exited, Claude Code's stream-json output, and the
timestamps of the requests Claude Code made.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
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
    ModelRequest,
    Reply,
    Text,
    ToolResult,
    ToolUse,
    reply,
)
from tests.test_claude_code_e2e import (
    CLI_TIMEOUT_S,
    GET,
    RECORD,
    REGISTER,
    SERVER,
    TASK_MARKER,
    server_command,
    server_env,
)

pytestmark = pytest.mark.slow

ORCHESTRATOR_PROMPT = (
    "NESTED-FAN-OUT: run `scan` and `deep` with parallel-dispatch; `deep` fans out again. "
    "Report the results."
)
OUTER_TASKS = ("scan", "deep")
INNER_TASKS = ("deep.a", "deep.b")
FINAL_MARK = "All tasks finished"
# Claude Code 2.1.332 sends it on the requests of a sub-agent that another sub-agent launched.
PARENT_AGENT_HEADER = "x-claude-code-parent-agent-id"
# How long a grandchild's last reply waits for its sibling to start. Only a Claude Code that
# did not run the nested batch concurrently ever waits this long, and then the overlap check
# fails.
SIBLING_WAIT_S = 20.0


def summary_of(task_id: str) -> str:
    return f"summary of {task_id} (finding-{task_id.replace('.', '-')})"


@dataclass
class NestedScript:
    """The scripted model for every conversation of the nested run, decided per request."""

    outer_id: str | None = None
    inner_id: str | None = None
    outer_register: dict[str, Any] | None = None
    inner_register: dict[str, Any] | None = None
    outer_final: dict[str, Any] | None = None
    inner_seen_by_deep: dict[str, Any] | None = None
    deep_summary: str | None = None
    record_answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per conversation (task id, or "orchestrator"): the requests that belong to it.
    conversations: dict[str, list[ModelRequest]] = field(default_factory=dict)
    agent_results_per_turn: dict[str, list[int]] = field(default_factory=dict)
    side_requests: list[int] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, request: ModelRequest) -> Reply:
        marker = TASK_MARKER.search(request.first_user_text())
        if marker is not None and RECORD in request.tool_names:
            cid, tid = marker["cid"], marker["tid"]
            self._attribute(tid, request)
            if tid == "deep":
                return self._deep(request, cid)
            if tid in ("scan", *INNER_TASKS):
                return self._leaf(request, cid, tid)
            raise AssertionError(f"a sub-agent for an unknown task {tid!r}")
        if (
            marker is None
            and ORCHESTRATOR_PROMPT in request.first_user_text()
            and "Agent" in request.tool_names
        ):
            self._attribute("orchestrator", request)
            return self._orchestrator(request)
        # Anything else Claude Code asks on the side (titles, summaries) gets a plain answer.
        with self._changed:
            self.side_requests.append(request.seq)
        return reply(Text("ok"))

    def _attribute(self, conversation: str, request: ModelRequest) -> None:
        with self._changed:
            self.conversations.setdefault(conversation, []).append(request)
            self._changed.notify_all()

    # -- orchestrator -------------------------------------------------------------------

    def _orchestrator(self, request: ModelRequest) -> Reply:
        results = _checked(request.tool_results(), "orchestrator")
        names = {result.name for result in results}
        if not results:
            if any(message.get("role") == "assistant" for message in request.messages):
                raise AssertionError("orchestrator turn without tool results after the first")
            if REGISTER not in request.tool_names:
                offered = [name for name in request.tool_names if name.startswith("mcp__")]
                raise AssertionError(f"the model was not offered {REGISTER}; MCP tools: {offered}")
            tasks = [
                {"id": tid, "agent": "general-purpose", "prompt": f"Work on {tid}."}
                for tid in OUTER_TASKS
            ]
            return reply(ToolUse(REGISTER, {"tasks": tasks, "label": "outer fan-out"}))
        if names == {REGISTER}:
            answer = _json_of(results[0])
            with self._changed:
                self.outer_register = answer
                self.outer_id = answer["coordination_id"]
            return _launch(answer, "orchestrator")
        if names == {"Agent"}:
            self.agent_results_per_turn.setdefault("orchestrator", []).append(len(results))
            return reply(ToolUse(GET, {"coordination_id": self.outer_id}))
        if names == {GET}:
            answer = _json_of(results[0])
            if answer.get("state") != "completed" or answer.get("results") is None:
                raise AssertionError(f"outer coordination not completed after its wave: {answer}")
            self.outer_final = answer
            lines = [f"- {item['task_id']}: {item['summary']}" for item in answer["results"]]
            return reply(Text(f"{FINAL_MARK}:\n" + "\n".join(lines)))
        raise AssertionError(f"unexpected tool results in orchestrator turn: {names}")

    # -- the sub-agent that fans out again ------------------------------------------------

    def _deep(self, request: ModelRequest, outer_id: str) -> Reply:
        results = _checked(request.tool_results(), "deep")
        names = {result.name for result in results}
        if not results:
            if "Agent" not in request.tool_names:
                raise AssertionError(
                    f"the `deep` sub-agent was not offered the Agent tool: {request.tool_names}"
                )
            tasks = [
                {"id": tid, "agent": "general-purpose", "prompt": f"Work on {tid}."}
                for tid in INNER_TASKS
            ]
            arguments = {
                "tasks": tasks,
                "label": "inner fan-out of deep",
                "parent": {"coordination_id": outer_id, "task_id": "deep"},
            }
            return reply(Text("Fanning out again."), ToolUse(REGISTER, arguments))
        if names == {REGISTER}:
            answer = _json_of(results[0])
            with self._changed:
                self.inner_register = answer
                self.inner_id = answer["coordination_id"]
            return _launch(answer, "deep")
        if names == {"Agent"}:
            self.agent_results_per_turn.setdefault("deep", []).append(len(results))
            return reply(ToolUse(GET, {"coordination_id": self.inner_id}))
        if names == {GET}:
            answer = _json_of(results[0])
            if answer.get("state") != "completed" or answer.get("results") is None:
                raise AssertionError(f"inner coordination not completed after its wave: {answer}")
            self.inner_seen_by_deep = answer
            combined = "; ".join(
                f"{item['task_id']}: {item['summary']}" for item in answer["results"]
            )
            self.deep_summary = f"deep combined its children: {combined}"
            return reply(
                ToolUse(
                    RECORD,
                    {
                        "coordination_id": outer_id,
                        "task_id": "deep",
                        "status": "succeeded",
                        "summary": self.deep_summary,
                    },
                )
            )
        if names == {RECORD}:
            with self._changed:
                self.record_answers["deep"] = _json_of(results[0])
            return reply(Text("deep done"))
        raise AssertionError(f"unexpected tool results in the `deep` turn: {names}")

    # -- sub-agents that just report ------------------------------------------------------

    def _leaf(self, request: ModelRequest, cid: str, tid: str) -> Reply:
        results = _checked(request.tool_results(), tid)
        if not results:
            arguments = {
                "coordination_id": cid,
                "task_id": tid,
                "status": "succeeded",
                "summary": summary_of(tid),
            }
            return reply(ToolUse(RECORD, arguments))
        (result,) = results
        if result.name != RECORD:
            raise AssertionError(f"{tid}: unexpected tool result {result.name}")
        with self._changed:
            self.record_answers[tid] = _json_of(result)
        if tid in INNER_TASKS:
            self._wait_for_sibling(tid)
        return reply(Text(f"{tid} done"))

    def _wait_for_sibling(self, tid: str) -> None:
        """Hold a grandchild's last reply until its sibling has started (bounded).

        An instant fake would let one grandchild finish before the other was even spawned,
        which says nothing about Claude Code running the nested batch at once.
        """
        with self._changed:
            self._changed.wait_for(
                lambda: all(sibling in self.conversations for sibling in INNER_TASKS),
                SIBLING_WAIT_S,
            )


def _launch(register_answer: dict[str, Any], who: str) -> Reply:
    """Every task of the answer's ``launch`` as an Agent call, all in one message."""
    cid = register_answer["coordination_id"]
    launch = register_answer["launch"]
    if not launch:
        raise AssertionError(f"{who}: the server gave nothing to launch: {register_answer}")
    calls = [
        ToolUse(
            "Agent",
            {
                "description": f"Run {item['task_id']}",
                "subagent_type": item.get("agent") or "general-purpose",
                "run_in_background": False,
                "prompt": (
                    f"coordination_id={cid} task_id={item['task_id']}\n"
                    f"{item.get('prompt') or ''}\n"
                    f"When done, call {RECORD} with this coordination_id and task_id."
                ),
            },
        )
        for item in launch
    ]
    return reply(Text(f"Launching {len(calls)} sub-agents at once."), *calls)


def _checked(results: list[ToolResult], who: str) -> list[ToolResult]:
    for result in results:
        if result.is_error:
            raise AssertionError(f"{who}: {result.name} failed: {result.text}")
    return results


def _json_of(result: ToolResult) -> dict[str, Any]:
    try:
        answer = result.json()
    except ValueError as exc:
        raise AssertionError(f"{result.name} answered non-JSON text: {result.text[:500]}") from exc
    assert isinstance(answer, dict), answer
    return answer


async def _read_back(database: Path, outer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The outer coordination and its only child, as a fresh server process reports them."""
    params = StdioServerParameters(
        command=server_command()[0], args=server_command()[1:], env=server_env(database)
    )
    tool = GET.rsplit("__", 1)[1]
    with anyio.fail_after(60):
        async with Client(params) as client:
            outer = await client.call_tool(tool, {"coordination_id": outer_id})
            assert not outer.is_error, outer.content
            outer_view = outer.structured_content
            assert isinstance(outer_view, dict), outer
            children = outer_view.get("children") or []
            assert len(children) == 1, f"expected exactly one child coordination: {outer_view}"
            inner = await client.call_tool(
                tool, {"coordination_id": children[0]["coordination_id"]}
            )
    assert not inner.is_error, inner.content
    inner_view = inner.structured_content
    assert isinstance(inner_view, dict), inner
    return outer_view, inner_view


def _lifetime(requests: list[ModelRequest]) -> tuple[float, float]:
    """When a conversation's first request arrived and its last answer was sent."""
    ends = [request.finished_mono for request in requests]
    assert all(end is not None for end in ends), requests
    return min(r.started_mono for r in requests), max(end for end in ends if end is not None)


def test_a_sub_agent_fans_out_again_through_claude_code_and_the_server_links_it(
    tmp_path: Path,
) -> None:
    claude = claude_executable_or_skip()
    database = tmp_path / "dispatch.sqlite"
    script = NestedScript()
    run, fake, env = run_print_mode(
        claude,
        tmp_path,
        script,
        prompt=ORCHESTRATOR_PROMPT,
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
    assert not fake.policy_errors, f"{fake.policy_errors[0][1]}\n{context}"
    assert not run.timed_out, context
    assert run.returncode == 0, context

    # Claude Code's own account: the run ended successfully with the orchestrator's answer.
    events = list(stream_events(run.stdout))
    results = [event for event in events if event.get("type") == "result"]
    assert results, context
    final = results[-1]
    assert final["subtype"] == "success" and not final["is_error"], context
    assert FINAL_MARK in final["result"], context
    stats = final["subagent_stats"]
    assert stats["spawned"] == stats["completed"] == 4, stats
    assert stats["spawned_by_subagents"] == 2 and stats["max_depth"] == 2, stats
    assert stats["requested"]["foreground"] == 4, stats
    assert stats["failed"] == 0 and not any(stats["refused"].values()), stats

    # Every conversation happened, each under its own agent id; both fan-outs came back as
    # one wave of Agent results.
    assert sorted(script.conversations) == sorted(["orchestrator", *OUTER_TASKS, *INNER_TASKS])
    agent_ids = {
        name: {request.agent_id for request in requests}
        for name, requests in script.conversations.items()
    }
    assert agent_ids["orchestrator"] == {None}, agent_ids
    sub_agents = [ids for name, ids in agent_ids.items() if name != "orchestrator"]
    assert all(len(ids) == 1 and None not in ids for ids in sub_agents), agent_ids
    assert len(set.union(*sub_agents)) == len(sub_agents), f"agent ids reused: {agent_ids}"
    # Grandchildren name `deep`'s agent as their parent; the orchestrator's children name none.
    parents = {
        name: {request.headers.get(PARENT_AGENT_HEADER) for request in requests}
        for name, requests in script.conversations.items()
    }
    for tid in ("orchestrator", *OUTER_TASKS):
        assert parents[tid] == {None}, parents
    for tid in INNER_TASKS:
        assert parents[tid] == agent_ids["deep"], (parents, agent_ids)
    assert script.agent_results_per_turn == {"orchestrator": [2], "deep": [2]}, context
    assert script.outer_id is not None and script.inner_id is not None, context
    assert script.outer_register is not None and script.inner_register is not None, context
    assert [item["task_id"] for item in script.outer_register["launch"]] == list(OUTER_TASKS)
    assert [item["task_id"] for item in script.inner_register["launch"]] == list(INNER_TASKS)

    # The server's record, read back by a fresh process from the same database.
    outer, inner = anyio.run(_read_back, database, script.outer_id)
    link = {"coordination_id": script.outer_id, "task_id": "deep"}
    assert outer["state"] == "completed", outer
    assert outer["parent"] is None, outer
    assert {item["task_id"]: item["status"] for item in outer["results"]} == dict.fromkeys(
        OUTER_TASKS, "succeeded"
    ), outer
    (child,) = outer["children"]
    assert child["coordination_id"] == script.inner_id, outer["children"]
    assert child["parent"] == link, child
    assert inner["coordination_id"] == script.inner_id, inner
    assert inner["parent"] == link, inner
    assert inner["state"] == "completed", inner
    assert inner["children"] == [], inner
    inner_results = {item["task_id"]: item for item in inner["results"]}
    assert sorted(inner_results) == sorted(INNER_TASKS), inner
    for tid, item in inner_results.items():
        assert item["status"] == "succeeded", item
        assert item["summary"] == summary_of(tid), item
    outer_results = {item["task_id"]: item for item in outer["results"]}
    assert outer_results["scan"]["summary"] == summary_of("scan"), outer
    deep_summary = outer_results["deep"]["summary"]
    assert deep_summary == script.deep_summary, outer
    for tid in INNER_TASKS:
        assert inner_results[tid]["summary"] in deep_summary, (deep_summary, inner_results)
    # The orchestrator saw the same thing before it ended.
    assert script.outer_final is not None, context
    assert {item["task_id"]: item["summary"] for item in script.outer_final["results"]} == {
        tid: item["summary"] for tid, item in outer_results.items()
    }
    # The server's own clock agrees: `deep` finished after both of its children.
    deep_view = next(task for task in outer["tasks"] if task["task_id"] == "deep")
    deep_finished = datetime.fromisoformat(deep_view["finished_at"])
    assert all(
        datetime.fromisoformat(task["finished_at"]) <= deep_finished for task in inner["tasks"]
    ), (outer["tasks"], inner["tasks"])
    # Every record_result was a first report; in each coordination exactly one report
    # completed it and carried every result of that coordination.
    assert sorted(script.record_answers) == sorted([*OUTER_TASKS, *INNER_TASKS])
    assert all(answer["recorded"] is True for answer in script.record_answers.values())
    for tasks in (OUTER_TASKS, INNER_TASKS):
        completing = [
            answer
            for tid, answer in script.record_answers.items()
            if tid in tasks and answer.get("results")
        ]
        assert len(completing) == 1, script.record_answers
        assert completing[0]["state"] == "completed", completing
        assert sorted(item["task_id"] for item in completing[0]["results"]) == sorted(tasks)

    # Timing, from the requests Claude Code made: the grandchildren ran at the same time
    # (each started before the other's last answer) and both had finished before `deep`
    # asked to record its own result.
    (a_start, a_end), (b_start, b_end) = (
        _lifetime(script.conversations[tid]) for tid in INNER_TASKS
    )
    assert a_start < b_end and b_start < a_end, f"grandchildren did not overlap\n{context}"
    deep_record_request = next(
        request
        for request in script.conversations["deep"]
        if request.reply is not None
        and any(call.name == RECORD for call in request.reply.tool_uses)
    )
    assert max(a_end, b_end) < deep_record_request.started_mono, context
