"""task.announced_at: when the orchestrator was told to launch a task

Revision ID: 0002_task_announced_at
Revises: 0001_initial
Create Date: 2026-12-04 21:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_task_announced_at"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.add_column(sa.Column("announced_at", sa.DateTime(timezone=True), nullable=True))
    # Tasks launched before this column existed were handed to the orchestrator at launch.
    op.execute("UPDATE task SET announced_at = launched_at WHERE launched_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.drop_column("announced_at")
