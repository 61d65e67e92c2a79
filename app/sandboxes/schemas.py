from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.inputs import Owner, RequestBody
from app.tiers import Tier

# What may reach an upstream URL as a fork source: a short id or `namespace@alias`.
TEMPLATE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}(@[A-Za-z0-9][A-Za-z0-9_-]{0,63})?$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
SANDBOX_ID_PATTERN = r"^sbx_[a-z0-9]{12}$"

State = Literal["starting", "running", "hibernated", "shutdown", "failed", "deleted", "unknown"]
Privacy = Literal["public", "unlisted", "private"]
HibernationTimeout = Field(default=None, ge=1, le=86400)


class SandboxCreate(RequestBody):
    template: str | None = Field(default=None, pattern=TEMPLATE_PATTERN)
    title: str | None = Field(default=None, max_length=255)
    tier: Tier | None = None
    hibernation_timeout_seconds: int | None = HibernationTimeout
    owner: Owner | None = None
    tags: list[str] = Field(default_factory=list, max_length=10)
    privacy: Privacy = "private"
    start: bool = True
    automatic_wakeup: bool = True
    team: str | None = Field(
        default=None, pattern=r"^[a-z0-9-]{1,63}$", description="Admins only: the owning team."
    )


class SandboxFork(RequestBody):
    title: str | None = Field(default=None, max_length=255)
    tier: Tier | None = None
    hibernation_timeout_seconds: int | None = HibernationTimeout
    owner: Owner | None = None
    tags: list[str] = Field(default_factory=list, max_length=10)
    privacy: Privacy = "private"
    start: bool = True
    automatic_wakeup: bool = True


class SandboxPatch(RequestBody):
    title: str | None = Field(default=None, max_length=255)
    tier: Tier | None = None
    hibernation_timeout_seconds: int | None = HibernationTimeout


class Accrued(BaseModel):
    seconds: Decimal
    billed_minutes: int
    credits: Decimal
    usd: Decimal


class SandboxOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    upstream_id: str | None
    team: str = Field(validation_alias="team_id")
    owner: str | None
    title: str | None
    template: str
    tier: str
    hibernation_timeout_seconds: int
    privacy: int
    automatic_wakeup: bool
    tags: list[str]
    state: State
    last_cause: str
    managed: bool
    created_at: datetime
    updated_at: datetime
    state_changed_at: datetime
    last_started_at: datetime | None
    deleted_at: datetime | None
    bootup_type: str | None = None
    accrued: Accrued | None = None


class SandboxPage(BaseModel):
    items: list[SandboxOut]
    next_cursor: str | None


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    from_state: str | None
    to_state: str
    cause: str
    actor: str | None
    request_id: str | None
    detail: dict[str, object]
