from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class ReconcileRun(Base):
    """One reconcile period run by the leader: when, how long, what it found."""

    __tablename__ = "reconcile_runs"
    __table_args__ = (Index("ix_reconcile_runs_started_at", "started_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    replica: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(String(500))
    upstream_running: Mapped[int | None] = mapped_column(Integer)
    observed_limit: Mapped[int | None] = mapped_column(Integer)
    drift: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")


class Drift(Base):
    """One difference the reconciler found between the database and the upstream, and what
    it did about it."""

    __tablename__ = "drifts"
    __table_args__ = (Index("ix_drifts_run_id", "run_id"), Index("ix_drifts_at", "at"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("reconcile_runs.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    sandbox_id: Mapped[str | None] = mapped_column(String(32))
    upstream_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
