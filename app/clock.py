"""Corral's one clock: every "now" of the service comes from `now()` (DESIGN §12)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def clamp(moment: datetime, low: datetime, high: datetime) -> datetime:
    """`moment`, but never before `low` nor after `high`."""
    return max(low, min(moment, high))
