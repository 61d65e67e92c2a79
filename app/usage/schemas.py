"""Request and response bodies of the usage routes. Money is Decimal, rendered as JSON strings."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.inputs import Instant, RequestBody
from app.tiers import TIERS

RATE_PLACES = 4  # price_books rates end up in usage_intervals.credits_per_hour numeric(14, 4)
CREDIT_USD_PLACES = 6  # price_books.credit_usd numeric(12, 6)


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _positive(value: Decimal, *, places: int, limit: Decimal, what: str) -> Decimal:
    if not value.is_finite() or value <= 0:
        raise ValueError(f"{what} must be a positive decimal")
    if _places(value.normalize()) > places:
        raise ValueError(f"{what} has more than {places} decimal places")
    if value >= limit:
        raise ValueError(f"{what} must be below {limit}")
    return value


class PriceVersionIn(RequestBody):
    """A new price-book version. Decimals may be JSON strings (recommended) or numbers."""

    effective_from: Instant | None = Field(
        default=None, description="When the version takes effect; absent means now."
    )
    credits_per_hour: dict[str, Decimal] = Field(description="A rate for every tier.")
    credit_usd: Decimal

    @field_validator("credits_per_hour")
    @classmethod
    def _every_tier(cls, rates: dict[str, Decimal]) -> dict[str, Decimal]:
        missing = [t for t in TIERS if t not in rates]
        unknown = sorted(set(rates) - set(TIERS))
        if missing or unknown:
            raise ValueError(f"rates must name exactly the tiers {list(TIERS)}")
        return {
            tier: _positive(
                rates[tier], places=RATE_PLACES, limit=Decimal(10) ** 10, what=f"rate of {tier}"
            )
            for tier in TIERS
        }

    @field_validator("credit_usd")
    @classmethod
    def _credit_usd(cls, value: Decimal) -> Decimal:
        return _positive(value, places=CREDIT_USD_PLACES, limit=Decimal(10) ** 6, what="credit_usd")


class PriceVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    effective_from: datetime
    credits_per_hour: dict[str, Decimal]
    credit_usd: Decimal
    created_at: datetime
    created_by: str | None


class PriceBookOut(BaseModel):
    at: datetime
    current: PriceVersionOut
    versions: list[PriceVersionOut] = Field(description="Every version, oldest first.")


class UsageFigures(BaseModel):
    seconds: Decimal = Field(description="Exact seconds run, to the microsecond.")
    billed_minutes: int = Field(description="Minutes billed: per started minute of each run.")
    credits: Decimal = Field(description="Credits, rounded half-up to 6 places.")
    usd: Decimal = Field(description="US dollars, rounded half-up to 6 places.")


class UsageRow(UsageFigures):
    """One group of the report; only the keys named in group_by are present."""

    team: str | None = None
    owner: str | None = None
    tier: str | None = None
    sandbox: str | None = None
    day: date | None = None


class UsageReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: datetime = Field(alias="from")
    to: datetime
    at: datetime = Field(description="Open intervals are counted up to this instant.")
    timezone: str
    group_by: list[str]
    team: str | None
    rows: list[UsageRow]
    total: UsageFigures


class CostLine(UsageFigures):
    """One interval, or the part of it under one price-book version."""

    interval_id: int
    tier: str
    started_at: datetime
    ended_at: datetime | None = Field(description="None while the interval is open.")
    end_cause: str | None
    from_: datetime = Field(alias="from", description="Start of the part priced on this line.")
    to: datetime = Field(description="End of the part priced on this line.")
    price_book_id: int
    price_effective_from: datetime
    credits_per_hour: Decimal
    credit_usd: Decimal

    model_config = ConfigDict(populate_by_name=True)


class CostStatement(BaseModel):
    sandbox_id: str
    team: str
    owner: str | None
    at: datetime
    lines: list[CostLine]
    total: UsageFigures
