from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Identity, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class UpstreamWork(Base):
    """One fork, start or session a caller asked of the upstream, for the hourly meter."""

    __tablename__ = "upstream_work"
    __table_args__ = (
        Index("ix_upstream_work_team_id_kind_at", "team_id", "kind", "at"),
        Index("ix_upstream_work_key_id_kind_at", "key_id", "kind", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(63))
    key_id: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
