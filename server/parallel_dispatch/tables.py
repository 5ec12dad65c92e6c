"""Database rows (SQLModel). Only `store.py` and the migrations use them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Dialect, ForeignKeyConstraint, Index, Text
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone itself)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_column(nullable: bool = True) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable)


class CoordinationRow(SQLModel, table=True):
    __tablename__ = "coordination"
    __table_args__ = (
        Index("ix_coordination_state_created", "state", "created_at"),
        Index("ix_coordination_parent", "parent_coordination_id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    label: str | None = Field(default=None, max_length=200)
    mode: str = Field(max_length=16)
    state: str = Field(max_length=32)
    width: int
    task_timeout_s: float
    plan_json: str = Field(sa_column=Column(Text, nullable=False))
    parent_coordination_id: str | None = Field(
        default=None, foreign_key="coordination.id", max_length=64
    )
    parent_task_id: str | None = Field(default=None, max_length=64)
    trace_id: str = Field(max_length=32)
    span_id: str = Field(max_length=16)
    parent_span_id: str | None = Field(default=None, max_length=16)
    link_traceparent: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(sa_column=_utc_column(nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=_utc_column())


class TaskRow(SQLModel, table=True):
    __tablename__ = "task"
    __table_args__ = (
        ForeignKeyConstraint(["coordination_id"], ["coordination.id"], ondelete="CASCADE"),
        Index("ix_task_status_deadline", "status", "deadline_at"),
        Index("ix_task_finished", "finished_at"),
    )

    coordination_id: str = Field(primary_key=True, max_length=64)
    task_id: str = Field(primary_key=True, max_length=64)
    agent: str = Field(max_length=128)
    depends_on_json: str = Field(sa_column=Column(Text, nullable=False))
    batch_index: int
    dispatch_rank: int
    span_id: str = Field(max_length=16)
    prompt: str | None = Field(default=None, sa_column=Column(Text))
    estimate_s: float | None = None
    status: str = Field(max_length=16)
    launched_at: datetime | None = Field(default=None, sa_column=_utc_column())
    announced_at: datetime | None = Field(default=None, sa_column=_utc_column())
    deadline_at: datetime | None = Field(default=None, sa_column=_utc_column())
    finished_at: datetime | None = Field(default=None, sa_column=_utc_column())
    duration_s: float | None = None
    tokens: int | None = None
    summary: str | None = Field(default=None, sa_column=Column(Text))
    output_json: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    reason: str | None = Field(default=None, sa_column=Column(Text))


class LimiterRow(SQLModel, table=True):
    """The adaptive concurrency limit learned from outcomes (one row, id 1)."""

    __tablename__ = "limiter"

    id: int = Field(primary_key=True)
    adaptive_limit: int | None = None
    reason: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: datetime = Field(sa_column=_utc_column(nullable=False))
