from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app import clock
from app.models.base import Base


class OrgPlan(Base):
    """The organisation's one row: its plan and the upstream concurrency limit last observed.

    Admission locks this row (`SELECT … FOR UPDATE`) to serialise every admission decision
    across replicas; see app/admission/service.py."""

    __tablename__ = "org_plan"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    plan: Mapped[str] = mapped_column(String(16))
    plan_limit: Mapped[int] = mapped_column(Integer)
    observed_limit: Mapped[int | None] = mapped_column(Integer)
    observed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=clock.now)
