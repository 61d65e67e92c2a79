"""clock_state.jumping: a clock jump under way, seen by replicas after a database restart

An advance holds an advisory lock while the simulator's clock jumps; a database restart drops
that lock while the advance still has to tell the replicas the new time. `jumping` is set,
committed, before the simulator moves and cleared by the publish of the new offset, so an
operation that finds it set with no lock held checks the simulator's clock first.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "clock_state",
        sa.Column("jumping", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("clock_state", "jumping")
