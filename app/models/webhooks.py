"""Webhooks (DESIGN §13): endpoints, the outbox of events, and their deliveries.

An event is written in the transaction of what caused it, with one delivery per endpoint that
subscribes to its type; the delivery worker of any replica claims due deliveries and records
each attempt. Nothing here is deleted while it may still be delivered: an endpoint is retired
(`deleted_at`), its pending deliveries cancelled.
"""

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
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app import clock
from app.models.base import Base


class WebhookEndpoint(Base):
    """A URL that receives the events it subscribes to, signed with its secret."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    description: Mapped[str | None] = mapped_column(String(500))
    # `whsec_` + base64: the receivers' copy verifies with the standardwebhooks library.
    secret: Mapped[str] = mapped_column(String(100))
    # The secret before the last rotation signs beside the new one until it expires.
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Why it was disabled, when the worker disabled it (a 410 Gone answer).
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now)
    deleted_at: Mapped[datetime | None]


class WebhookEvent(Base):
    """One event of the outbox. Its id is every delivery's `webhook-id`, the same on each
    retry; `dedupe_key` makes an event that happens once per period happen once."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("dedupe_key"),
        Index("ix_webhook_events_occurred_at", "occurred_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    occurred_at: Mapped[datetime]


class WebhookDelivery(Base):
    """One event for one endpoint: pending until an attempt succeeds or the retries run out.

    `next_attempt_at` is on Corral's clock (the back-off follows a simulated month);
    `claimed_until` is on the wall clock: it says how long the replica that claimed it may
    take before another may, which is real time whatever the simulated date."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id"),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        # The claim takes each endpoint's oldest due deliveries: without this it reads every
        # endpoint's to find one's, and one endpoint's backlog slows every claim.
        Index(
            "ix_webhook_deliveries_pending_endpoint",
            "endpoint_id",
            "next_attempt_at",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    # pending, succeeded, failed (the retries ran out), cancelled (its endpoint was deleted)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    claimed_until: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    completed_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """One try of one delivery: what the receiver answered, or why there was no answer."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery_id", "delivery_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))


class AlertCondition(Base):
    """Whether a condition that alerts on entry (the org plan full, its headroom low) holds
    now, so it alerts once per episode, not once per check."""

    __tablename__ = "alert_conditions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    active: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime]
