from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Identity, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class ForkTemplate(Base):
    """An upstream sandbox an admin allowed to be forked: for one team, or for the whole
    organisation when `team_id` is NULL (DESIGN §15)."""

    __tablename__ = "fork_templates"
    __table_args__ = (
        Index(
            "uq_fork_templates_upstream_id_team_id",
            "upstream_id",
            "team_id",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    upstream_id: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id"))
    allowed_at: Mapped[datetime]
    allowed_by: Mapped[str] = mapped_column(String(200))
