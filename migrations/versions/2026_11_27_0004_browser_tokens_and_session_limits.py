"""browser tokens: shared signing secrets; index for the per-user session rate limit

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 06:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_signing_secrets")),
    )
    op.create_index(
        "ix_browser_sessions_team_id_user_minted_at",
        "browser_sessions",
        ["team_id", "user", "minted_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_browser_sessions_team_id_user_minted_at", table_name="browser_sessions")
    op.drop_table("signing_secrets")
