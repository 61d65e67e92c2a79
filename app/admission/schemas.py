from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from app.inputs import Owner, RequestBody
from app.sandboxes.schemas import SANDBOX_ID_PATTERN
from app.tiers import Tier


class PlanIn(RequestBody):
    plan: Literal["build", "scale", "enterprise"]
    limit: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _limit_matches_plan(self) -> PlanIn:
        if self.plan == "enterprise" and self.limit is None:
            raise ValueError("an enterprise plan needs its limit")
        if self.plan != "enterprise" and self.limit is not None:
            raise ValueError(f"the {self.plan} plan has a fixed limit; do not send one")
        return self


class PlanOut(BaseModel):
    plan: str
    plan_limit: int
    observed_limit: int | None
    observed_at: datetime | None
    effective_limit: int


class QuotaCheck(RequestBody):
    action: Literal["create", "start"] = "create"
    tier: Tier | None = None
    owner: Owner | None = None
    sandbox_id: str | None = Field(default=None, pattern=SANDBOX_ID_PATTERN)
    team: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,63}$")


class QuotaAllowed(BaseModel):
    allowed: bool = True
    team: str
    tier: str
    owner: str | None


class TeamLimits(BaseModel):
    max_concurrent: int | None
    max_concurrent_per_owner: int | None
    max_tier: str | None
    max_credits_per_hour: Decimal | None
    guaranteed: int
    monthly_budget_credits: Decimal | None
    budget_policy: str
    budget_soft_threshold: Decimal | None


class TeamUsage(BaseModel):
    live: int
    running: int
    starting: int
    burn_credits_per_hour: Decimal
    month_to_date_credits: Decimal


class TeamHeadroom(BaseModel):
    concurrent: int | None
    credits_per_hour: Decimal | None
    budget_credits: Decimal | None


class OrgQuota(BaseModel):
    plan: str
    effective_limit: int
    live: int
    reserved_for_guarantees: int
    headroom: int


class QuotaOut(BaseModel):
    team: str
    limits: TeamLimits
    usage: TeamUsage
    headroom: TeamHeadroom
    budget_warning: bool
    org: OrgQuota
