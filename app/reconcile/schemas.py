"""Answers of the reconciliation admin routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    replica: str
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    outcome: str
    error: str | None
    upstream_running: int | None
    observed_limit: int | None
    # Drift found in this run, by kind.
    drift: dict[str, int]


class DriftOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    run_id: int
    at: datetime
    kind: str
    sandbox_id: str | None
    upstream_id: str | None
    action: str
    detail: dict[str, Any]


class ReconciliationOut(BaseModel):
    runs: list[RunOut]
    drifts: list[DriftOut]
