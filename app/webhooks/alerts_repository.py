"""The queries the alert evaluator (app/webhooks/alerts.py) reads and writes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.models import OrgPlan, Sandbox, Team, UsageInterval
from app.sandboxes.states import LIVE


async def budgeted_teams(session: AsyncSession) -> list[Team]:
    return list(
        await session.scalars(
            select(Team)
            .where(Team.monthly_budget_credits.is_not(None), Team.deleted_at.is_(None))
            .order_by(Team.id)
        )
    )


async def burn_rates(session: AsyncSession) -> dict[str, Decimal]:
    """Credits per hour of each team's open intervals: what its running VMs cost now."""
    rows = await session.execute(
        select(UsageInterval.team_id, func.sum(UsageInterval.credits_per_hour))
        .where(UsageInterval.ended_at.is_(None))
        .group_by(UsageInterval.team_id)
    )
    return {team_id: Decimal(rate) for team_id, rate in rows}


async def org_occupancy(session: AsyncSession) -> tuple[int, int]:
    """(live sandboxes, effective plan limit), as admission counts them."""
    live = await session.scalar(
        select(func.count()).select_from(Sandbox).where(Sandbox.state.in_(LIVE))
    )
    plan = await session.get(OrgPlan, 1)
    limit = 0
    if plan is not None:
        limit = plan.plan_limit
        if plan.observed_limit is not None:
            limit = min(limit, plan.observed_limit)
    return int(live or 0), limit


_SET_CONDITION = text(
    """
    INSERT INTO alert_conditions (name, active, changed_at) VALUES (:name, :active, :now)
    ON CONFLICT (name) DO UPDATE SET active = EXCLUDED.active, changed_at = EXCLUDED.changed_at
     WHERE alert_conditions.active IS DISTINCT FROM EXCLUDED.active
    RETURNING active
    """
)


async def set_condition(
    db: AsyncSession | AsyncConnection, name: str, active: bool, now: datetime
) -> bool:
    """Record whether a condition holds; True only for the call that made it hold (a row that
    already said so is not updated, and two callers at once are serialised on the row)."""
    result = await db.execute(_SET_CONDITION, {"name": name, "active": active, "now": now})
    changed = result.scalar_one_or_none()
    return bool(changed)
