from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class ClockState(Base):
    """The one row of the simulated clock's offset, shared by every replica when the upstream
    is a standalone simulator (app/operations/clock.py); `generation` counts its changes;
    `jumping` is set from just before the simulator jumps until the new offset is published."""

    __tablename__ = "clock_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    offset_us: Mapped[int] = mapped_column(BigInteger)
    generation: Mapped[int] = mapped_column(BigInteger)
    jumping: Mapped[bool] = mapped_column(Boolean, server_default="false")


class Replica(Base):
    """A replica following the simulated clock: the generation it has applied, and when it
    last said so (wall time: a silent replica is left out of the wait)."""

    __tablename__ = "clock_replicas"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[datetime]
