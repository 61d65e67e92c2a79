"""Corral's one clock: every "now" of the service comes from `now()` (DESIGN §12)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
