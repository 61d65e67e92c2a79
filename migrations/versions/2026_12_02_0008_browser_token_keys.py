"""browser-token signing keys by id, derived from the configured root; no stored secrets

`browser_token_keys` holds one row per signing key: its id (the tokens' `kid` header), a
random salt and when it signs and stops verifying. The key itself is derived from the root
secret the replicas' configuration holds, so the table alone forges nothing.

`signing_secrets` held the generated browser-token secret in plain text: it is dropped, with
its secret. Tokens it signed (at most 15 minutes old) stop verifying at the upgrade.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "browser_token_keys",
        sa.Column("kid", sa.String(length=32), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activates_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_browser_token_keys")),
    )
    op.drop_table("signing_secrets")


def downgrade() -> None:
    # The old table comes back empty: the secret it held is gone, and the code of that
    # revision generates a new one on first use.
    op.create_table(
        "signing_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_signing_secrets")),
    )
    op.drop_table("browser_token_keys")
