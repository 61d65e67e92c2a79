"""one clock: no time from the database's clock; the simulated clock's shared offset

Every timestamp is now given by Corral's clock (app/clock.py), so the `now()` server defaults
go. `clock_state` holds the offset a standalone simulator's clock runs ahead by, and
`clock_replicas` which generation of it each replica has applied.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# (table, column) of every timestamp that defaulted to the database's now().
STAMPED = [
    ("org_plan", "updated_at"),
    ("browser_sessions", "minted_at"),
    ("signing_secrets", "created_at"),
    ("idempotency_keys", "created_at"),
    ("price_books", "created_at"),
    ("teams", "created_at"),
    ("api_keys", "created_at"),
    ("sandboxes", "created_at"),
    ("sandboxes", "updated_at"),
    ("sandboxes", "state_changed_at"),
    ("sandbox_events", "at"),
    ("audit_log", "at"),
]


def upgrade() -> None:
    for table, column in STAMPED:
        op.alter_column(table, column, server_default=None)
    op.create_table(
        "clock_state",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("offset_us", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_clock_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clock_state")),
    )
    op.execute("INSERT INTO clock_state (id, offset_us, generation) VALUES (1, 0, 0)")
    op.create_table(
        "clock_replicas",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_clock_replicas")),
    )


def downgrade() -> None:
    op.drop_table("clock_replicas")
    op.drop_table("clock_state")
    for table, column in STAMPED:
        op.alter_column(table, column, server_default=sa.text("now()"))
