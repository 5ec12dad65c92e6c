"""Thin MCP adapters: schemas, descriptions and annotations; the work is in the service.

Docstrings here are what an agent reads in `tools/list`: short, concrete, say when to call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import ToolAnnotations
from pydantic import Field

from parallel_dispatch.errors import DispatchError
from parallel_dispatch.models import (
    MAX_ERROR_CHARS,
    MAX_SUMMARY_CHARS,
    MAX_TOKENS,
    CoordinationView,
    Mode,
    ParentRef,
    Plan,
    Progress,
    Registration,
    ReportedStatus,
    ResultIn,
    TaskSpec,
)
from parallel_dispatch.service import DispatchService

T = TypeVar("T")

Tasks = Annotated[list[TaskSpec], Field(description="the sub-tasks", min_length=1)]
MaxParallel = Annotated[
    int | None, Field(ge=1, le=1000, description="most tasks at once (server caps apply)")
]
ModeArg = Annotated[
    Mode, Field(description="waves: batch after batch; stream: refill as each finishes")
]
CoordinationId = Annotated[str, Field(min_length=1, max_length=64)]
MAX_DURATION_S = 7 * 24 * 3600.0


@contextmanager
def _as_tool_errors(service: DispatchService, tool: str) -> Iterator[None]:
    """Turn domain errors into ToolErrors the agent can act on; time the call."""
    started = time.perf_counter()
    error_type: str | None = None
    try:
        yield
    except DispatchError as exc:
        error_type = type(exc).__name__
        raise ToolError(str(exc)) from exc
    finally:
        service.observer.tool_called(tool, time.perf_counter() - started, error_type)


def _call(service: DispatchService, tool: str, fn: Callable[[], T]) -> T:
    with _as_tool_errors(service, tool):
        return fn()


def _traceparent(ctx: Context[Any, Any] | None) -> str | None:
    if ctx is None:
        return None
    try:
        meta = ctx.request_context.meta
    except (AttributeError, ValueError, LookupError):
        return None
    value = meta.get("traceparent") if meta else None
    return value if isinstance(value, str) else None


def compact_schema(schema: Any) -> Any:
    """The advertised schema without what costs tokens and tells a model nothing.

    Drops pydantic's automatic `title`s and `default: null`, and unwraps the
    `anyOf: [X, {type: null}]` of optional arguments (optional = not `required`). Arguments
    are still validated by the full pydantic model, so accepting `null` is unchanged.
    """
    if isinstance(schema, list):
        return [compact_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if (key == "title" and isinstance(value, str)) or (key == "default" and value is None):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: compact_schema(prop) for name, prop in value.items()}
        else:
            out[key] = compact_schema(value)
    options = out.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        (kept,) = [option for option in options if option != {"type": "null"}]
        del out["anyOf"]
        out = {**kept, **out}
    return out


READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True)


def contract_tools(service: DispatchService) -> list[Tool]:
    """The four contract tools over `service`, with compact advertised input schemas."""

    def plan_batches(
        tasks: Tasks, max_parallel: MaxParallel = None, mode: ModeArg = "waves"
    ) -> Plan:
        """Split sub-tasks into batches that respect the parallel caps, dependencies, machine
        load and past durations. Read-only: call it to preview; register_coordination plans too."""
        return _call(
            service, "plan_batches", lambda: service.plan_batches(tasks, max_parallel, mode)
        )

    def register_coordination(
        tasks: Tasks,
        label: Annotated[str | None, Field(max_length=200, description="short name")] = None,
        parent: Annotated[
            ParentRef | None, Field(description="your own coordination_id/task_id if nested")
        ] = None,
        max_parallel: MaxParallel = None,
        mode: ModeArg = "waves",
        batches: Annotated[
            list[list[str]] | None, Field(description="explicit plan (task ids per batch)")
        ] = None,
        task_timeout_s: Annotated[float | None, Field(gt=0, le=MAX_DURATION_S)] = None,
        ctx: Context[Any, Any] | None = None,
    ) -> Registration:
        """Start a fan-out before launching sub-agents. Returns coordination_id and `launch`:
        start those tasks as Agent calls in ONE message, passing coordination_id and task_id."""
        traceparent = _traceparent(ctx)
        return _call(
            service,
            "register_coordination",
            lambda: service.register_coordination(
                tasks,
                label=label,
                parent=parent,
                max_parallel=max_parallel,
                mode=mode,
                batches=batches,
                task_timeout_s=task_timeout_s,
                traceparent=traceparent,
            ),
        )

    def record_result(
        coordination_id: CoordinationId,
        task_id: Annotated[str, Field(min_length=1, max_length=64)],
        status: ReportedStatus,
        summary: Annotated[
            str, Field(max_length=MAX_SUMMARY_CHARS, description="what synthesis needs")
        ],
        output: Annotated[
            dict[str, Any] | None, Field(description="structured result, <= 64 KiB JSON")
        ] = None,
        duration_s: Annotated[float | None, Field(ge=0, le=MAX_DURATION_S)] = None,
        tokens: Annotated[int | None, Field(ge=0, le=MAX_TOKENS)] = None,
        error: Annotated[str | None, Field(max_length=MAX_ERROR_CHARS)] = None,
    ) -> Progress:
        """Report a sub-task's outcome (a sub-agent for itself, or the parent for it). Returns
        what to launch next; once all tasks are done, `results` holds every summary."""
        result = ResultIn(
            coordination_id=coordination_id,
            task_id=task_id,
            status=status,
            summary=summary,
            output=output,
            duration_s=duration_s,
            tokens=tokens,
            error=error,
        )
        return _call(service, "record_result", lambda: service.record_result(result))

    def get_coordination(coordination_id: CoordinationId | None = None) -> CoordinationView:
        """A coordination's whole state and results; without an id, the open coordinations.
        Use it to resume after context compaction."""
        return _call(service, "get_coordination", lambda: service.get_coordination(coordination_id))

    tools = [
        Tool.from_function(plan_batches, annotations=READ_ONLY),
        Tool.from_function(
            register_coordination,
            annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=False),
        ),
        Tool.from_function(
            record_result,
            annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=True),
        ),
        Tool.from_function(get_coordination, annotations=READ_ONLY),
    ]
    for tool in tools:
        tool.parameters = compact_schema(tool.parameters)
    return tools
