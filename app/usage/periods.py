"""The accounting calendar: the months budgets run in and the days reports group by.

Both are calendar months and days of one timezone per deployment, `Settings.budget_timezone`
(`CORRAL_BUDGET_TIMEZONE`, UTC by default). There is no module default: every function takes
the zone it counts in, and its callers pass the one their runtime's settings hold, so two apps
in one process (or a test) can count in different zones.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def month_start(at: datetime, timezone: ZoneInfo) -> datetime:
    """The instant the calendar month containing `at` began, in `timezone`."""
    local = at.astimezone(timezone)
    first = datetime(local.year, local.month, 1, tzinfo=timezone)
    return first.astimezone(at.tzinfo)


def next_month_start(at: datetime, timezone: ZoneInfo) -> datetime:
    local = at.astimezone(timezone)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=timezone).astimezone(at.tzinfo)
