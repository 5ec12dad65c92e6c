"""The public contract's shapes: tool arguments and answers (see DESIGN.md).

These pydantic models are the tool schemas an agent sees, so field descriptions are short
and concrete. Nothing here does I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TASK_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
MAX_ESTIMATE_S = 7 * 24 * 3600.0
MAX_PROMPT_CHARS = 100_000
MAX_SUMMARY_CHARS = 8_000
MAX_ERROR_CHARS = 4_000
MAX_OUTPUT_BYTES = 64 * 1024
MAX_TOKENS = 1_000_000_000

TaskId = Annotated[str, Field(pattern=TASK_ID_PATTERN)]
Mode = Literal["waves", "stream"]
TaskStatus = Literal[
    "pending", "running", "succeeded", "failed", "cancelled", "timed_out", "skipped"
]
ReportedStatus = Literal["succeeded", "failed", "cancelled"]
CoordinationState = Literal["running", "completed", "completed_with_failures"]

TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"succeeded", "failed", "cancelled", "timed_out", "skipped"}
)
FAILED_STATUSES: frozenset[str] = frozenset({"failed", "cancelled", "timed_out", "skipped"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSpec(_Model):
    """One sub-task of a fan-out."""

    id: TaskId
    agent: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        default="general-purpose", description="subagent_type to launch"
    )
    depends_on: list[TaskId] = Field(
        default_factory=list, description="ids that must finish successfully first"
    )
    estimate_s: Annotated[float, Field(gt=0, le=MAX_ESTIMATE_S)] | None = Field(
        default=None, description="expected seconds; omit to use history"
    )
    prompt: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] | None = Field(
        default=None, description="the sub-agent's prompt, kept for re-launch"
    )


class ParentRef(_Model):
    """The task of another coordination that is fanning out (nested coordinations)."""

    coordination_id: Annotated[str, Field(min_length=1, max_length=64)]
    task_id: TaskId


class Batch(BaseModel):
    index: int
    task_ids: list[str]
    estimate_s: float | None = None


class Plan(BaseModel):
    mode: Mode
    width: int
    batches: list[Batch]
    dispatch_order: list[str]
    estimated_makespan_s: float | None = None
    lower_bound_s: float | None = None
    notes: list[str] = Field(default_factory=list)


class LaunchItem(BaseModel):
    task_id: str
    agent: str
    prompt: str | None = None


class Registration(BaseModel):
    coordination_id: str
    plan: Plan
    launch: list[LaunchItem]
    instructions: str


class TaskResult(BaseModel):
    task_id: str
    agent: str
    status: TaskStatus
    summary: str | None = None
    duration_s: float | None = None
    error: str | None = None


class Progress(BaseModel):
    coordination_id: str
    task_id: str
    recorded: bool
    done: int
    total: int
    failed: int
    state: CoordinationState
    launch: list[LaunchItem] = Field(default_factory=list)
    instructions: str = ""
    results: list[TaskResult] | None = None


class TaskView(BaseModel):
    task_id: str
    agent: str
    status: TaskStatus
    depends_on: list[str] = Field(default_factory=list)
    batch: int
    estimate_s: float | None = None
    launched_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    reason: str | None = None


class CoordinationSummary(BaseModel):
    coordination_id: str
    label: str | None = None
    state: CoordinationState
    done: int
    total: int
    created_at: datetime
    parent: ParentRef | None = None


class CoordinationView(BaseModel):
    """A coordination's whole state, or (without an id) the list of open ones."""

    coordination_id: str | None = None
    state: CoordinationState | None = None
    label: str | None = None
    parent: ParentRef | None = None
    created_at: datetime | None = None
    done: int = 0
    total: int = 0
    failed: int = 0
    plan: Plan | None = None
    tasks: list[TaskView] = Field(default_factory=list)
    launch: list[LaunchItem] = Field(default_factory=list)
    children: list[CoordinationSummary] = Field(default_factory=list)
    results: list[TaskResult] | None = None
    open_coordinations: list[CoordinationSummary] | None = None
    instructions: str = ""


class ResultIn(_Model):
    """A `record_result` call, validated (used inside the service)."""

    coordination_id: str
    task_id: str
    status: ReportedStatus
    summary: str
    output: dict[str, Any] | None = None
    duration_s: float | None = None
    tokens: int | None = None
    error: str | None = None
