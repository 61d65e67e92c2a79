from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    ARRAY,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from app import clock
from app.models.base import Base


class Team(Base):
    """A product team: the unit of ownership, limits, budget and billing.

    A limit that is NULL is unlimited (within the organisation's plan)."""

    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    deleted_at: Mapped[datetime | None]

    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_per_owner: Mapped[int | None] = mapped_column(Integer)
    max_tier: Mapped[str | None] = mapped_column(String(16))
    max_credits_per_hour: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    guaranteed: Mapped[int] = mapped_column(Integer, server_default="0")
    monthly_budget_credits: Mapped[Decimal | None] = mapped_column(Numeric(18, 4))
    budget_policy: Mapped[str] = mapped_column(String(16), server_default="block")
    budget_soft_threshold: Mapped[Decimal | None] = mapped_column(Numeric(5, 4))
    # The fractions of the budget whose crossing sends `budget.threshold_crossed`, ascending;
    # NULL takes the default (app/webhooks/alerts.py), an empty list sends none.
    budget_thresholds: Mapped[list[Decimal] | None] = mapped_column(ARRAY(Numeric(5, 4)))
    # Upstream work the team may ask per hour; NULL takes the setting (app/metering.py).
    hourly_forks: Mapped[int | None] = mapped_column(Integer)
    hourly_starts: Mapped[int | None] = mapped_column(Integer)
    hourly_sessions: Mapped[int | None] = mapped_column(Integer)


class ApiKey(Base):
    """An API key. Only the SHA-256 of its secret is stored; team_id is NULL for admin keys."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_team_id", "team_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id"))
    name: Mapped[str] = mapped_column(String(200))
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    is_admin: Mapped[bool] = mapped_column(Boolean, server_default="false")
    owner: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    # The key this one replaced in a rotation (the old one stays valid until its expires_at).
    rotated_from: Mapped[str | None] = mapped_column(String(32))
