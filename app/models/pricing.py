from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Numeric, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app import clock
from app.models.base import Base


class PriceBook(Base):
    """One version of the price book: credits per hour per tier and the USD price of a credit,
    in force from `effective_from` until the next version. Versions are never edited."""

    __tablename__ = "price_books"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    effective_from: Mapped[datetime] = mapped_column(unique=True)
    credits_per_hour: Mapped[dict[str, Any]] = mapped_column(JSONB)
    credit_usd: Mapped[Decimal] = mapped_column(Numeric(12, 6))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    created_by: Mapped[str | None] = mapped_column(String(64))
