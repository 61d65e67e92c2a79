from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Computed, ForeignKey, Index, Numeric, String, text
from sqlalchemy.dialects.postgresql import TSTZRANGE, Range
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class UsageInterval(Base):
    """One stretch of time a sandbox ran at one tier: the ledger costs are computed from.

    team_id, owner and tier are copied in so reports never join the sandboxes table, and
    credits_per_hour is the rate at the interval's start, so price changes never rewrite it."""

    __tablename__ = "usage_intervals"
    __table_args__ = (
        # At most one open interval per sandbox.
        Index(
            "uq_usage_intervals_open_per_sandbox",
            "sandbox_id",
            unique=True,
            postgresql_where=text("ended_at IS NULL"),
        ),
        Index("ix_usage_intervals_team_id_started_at", "team_id", "started_at"),
        Index("ix_usage_intervals_started_at", "started_at"),
        # Reports ask "which intervals overlap [from, to)": a GiST index on the period answers
        # that without scanning the ledger, whatever the window's age.
        Index("ix_usage_intervals_period", "period", postgresql_using="gist"),
        # Month-to-date spend (admission, budgets): the team's intervals still open or ended
        # after the month began.
        Index("ix_usage_intervals_team_id_ended_at", "team_id", "ended_at"),
        Index("ix_usage_intervals_sandbox_id_started_at", "sandbox_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"))
    owner: Mapped[str | None] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(16))
    credits_per_hour: Mapped[Decimal] = mapped_column(Numeric(14, 4))
    # The price-book version the rate came from (NULL: the contract's list price).
    price_book_id: Mapped[int | None] = mapped_column(ForeignKey("price_books.id"))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_cause: Mapped[str | None] = mapped_column(String(16))
    # [started_at, ended_at) as a range (unbounded while open; empty when zero-length), kept by
    # Postgres itself so it can never disagree with the two columns.
    period: Mapped[Range[datetime]] = mapped_column(
        TSTZRANGE,
        Computed("tstzrange(started_at, ended_at, '[)')", persisted=True),
        deferred=True,
        deferred_raiseload=True,
    )
