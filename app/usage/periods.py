"""The accounting calendar: which timezone days and months are counted in.

Budgets run per calendar month and reports group by calendar day, both in one timezone per
deployment (`CORRAL_BUDGET_TIMEZONE`, UTC by default). It is a deployment-wide constant, so it
is configured once when the app is built (`configure`) rather than threaded through every
caller of `budget.month_to_date_credits`; functions still take an explicit `timezone=` for
callers that want another one.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_timezone = "UTC"


def zone(name: str) -> ZoneInfo:
    """The named IANA timezone; ValueError for an unknown name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r}") from exc


def configure(timezone: str) -> None:
    global _timezone
    zone(timezone)
    _timezone = timezone


def timezone() -> str:
    return _timezone


def month_start(at: datetime, timezone: str | None = None) -> datetime:
    """The instant the calendar month containing `at` began, in the accounting timezone."""
    tz = zone(timezone or _timezone)
    local = at.astimezone(tz)
    first = datetime(local.year, local.month, 1, tzinfo=tz)
    return first.astimezone(at.tzinfo)


def next_month_start(at: datetime, timezone: str | None = None) -> datetime:
    tz = zone(timezone or _timezone)
    local = at.astimezone(tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=tz).astimezone(at.tzinfo)

