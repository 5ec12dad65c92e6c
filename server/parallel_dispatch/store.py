"""The repository: the only module that knows SQL. One unit of work per tool call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Engine, case, func
from sqlalchemy import select as sa_select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlmodel import Session, col, select

from parallel_dispatch.errors import StorageError
from parallel_dispatch.lifecycle import CoordinationState, TaskState
from parallel_dispatch.models import TERMINAL_STATUSES, CoordinationSummary, ParentRef
from parallel_dispatch.planning import Observation, RunningTask
from parallel_dispatch.tables import CoordinationRow, LimiterRow, TaskRow

LIMITER_ROW_ID = 1


class Store:
    """Opens units of work on one engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        """A transaction: committed when the block ends, rolled back if it raises.

        Raises:
            StorageError: the database failed (locked for too long, unreachable, full).
        """
        try:
            with Session(self._engine, expire_on_commit=False) as session:
                yield UnitOfWork(session)
                session.commit()
        except OperationalError as exc:
            raise StorageError(
                f"the database failed: {exc.orig}. The call changed nothing; retry it."
            ) from exc
        except SQLAlchemyError as exc:
            raise StorageError(f"the database failed: {exc}. The call changed nothing.") from exc


class UnitOfWork:
    def __init__(self, session: Session) -> None:
        self._session = session

    # -- coordinations -------------------------------------------------------------------

    def add_coordination(self, coord: CoordinationState) -> None:
        self._session.add(_coordination_row(coord))
        self._session.flush()
        for task in coord.tasks.values():
            self._session.add(_task_row(coord.coordination_id, task))
            task.changed = False
        coord.changed = False

    def load(self, coordination_id: str) -> CoordinationState | None:
        """Load a coordination and its tasks, locking its row until commit (PostgreSQL)."""
        row = self._session.exec(
            select(CoordinationRow).where(CoordinationRow.id == coordination_id).with_for_update()
        ).first()
        if row is None:
            return None
        tasks = self._session.exec(
            select(TaskRow).where(TaskRow.coordination_id == coordination_id)
        ).all()
        coord = _coordination_state(row)
        for task_row in tasks:
            task = _task_state(task_row)
            coord.tasks[task.task_id] = task
        return coord

    def save(self, coord: CoordinationState) -> None:
        """Write back what changed."""
        if coord.changed:
            row = self._session.get(CoordinationRow, coord.coordination_id)
            if row is None:
                raise StorageError(f"coordination {coord.coordination_id} vanished mid-call")
            row.state = coord.state
            row.finished_at = coord.finished_at
            self._session.add(row)
            coord.changed = False
        for task in coord.tasks.values():
            if not task.changed:
                continue
            task_row = self._session.get(TaskRow, (coord.coordination_id, task.task_id))
            if task_row is None:
                raise StorageError(f"task {task.task_id} vanished mid-call")
            for name in _TASK_OUTCOME:
                setattr(task_row, name, getattr(task, name))
            self._session.add(task_row)
            task.changed = False
        self._session.flush()

    def task_span(self, coordination_id: str, task_id: str) -> tuple[str, str] | None:
        """(trace_id, span_id of the task) for nesting under a parent task, or None."""
        row = self._session.exec(
            select(CoordinationRow.trace_id, TaskRow.span_id)
            .join(TaskRow, col(TaskRow.coordination_id) == col(CoordinationRow.id))
            .where(CoordinationRow.id == coordination_id, TaskRow.task_id == task_id)
        ).first()
        return None if row is None else (row[0], row[1])

    def coordination_exists(self, coordination_id: str) -> bool:
        return self._session.get(CoordinationRow, coordination_id) is not None

    def expired_open_coordinations(self, now: datetime) -> list[str]:
        """Open coordinations holding a running task past its deadline."""
        rows = self._session.exec(
            select(TaskRow.coordination_id)
            .where(TaskRow.status == "running", col(TaskRow.deadline_at) <= now)
            .distinct()
        ).all()
        return list(rows)

    def _summaries(self, *conditions: object, limit: int) -> list[CoordinationSummary]:
        terminal = func.sum(case((col(TaskRow.status).in_(TERMINAL_STATUSES), 1), else_=0))
        query = (
            select(CoordinationRow, func.count(col(TaskRow.task_id)), terminal)
            .join(TaskRow, col(TaskRow.coordination_id) == col(CoordinationRow.id))
            .where(*conditions)  # type: ignore[arg-type]  # sqlalchemy clause elements
            .group_by(col(CoordinationRow.id))
            .order_by(col(CoordinationRow.created_at).desc())
            .limit(limit)
        )
        return [
            CoordinationSummary(
                coordination_id=row.id,
                label=row.label,
                state=row.state,
                done=int(done or 0),
                total=int(total),
                created_at=row.created_at,
                parent=_parent(row),
            )
            for row, total, done in self._session.exec(query).all()
        ]

    def open_coordinations(self, limit: int = 20) -> list[CoordinationSummary]:
        return self._summaries(CoordinationRow.state == "running", limit=limit)

    def children(self, coordination_id: str) -> list[CoordinationSummary]:
        return self._summaries(
            CoordinationRow.parent_coordination_id == coordination_id, limit=1000
        )

    # -- capacity and history --------------------------------------------------------------

    def in_flight(self, now: datetime, *, excluding: str | None = None) -> int:
        """Running tasks whose deadline has not passed, across all coordinations but
        `excluding`."""
        query = (
            select(func.count())
            .select_from(TaskRow)
            .where(TaskRow.status == "running", col(TaskRow.deadline_at) > now)
        )
        if excluding is not None:
            query = query.where(TaskRow.coordination_id != excluding)
        return int(self._session.exec(query).one())

    def lock_agent_slots(self) -> None:
        """Serialise slot accounting between concurrent registrations (a row lock on
        PostgreSQL; SQLite transactions are already serial)."""
        self._session.get(LimiterRow, LIMITER_ROW_ID, with_for_update=True)

    def running_tasks(self, now: datetime) -> list[RunningTask]:
        """Every running task whose deadline has not passed, across all coordinations."""
        rows = self._session.execute(
            sa_select(
                col(TaskRow.agent),
                col(TaskRow.launched_at),
                col(TaskRow.estimate_s),
                col(TaskRow.deadline_at),
            ).where(col(TaskRow.status) == "running", col(TaskRow.deadline_at) > now)
        ).all()
        return [
            RunningTask(agent, launched, estimate, deadline)
            for agent, launched, estimate, deadline in rows
        ]

    def observations(self, limit: int = 2000) -> list[Observation]:
        """The most recent finished tasks that ran (newest first)."""
        rows = self._session.execute(
            sa_select(
                col(TaskRow.agent),
                col(TaskRow.status),
                col(TaskRow.duration_s),
                col(TaskRow.finished_at),
                col(TaskRow.error),
            )
            .where(
                col(TaskRow.status).in_(("succeeded", "failed", "cancelled", "timed_out")),
                col(TaskRow.finished_at).is_not(None),
            )
            .order_by(col(TaskRow.finished_at).desc())
            .limit(limit)
        ).all()
        return [
            Observation(agent=a, status=s, duration_s=d, finished_at=f, error=e)
            for a, s, d, f, e in rows
            if f is not None
        ]

    def adaptive_limit(self) -> int | None:
        row = self._session.get(LimiterRow, LIMITER_ROW_ID)
        return None if row is None else row.adaptive_limit

    def adaptive_limit_with_reason(self) -> tuple[int | None, str | None]:
        row = self._session.get(LimiterRow, LIMITER_ROW_ID)
        return (None, None) if row is None else (row.adaptive_limit, row.reason)

    def set_adaptive_limit(self, limit: int | None, reason: str | None, now: datetime) -> None:
        row = self._session.get(LimiterRow, LIMITER_ROW_ID, with_for_update=True)
        if row is None:
            row = LimiterRow(id=LIMITER_ROW_ID, updated_at=now)
        row.adaptive_limit = limit
        row.reason = reason
        row.updated_at = now
        self._session.add(row)


