from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class BrowserSession(Base):
    """A browser session minted for one person. The pitcher token is never stored."""

    __tablename__ = "browser_sessions"
    __table_args__ = (Index("ix_browser_sessions_sandbox_id_id", "sandbox_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"))
    user: Mapped[str] = mapped_column(String(200))
    session_id: Mapped[str] = mapped_column(String(20))
    permission: Mapped[str] = mapped_column(String(8))
    key_id: Mapped[str | None] = mapped_column(String(64))
    via: Mapped[str] = mapped_column(String(16))
    bootup_type: Mapped[str | None] = mapped_column(String(16))
    minted_at: Mapped[datetime] = mapped_column(server_default=func.now())
