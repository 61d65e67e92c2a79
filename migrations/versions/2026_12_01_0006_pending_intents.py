"""pending intents: what a stop, delete or resize in flight asked, written before the call

A process (or its database) that goes away between an upstream call and its record leaves
the intent behind, so the reconciler records what was asked, when it was asked, instead of
guessing (app/reconcile/plan.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 20:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sandboxes", sa.Column("pending_intent", sa.String(length=32), nullable=True))
    op.add_column("sandboxes", sa.Column("pending_at", sa.DateTime(timezone=True), nullable=True))
    # The reconciler loads every row with an intent; there are few at any time.
    op.create_index(
        "ix_sandboxes_pending",
        "sandboxes",
        ["id"],
        unique=False,
        postgresql_where=sa.text("pending_intent IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_sandboxes_pending", table_name="sandboxes")
    op.drop_column("sandboxes", "pending_at")
    op.drop_column("sandboxes", "pending_intent")
