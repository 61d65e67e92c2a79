"""Shapes of the fork-template admin routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ForkTemplateOut(BaseModel):
    """One allowed fork source. `team` null: allowed for the whole organisation."""

    upstream_id: str
    team: str | None
    default: bool = Field(
        default=False,
        description="The configured default template: always allowed, never stored or removed.",
    )
    allowed_at: datetime | None
    allowed_by: str | None = Field(description="The admin key that allowed it.")
