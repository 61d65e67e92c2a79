from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from app.admission.schemas import TeamLimits
from app.inputs import Instant, Owner, RequestBody
from app.tiers import Tier
from app.usage.budget import DEFAULT_THRESHOLDS

# Upstream work a team may ask per hour (app/metering.py); null takes the setting.
HourlyLimit = Annotated[int | None, Field(ge=1, le=1_000_000)]


class TeamHourly(RequestBody):
    hourly_forks: HourlyLimit = None
    hourly_starts: HourlyLimit = None
    hourly_sessions: HourlyLimit = None


class TeamCreate(TeamHourly):
    id: str = Field(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
    name: str = Field(min_length=1, max_length=200)


def _distinct_ascending(thresholds: list[Decimal] | None) -> list[Decimal] | None:
    if thresholds is None:
        return None
    if len(set(thresholds)) != len(thresholds):
        raise ValueError("each threshold may appear once")
    return sorted(thresholds)


# Fractions of the monthly budget whose crossing is announced (`budget.threshold_crossed`);
# reaching the budget itself is `budget.exhausted`, so 1 is not a threshold.
Thresholds = Annotated[
    list[Annotated[Decimal, Field(gt=0, lt=1, decimal_places=4)]] | None,
    Field(max_length=10),
    AfterValidator(_distinct_ascending),
]


class TeamPatch(TeamHourly):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    max_concurrent: int | None = Field(default=None, ge=0, le=100_000)
    max_concurrent_per_owner: int | None = Field(default=None, ge=0, le=100_000)
    max_tier: Tier | None = None
    # Decimal places as the columns keep them (numeric(…, 4)): more would be rounded away.
    max_credits_per_hour: Decimal | None = Field(
        default=None, ge=0, le=10_000_000, decimal_places=4
    )
    guaranteed: int | None = Field(default=None, ge=0, le=100_000)
    monthly_budget_credits: Decimal | None = Field(default=None, ge=0, le=10**12, decimal_places=4)
    budget_policy: Literal["block", "hibernate"] | None = None
    budget_soft_threshold: Decimal | None = Field(default=None, gt=0, le=1, decimal_places=4)
    # null: the default thresholds; []: none.
    budget_thresholds: Thresholds = None


class TeamIdentity(BaseModel):
    id: str
    name: str
    created_at: datetime


class TeamHourlyOut(BaseModel):
    hourly_forks: int | None
    hourly_starts: int | None
    hourly_sessions: int | None


class TeamOut(TeamHourlyOut, TeamLimits, TeamIdentity):
    """A team: who it is, then its limits (fields of the bases in reverse MRO order); a null
    hourly limit is the setting's."""

    model_config = ConfigDict(from_attributes=True)

    budget_thresholds: list[Decimal] = Field(
        description="Fractions of the monthly budget whose crossing sends a webhook event."
    )

    @field_validator("budget_thresholds", mode="before")
    @classmethod
    def _default_thresholds(cls, value: object) -> object:
        # Normalised, so the answer to a PATCH and a later GET show the same figures.
        if value is None:
            return list(DEFAULT_THRESHOLDS)
        if isinstance(value, list):
            return [Decimal(str(t)).normalize() for t in value]
        return value


class KeyCreate(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1, max_length=10)
    owner: Owner | None = None
    expires_at: Instant | None = None


class KeyRotate(RequestBody):
    overlap_seconds: int = Field(default=3600, ge=0, le=30 * 86400)


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    team_id: str | None
    name: str
    scopes: list[str]
    owner: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_from: str | None


class IssuedKeyOut(KeyOut):
    key: str = Field(description="The secret key. It is shown only in this answer.")