def _parent(row: CoordinationRow) -> ParentRef | None:
    if row.parent_coordination_id is None or row.parent_task_id is None:
        return None
    return ParentRef(coordination_id=row.parent_coordination_id, task_id=row.parent_task_id)


#: Columns a task row shares, by name, with `TaskState`; the first ones change after insert.
_TASK_OUTCOME = (
    "status",
    "launched_at",
    "announced_at",
    "deadline_at",
    "finished_at",
    "duration_s",
    "tokens",
    "summary",
    "output_json",
    "error",
    "reason",
)
_TASK_FIXED = (
    "task_id",
    "agent",
    "batch_index",
    "dispatch_rank",
    "span_id",
    "prompt",
    "estimate_s",
)
#: Columns a coordination row shares, by name, with `CoordinationState` (besides its id).
_COORDINATION_FIELDS = (
    "label",
    "mode",
    "state",
    "width",
    "task_timeout_s",
    "plan_json",
    "parent_coordination_id",
    "parent_task_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "link_traceparent",
    "created_at",
    "finished_at",
)


def _coordination_row(coord: CoordinationState) -> CoordinationRow:
    fields = {name: getattr(coord, name) for name in _COORDINATION_FIELDS}
    return CoordinationRow(id=coord.coordination_id, **fields)


def _coordination_state(row: CoordinationRow) -> CoordinationState:
    fields = {name: getattr(row, name) for name in _COORDINATION_FIELDS}
    return CoordinationState(coordination_id=row.id, **fields)


def _task_row(coordination_id: str, task: TaskState) -> TaskRow:
    fields = {name: getattr(task, name) for name in (*_TASK_FIXED, *_TASK_OUTCOME)}
    return TaskRow(
        coordination_id=coordination_id, depends_on_json=json.dumps(task.depends_on), **fields
    )


def _task_state(row: TaskRow) -> TaskState:
    fields = {name: getattr(row, name) for name in (*_TASK_FIXED, *_TASK_OUTCOME)}
    return TaskState(depends_on=list(json.loads(row.depends_on_json)), **fields)
