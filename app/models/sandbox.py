from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app import clock
from app.models.base import Base


class Sandbox(Base):
    """One upstream sandbox/VM as Corral knows it. Rows are never deleted: a deleted sandbox
    keeps its record and its usage."""

    __tablename__ = "sandboxes"
    __table_args__ = (
        Index("ix_sandboxes_team_id_created_at", "team_id", "created_at", "id"),
        Index("ix_sandboxes_state", "state"),
        # Admission counts live sandboxes per team and owner.
        Index(
            "ix_sandboxes_live_owner",
            "team_id",
            "owner",
            postgresql_where=text("state IN ('starting', 'running', 'unknown')"),
        ),
        Index("ix_sandboxes_pending", "id", postgresql_where=text("pending_intent IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    upstream_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"))
    owner: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(255))
    template: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(16))
    hibernation_timeout_seconds: Mapped[int] = mapped_column(Integer)
    privacy: Mapped[int] = mapped_column(Integer, server_default="2")
    automatic_wakeup: Mapped[bool] = mapped_column(Boolean, server_default="true")
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default="{}")
    state: Mapped[str] = mapped_column(String(16))
    last_cause: Mapped[str] = mapped_column(String(16))
    # The operation the sandbox was created under; it is tagged upstream `corral-op-<id>`.
    operation_id: Mapped[str] = mapped_column(String(32), unique=True)
    # While `starting`: when the reservation lapses and the reconciler takes over.
    reservation_expires_at: Mapped[datetime | None]
    # Corral created it (True) or found it running upstream (False, "unmanaged").
    managed: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now)
    state_changed_at: Mapped[datetime] = mapped_column(default=clock.now)
    last_started_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]

    # What the reconciler last saw upstream (DESIGN §8).
    last_seen_running_at: Mapped[datetime | None]
    # The VM's last activity, on the clock of its open interval (`reconcile.plan.ledger_activity`).
    upstream_last_active_at: Mapped[datetime | None]
    missed_polls: Mapped[int] = mapped_column(Integer, server_default="0")
    # When the reconciler last asked the upstream whether this stopped sandbox still exists
    # (app/reconcile/sweep.py): the sweep asks the least recently checked first.
    upstream_checked_at: Mapped[datetime | None]

    # A stop, delete or resize in flight: what it asked (`hibernated`, `shutdown`, `deleted`,
    # `resize:<tier>`) and when, written before the upstream call and cleared by the move that
    # records its outcome. Left behind by a process that died, it tells the reconciler.
    pending_intent: Mapped[str | None] = mapped_column(String(32))
    pending_at: Mapped[datetime | None]


class SandboxEvent(Base):
    """One state transition of a sandbox, with its cause and the actor that caused it."""

    __tablename__ = "sandbox_events"
    __table_args__ = (Index("ix_sandbox_events_sandbox_id_id", "sandbox_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id"))
    at: Mapped[datetime] = mapped_column(default=clock.now)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
