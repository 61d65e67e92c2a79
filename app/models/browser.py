from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app import clock
from app.models.base import Base


class BrowserSession(Base):
    """A browser session minted for one person. The pitcher token is never stored."""

    __tablename__ = "browser_sessions"
    __table_args__ = (
        Index("ix_browser_sessions_sandbox_id_id", "sandbox_id", "id"),
        # The per-user rate limit counts a person's recent mints.
        Index("ix_browser_sessions_team_id_user_minted_at", "team_id", "user", "minted_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"))
    user: Mapped[str] = mapped_column(String(200))
    session_id: Mapped[str] = mapped_column(String(20))
    permission: Mapped[str] = mapped_column(String(8))
    key_id: Mapped[str | None] = mapped_column(String(64))
    via: Mapped[str] = mapped_column(String(16))
    bootup_type: Mapped[str | None] = mapped_column(String(16))
    minted_at: Mapped[datetime] = mapped_column(default=clock.now)


class BrowserTokenKey(Base):
    """A browser-token signing key: its id (the tokens' `kid` header), its public salt and its
    lifetime. The key itself is never stored: it is derived from the configured root secret
    and the salt (app/sessions/signing_keys.py), so this row alone signs nothing."""

    __tablename__ = "browser_token_keys"

    kid: Mapped[str] = mapped_column(String(32), primary_key=True)
    salt: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    # Replicas sign with it from here on; until then they only accept it.
    activates_at: Mapped[datetime]
    # It verifies until here (None: until a later key replaces it).
    retires_at: Mapped[datetime | None]
