"""fork templates an admin allowed; the meter of upstream work per team and key

`fork_templates` lists the upstream sandboxes that may be forked besides the configured
default template and a team's own sandboxes (DESIGN §15): a row with no team is allowed for
the whole organisation, a row with a team for that team only.

`upstream_work` holds one row per fork, start or session a caller asked of the upstream, so
the hourly meter per team and per key holds across replicas; rows older than the longest
window are pruned by the budget job.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fork_templates",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("upstream_id", sa.String(length=64), nullable=False),
        sa.Column("team_id", sa.String(length=63), nullable=True),
        sa.Column("allowed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("allowed_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_fork_templates_team_id_teams")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fork_templates")),
    )
    # One row per (template, team), the organisation-wide row included.
    op.create_index(
        "uq_fork_templates_upstream_id_team_id",
        "fork_templates",
        ["upstream_id", "team_id"],
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    op.create_table(
        "upstream_work",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("team_id", sa.String(length=63), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_work")),
    )
    op.create_index("ix_upstream_work_team_id_kind_at", "upstream_work", ["team_id", "kind", "at"])
    op.create_index("ix_upstream_work_key_id_kind_at", "upstream_work", ["key_id", "kind", "at"])
    for column in ("hourly_forks", "hourly_starts", "hourly_sessions"):
        op.add_column("teams", sa.Column(column, sa.Integer(), nullable=True))


def downgrade() -> None:
    for column in ("hourly_sessions", "hourly_starts", "hourly_forks"):
        op.drop_column("teams", column)
    op.drop_index("ix_upstream_work_key_id_kind_at", table_name="upstream_work")
    op.drop_index("ix_upstream_work_team_id_kind_at", table_name="upstream_work")
    op.drop_table("upstream_work")
    op.drop_index("uq_fork_templates_upstream_id_team_id", table_name="fork_templates")
    op.drop_table("fork_templates")
