"""One method per use case: plan, register, record a result, look at a coordination.

Ties the planner, the lifecycle rules, the store and the observers together. Each method is
one unit of work (one transaction); observers hear about it only after it committed.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from parallel_dispatch import lifecycle
from parallel_dispatch.answers import (
    coordination_record,
    launch_instructions,
    launch_items,
    progress_instructions,
    record_instructions,
    results,
    task_record,
    task_view,
)
from parallel_dispatch.capacity import HostThresholds, adapt_limit
from parallel_dispatch.errors import (
    DispatchError,
    InvalidRequestError,
    UnknownCoordinationError,
    UnknownTaskError,
)
from parallel_dispatch.events import (
    CapacitySnapshot,
    DispatchObserver,
    NullObserver,
)
from parallel_dispatch.lifecycle import CoordinationState, TaskState
from parallel_dispatch.models import (
    MAX_OUTPUT_BYTES,
    CoordinationView,
    Mode,
    ParentRef,
    Plan,
    Progress,
    Registration,
    ResultIn,
    TaskSpec,
)
from parallel_dispatch.planning import (
    HostReading,
    PlanningContext,
    make_plan,
    next_slot_free_in_s,
)
from parallel_dispatch.settings import Settings
from parallel_dispatch.store import Store, UnitOfWork

logger = logging.getLogger(__name__)

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
HISTORY_WINDOW = 2000


def utc_now() -> datetime:
    return datetime.now(UTC)


class DispatchService:
    """The use cases behind the four tools."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        observer: DispatchObserver | None = None,
        clock: Callable[[], datetime] = utc_now,
        host_reader: Callable[[], HostReading] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self.observer: DispatchObserver = observer or NullObserver()
        self._clock = clock
        self._host_reader = host_reader if settings.host_pressure else None

    # -- plan_batches ----------------------------------------------------------------------

    def plan_batches(self, tasks: Sequence[TaskSpec], max_parallel: int | None, mode: Mode) -> Plan:
        """Plan without registering anything.

        Raises:
            InvalidRequestError (and subclasses) for bad input; StorageError.
        """
        self._check_request(tasks, max_parallel)
        now = self._clock()
        with self._store.unit_of_work() as uow:
            context = self._planning_context(uow, now)
        plan = make_plan(tasks, mode, max_parallel, context)
        self.observer.plan_made(plan, tool="plan_batches")
        return plan

    # -- register_coordination ---------------------------------------------------------------

    def register_coordination(
        self,
        tasks: Sequence[TaskSpec],
        *,
        label: str | None = None,
        parent: ParentRef | None = None,
        max_parallel: int | None = None,
        mode: Mode = "waves",
        batches: Sequence[Sequence[str]] | None = None,
        task_timeout_s: float | None = None,
        traceparent: str | None = None,
    ) -> Registration:
        """Store a fan-out and say what to launch now.

        Raises:
            InvalidRequestError (and subclasses), UnknownCoordinationError, UnknownTaskError,
            StorageError.
        """
        self._check_request(tasks, max_parallel)
        if not tasks:
            raise InvalidRequestError("tasks is empty; give at least one task to coordinate.")
        now = self._clock()
        with self._store.unit_of_work() as uow:
            uow.lock_agent_slots()
            plan = make_plan(tasks, mode, max_parallel, self._planning_context(uow, now), batches)
            coord = self._new_coordination(
                uow, tasks, plan, label, parent, task_timeout_s, traceparent, now
            )
            lifecycle.settle(coord, now, self._free_slots(uow, coord, now))
            launched = lifecycle.announce(coord, now)
            uow.add_coordination(coord)
        record = coordination_record(coord)
        self.observer.plan_made(plan, tool="register_coordination")
        self.observer.coordination_registered(record, [task_record(t) for t in coord.ordered()])
        launch = launch_items(launched)
        return Registration(
            coordination_id=coord.coordination_id,
            plan=plan,
            launch=launch,
            instructions=launch_instructions(coord, launch),
        )

    def _new_coordination(
        self,
        uow: UnitOfWork,
        tasks: Sequence[TaskSpec],
        plan: Plan,
        label: str | None,
        parent: ParentRef | None,
        task_timeout_s: float | None,
        traceparent: str | None,
        now: datetime,
    ) -> CoordinationState:
        trace_id = secrets.token_hex(16)
        parent_span_id: str | None = None
        if parent is not None:
            parent_span = uow.task_span(parent.coordination_id, parent.task_id)
            if parent_span is None:
                if not uow.coordination_exists(parent.coordination_id):
                    raise UnknownCoordinationError(parent.coordination_id)
                parent_coord = uow.load(parent.coordination_id)
                known = sorted(parent_coord.tasks) if parent_coord else []
                raise UnknownTaskError(parent.coordination_id, parent.task_id, known)
            trace_id, parent_span_id = parent_span
        link = traceparent if traceparent and TRACEPARENT.match(traceparent) else None
        batch_of = {tid: b.index for b in plan.batches for tid in b.task_ids}
        rank_of = {tid: i for i, tid in enumerate(plan.dispatch_order)}
        coord = CoordinationState(
            coordination_id="co_" + secrets.token_hex(8),
            mode=plan.mode,
            width=plan.width,
            task_timeout_s=task_timeout_s or self._settings.task_timeout_s,
            created_at=now,
            trace_id=trace_id,
            span_id=secrets.token_hex(8),
            plan_json=plan.model_dump_json(),
            label=label,
            parent_coordination_id=parent.coordination_id if parent else None,
            parent_task_id=parent.task_id if parent else None,
            parent_span_id=parent_span_id,
            link_traceparent=link,
        )
        for spec in tasks:
            coord.tasks[spec.id] = TaskState(
                task_id=spec.id,
                agent=spec.agent,
                depends_on=list(spec.depends_on),
                batch_index=batch_of[spec.id],
                dispatch_rank=rank_of[spec.id],
                span_id=secrets.token_hex(8),
                prompt=spec.prompt,
                estimate_s=spec.estimate_s,
            )
        return coord

    # -- record_result -------------------------------------------------------------------------

    def record_result(self, result: ResultIn) -> Progress:
        """Record one task's outcome (idempotently) and say what to launch next.

        Raises:
            UnknownCoordinationError, UnknownTaskError, ConflictingResultError,
            TaskNotReportableError, InvalidRequestError, StorageError.
        """
        if result.output is not None:
            size = len(lifecycle.output_to_json(result.output) or "")
            if size > MAX_OUTPUT_BYTES:
                raise InvalidRequestError(
                    f"output is {size} bytes of JSON; the limit is {MAX_OUTPUT_BYTES}. "
                    "Put the essentials in summary/output and leave bulk data in files."
                )
        now = self._clock()
        with self._store.unit_of_work() as uow:
            coord = self._load(uow, result.coordination_id)
            if result.task_id not in coord.tasks:
                raise UnknownTaskError(coord.coordination_id, result.task_id, sorted(coord.tasks))
            was_running = coord.state == "running"
            before = lifecycle.terminal_batches(coord)
            finished = lifecycle.expire_timeouts(coord, now)
            late = coord.tasks[result.task_id].status == "timed_out"
            recorded, task = lifecycle.apply_result(coord, result, now)
            if recorded and not late:  # a late result was already reported as timed_out
                finished.append(task)
            launched, skipped = lifecycle.settle(coord, now, self._free_slots(uow, coord, now))
            finished.extend(skipped)
            limit_change = self._adapt(uow, coord, before, now)
            uow.save(coord)
        self._notify(coord, finished, limit_change, was_running=was_running)
        launch = launch_items(launched)
        complete = coord.state != "running"
        return Progress(
            coordination_id=coord.coordination_id,
            task_id=result.task_id,
            recorded=recorded,
            done=coord.done,
            total=len(coord.tasks),
            failed=coord.failed,
            state=coord.state,
            launch=launch,
            instructions=record_instructions(coord, launch),
            results=results(coord) if complete else None,
        )

    # -- get_coordination ----------------------------------------------------------------------

    def get_coordination(self, coordination_id: str | None) -> CoordinationView:
        """The whole state of one coordination, or the recent open ones without an id.

        Touching a coordination applies due timeouts (and launches what they unblock).

        Raises:
            UnknownCoordinationError, StorageError.
        """
        now = self._clock()
        if coordination_id is None:
            self._expire_all(now)
            with self._store.unit_of_work() as uow:
                open_ = uow.open_coordinations()
            return CoordinationView(
                open_coordinations=open_,
                instructions=(
                    "Call get_coordination with one of these coordination_ids to resume it."
                    if open_
                    else "No open coordinations."
                ),
            )
        with self._store.unit_of_work() as uow:
            coord = self._load(uow, coordination_id)
            was_running = coord.state == "running"
            before = lifecycle.terminal_batches(coord)
            finished = lifecycle.expire_timeouts(coord, now)
            _, skipped = lifecycle.settle(coord, now, self._free_slots(uow, coord, now))
            finished.extend(skipped)
            launched = lifecycle.announce(coord, now)
            limit_change = self._adapt(uow, coord, before, now)
            uow.save(coord)
            children = uow.children(coord.coordination_id)
        self._notify(coord, finished, limit_change, was_running=was_running)
        launch = launch_items(launched)
        complete = coord.state != "running"
        parent = (
            ParentRef(coordination_id=coord.parent_coordination_id, task_id=coord.parent_task_id)
            if coord.parent_coordination_id and coord.parent_task_id
            else None
        )
        return CoordinationView(
            coordination_id=coord.coordination_id,
            state=coord.state,
            label=coord.label,
            parent=parent,
            created_at=coord.created_at,
            done=coord.done,
            total=len(coord.tasks),
            failed=coord.failed,
            plan=Plan.model_validate_json(coord.plan_json),
            tasks=[task_view(t) for t in coord.ordered()],
            launch=launch,
            children=children,
            results=results(coord) if complete else None,
            instructions=progress_instructions(coord, launch),
        )

    def capacity_snapshot(self) -> CapacitySnapshot:
        """Numbers for the gauges: tasks in flight, free agent slots, the adaptive limit."""
        now = self._clock()
        with self._store.unit_of_work() as uow:
            in_flight = uow.in_flight(now)
            limit = uow.adaptive_limit()
        return CapacitySnapshot(
            in_flight=in_flight,
            free_agent_slots=max(0, self._settings.max_active_agents - in_flight),
            adaptive_limit=limit,
        )

    # -- helpers ------------------------------------------------------------------------------

    def _check_request(self, tasks: Sequence[TaskSpec], max_parallel: int | None) -> None:
        if len(tasks) > self._settings.max_tasks:
            raise InvalidRequestError(
                f"{len(tasks)} tasks in one call; the limit is {self._settings.max_tasks} "
                "(PARALLEL_DISPATCH_MAX_TASKS). Split the work into several coordinations."
            )
        if max_parallel is not None and max_parallel < 1:
            raise InvalidRequestError("max_parallel must be at least 1.")

    def _planning_context(self, uow: UnitOfWork, now: datetime) -> PlanningContext:
        host = None
        if self._host_reader is not None:
            try:
                host = self._host_reader()
            except (OSError, RuntimeError) as exc:
                logger.warning("cannot read host load, planning without it: %s", exc)
        adaptive_limit, adaptive_reason = uow.adaptive_limit_with_reason()
        history = uow.observations(HISTORY_WINDOW)
        running = uow.running_tasks(now)
        return PlanningContext(
            hard_cap=self._settings.max_parallel,
            max_active_agents=self._settings.max_active_agents,
            in_flight=len(running),
            host=host,
            adaptive_limit=adaptive_limit,
            adaptive_reason=adaptive_reason,
            history=history,
            next_slot_free_in_s=next_slot_free_in_s(running, history, now),
            thresholds=HostThresholds(
                load_per_core_high=self._settings.load_per_core_high,
                memory_available_low=self._settings.memory_available_low,
            ),
        )

    def _free_slots(self, uow: UnitOfWork, coord: CoordinationState, now: datetime) -> int:
        """Agent slots the other open coordinations leave to this one."""
        others = uow.in_flight(now, excluding=coord.coordination_id)
        return self._settings.max_active_agents - others

    def _load(self, uow: UnitOfWork, coordination_id: str) -> CoordinationState:
        coord = uow.load(coordination_id)
        if coord is None:
            raise UnknownCoordinationError(coordination_id)
        return coord

    def _adapt(
        self, uow: UnitOfWork, coord: CoordinationState, before: set[int], now: datetime
    ) -> tuple[int, str] | None:
        """Feed every batch that just became terminal to the adaptive limit."""
        change: tuple[int, str] | None = None
        for index in lifecycle.finished_batches(coord, before):
            ran = [
                (t.status, t.error)
                for t in coord.tasks.values()
                if t.batch_index == index and t.status != "skipped"
            ]
            if not ran:
                continue
            current = uow.adaptive_limit()
            limit, reason = adapt_limit(
                current, self._settings.max_parallel, statuses_errors=ran, batch_width=len(ran)
            )
            if limit != current:
                uow.set_adaptive_limit(limit, reason, now)
                change = (limit, reason or "")
        return change

    def _expire_all(self, now: datetime) -> None:
        """Apply due timeouts everywhere (listing must not show lost tasks as running)."""
        with self._store.unit_of_work() as uow:
            expired = uow.expired_open_coordinations(now)
        for coordination_id in expired:
            try:
                self.get_coordination(coordination_id)
            except DispatchError as exc:
                logger.warning("could not expire %s: %s", coordination_id, exc)

    def _notify(
        self,
        coord: CoordinationState,
        finished: list[TaskState],
        limit_change: tuple[int, str] | None,
        *,
        was_running: bool,
    ) -> None:
        if limit_change is not None:
            self.observer.adaptive_limit_changed(*limit_change)
        closed = was_running and coord.state != "running"
        if not finished and not closed:
            return  # nothing new: a retry, a look at a settled coordination
        record = coordination_record(coord)
        for task in finished:
            self.observer.task_finished(record, task_record(task))
        if closed:
            self.observer.coordination_finished(record, [task_record(t) for t in coord.ordered()])
