"""The dashboard's own setting, read like every Corral setting from a `CORRAL_` variable."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CORRAL_DASHBOARD_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    # How long a sign-in lasts (CORRAL_DASHBOARD_SESSION_HOURS): a working day by default,
    # a week at most, since the cookie stands for an API key.
    session_hours: float = Field(default=8.0, gt=0, le=7 * 24)
