"""Month-to-date spend per team, the figure budgets are checked against."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Team, UsageInterval
from app.usage import amounts


def month_start(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def month_to_date_credits(session: AsyncSession, team_id: str, at: datetime) -> Decimal:
    """Credits the team's intervals have cost since the start of the month (billed per started
    minute of each interval clipped to the month; open intervals count up to `at`)."""
    start = month_start(at)
    rows = await session.execute(
        select(
            UsageInterval.started_at, UsageInterval.ended_at, UsageInterval.credits_per_hour
        ).where(
            UsageInterval.team_id == team_id,
            UsageInterval.started_at < at,
            or_(UsageInterval.ended_at.is_(None), UsageInterval.ended_at > start),
        )
    )
    total = Decimal(0)
    for started_at, ended_at, rate in rows:
        clipped = amounts.amount(max(started_at, start), min(ended_at or at, at), rate, Decimal(0))
        total += clipped.credits
    return total


@dataclass(frozen=True)
class BudgetStatus:
    spent: Decimal
    budget: Decimal | None
    remaining: Decimal | None
    threshold_crossed: bool
    exhausted: bool


async def budget_status(session: AsyncSession, team: Team, at: datetime) -> BudgetStatus:
    spent = await month_to_date_credits(session, team.id, at)
    if team.monthly_budget_credits is None:
        return BudgetStatus(spent, None, None, threshold_crossed=False, exhausted=False)
    limit = team.monthly_budget_credits
    threshold = team.budget_soft_threshold
    return BudgetStatus(
        spent=spent,
        budget=limit,
        remaining=max(limit - spent, Decimal(0)),
        threshold_crossed=threshold is not None and spent >= limit * threshold,
        exhausted=spent >= limit,
    )
