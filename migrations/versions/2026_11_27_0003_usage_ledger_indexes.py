"""usage ledger: period range, report indexes, price-book reference

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 05:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "usage_intervals",
        sa.Column(
            "period",
            postgresql.TSTZRANGE(),
            sa.Computed("tstzrange(started_at, ended_at, '[)')", persisted=True),
            nullable=False,
        ),
    )
    op.create_index(
        "ix_usage_intervals_period", "usage_intervals", ["period"], postgresql_using="gist"
    )
    op.create_index(
        "ix_usage_intervals_team_id_ended_at", "usage_intervals", ["team_id", "ended_at"]
    )
    op.create_index(
        "ix_usage_intervals_sandbox_id_started_at",
        "usage_intervals",
        ["sandbox_id", "started_at"],
    )
    # Intervals written before the price book existed ran at the list price: the seeded version.
    op.execute(
        "UPDATE usage_intervals SET price_book_id = "
        "(SELECT id FROM price_books ORDER BY effective_from LIMIT 1) "
        "WHERE price_book_id IS NULL"
    )
    op.create_foreign_key(
        op.f("fk_usage_intervals_price_book_id_price_books"),
        "usage_intervals",
        "price_books",
        ["price_book_id"],
        ["id"],
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_usage_intervals_price_book_id_price_books"), "usage_intervals", type_="foreignkey"
    )
    op.drop_index("ix_usage_intervals_sandbox_id_started_at", table_name="usage_intervals")
    op.drop_index("ix_usage_intervals_team_id_ended_at", table_name="usage_intervals")
    op.drop_index("ix_usage_intervals_period", table_name="usage_intervals")
    op.drop_column("usage_intervals", "period")
