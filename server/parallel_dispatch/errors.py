"""The one exception tree of parallel-dispatch.

Domain code raises these; `tools.py` turns them into MCP tool errors. Every message says
what was wrong and what the caller should do next, because an agent reads it.
"""

from __future__ import annotations

from collections.abc import Sequence


class DispatchError(Exception):
    """Base of every error parallel-dispatch raises on purpose."""


class InvalidRequestError(DispatchError):
    """The arguments are well-formed JSON but break a rule (bounds, sizes, shapes)."""


class DuplicateTaskError(InvalidRequestError):
    """Two tasks in one call share an id."""

    def __init__(self, task_ids: Sequence[str]) -> None:
        self.task_ids = list(task_ids)
        shown = ", ".join(repr(t) for t in self.task_ids[:10])
        super().__init__(
            f"duplicate task id(s): {shown}. Task ids must be unique within a call; "
            "rename the duplicates and call again."
        )


class UnknownDependencyError(InvalidRequestError):
    """A task depends on an id that is not in the same call."""

    def __init__(self, task_id: str, missing: str) -> None:
        self.task_id = task_id
        self.missing = missing
        super().__init__(
            f"task {task_id!r} depends on {missing!r}, which is not one of the tasks in this "
            "call. Add that task, or remove it from depends_on."
        )


class DependencyCycleError(InvalidRequestError):
    """The dependencies form a cycle, so no order can satisfy them."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        path = " -> ".join([*self.cycle, self.cycle[0]]) if self.cycle else "?"
        super().__init__(
            f"dependency cycle: {path}. Remove one of these depends_on links and call again."
        )


class InvalidPlanError(InvalidRequestError):
    """An explicit `batches` plan does not fit the tasks, the width or the dependencies."""


class UnknownCoordinationError(DispatchError):
    """No coordination has the given id."""

    def __init__(self, coordination_id: str) -> None:
        self.coordination_id = coordination_id
        super().__init__(
            f"unknown coordination_id {coordination_id!r}. Call get_coordination without an id "
            "to list the open coordinations, or register_coordination to start one."
        )


class UnknownTaskError(DispatchError):
    """The coordination has no task with the given id."""

    def __init__(self, coordination_id: str, task_id: str, known: Sequence[str]) -> None:
        self.coordination_id = coordination_id
        self.task_id = task_id
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        super().__init__(
            f"coordination {coordination_id!r} has no task {task_id!r}. Its tasks are: {shown}."
        )


class ConflictingResultError(DispatchError):
    """A different result was already recorded for the task; results are final."""

    def __init__(self, task_id: str, recorded_status: str, differences: Sequence[str]) -> None:
        self.task_id = task_id
        self.recorded_status = recorded_status
        super().__init__(
            f"task {task_id!r} already has a final result ({recorded_status}); this call differs "
            f"in {', '.join(differences)}. Results are final: do not record it again. Call "
            "get_coordination to see what was recorded."
        )


class TaskNotReportableError(DispatchError):
    """The task is in a state that accepts no result (e.g. skipped or timed out)."""


class StorageError(DispatchError):
    """The database cannot be opened, migrated or written."""
