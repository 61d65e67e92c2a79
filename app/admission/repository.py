"""Every query admission makes: the org plan row, the team's limits, the live counts.

The locking statements and the order they run in are admission's (see `app.admission.service`
for why the org row is locked first and the counts are read by a statement of their own)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import OrgPlan, Sandbox, Team
from app.sandboxes.states import LIVE, sql_list


async def plan(session: AsyncSession, *, lock: bool) -> OrgPlan:
    query = select(OrgPlan).where(OrgPlan.id == 1)
    if lock:
        query = query.with_for_update()
    row = await session.scalar(query)
    assert row is not None, "migration 0002 seeds the org_plan row"
    return row


# Locks the org row and reads the team's limits with it, in one round trip.
_LOCK_FOR_TEAM = text(
    """
    SELECT t.id, t.max_concurrent, t.max_concurrent_per_owner, t.max_tier,
           t.max_credits_per_hour, t.guaranteed, t.monthly_budget_credits,
           p.plan_limit, p.observed_limit
      FROM teams t CROSS JOIN org_plan p
     WHERE t.id = :team AND t.deleted_at IS NULL AND p.id = 1
       FOR UPDATE OF p
    """
)


async def lock_org_for_team(session: AsyncSession, team_id: str) -> Row[Any] | None:
    """Lock the org plan row and read a live team's limits and the plan's; None without
    such a team (the org row is then not locked)."""
    return (await session.execute(_LOCK_FOR_TEAM, {"team": team_id})).one_or_none()


# Every count a decision needs, in one statement, so the org lock is held for one round trip.
_COUNTS = text(
    f"""
    WITH live AS (
        SELECT team_id, owner, tier FROM sandboxes
        WHERE state IN ({sql_list(LIVE)}) AND id IS DISTINCT FROM :leaving_out
    ),
    per_team AS (SELECT team_id, count(*) AS n FROM live GROUP BY team_id),
    team_tiers AS (SELECT tier, count(*) AS n FROM live WHERE team_id = :team GROUP BY tier)
    SELECT
        (SELECT count(*) FROM live) AS org_live,
        (SELECT count(*) FROM live WHERE team_id = :team) AS team_live,
        (SELECT count(*) FROM live WHERE team_id = :team AND owner = :owner) AS owner_live,
        (SELECT coalesce(json_object_agg(tier, n), '{{}}') FROM team_tiers) AS team_tiers,
        (SELECT coalesce(sum(greatest(t.guaranteed - coalesce(p.n, 0), 0)), 0)
           FROM teams t LEFT JOIN per_team p ON p.team_id = t.id
          WHERE t.guaranteed > 0 AND t.id <> :team AND t.deleted_at IS NULL) AS reserved
    """  # noqa: S608 (the state names are the enum's constants)
)


async def counts(
    session: AsyncSession, team_id: str, owner: str | None, *, leaving_out: str | None = None
) -> Row[Any]:
    """Live sandboxes of the org, the team and the owner, the team's live ones by tier, and
    the slots other teams' unused guarantees hold back; `leaving_out` is a sandbox not
    counted (the caller's own reservation)."""
    params = {"team": team_id, "owner": owner, "leaving_out": leaving_out}
    return (await session.execute(_COUNTS, params)).one()


async def live_tiers(
    session: AsyncSession, team_id: str, *, excluding: str | None = None
) -> dict[str, int]:
    """The team's live sandboxes by tier (optionally leaving one out)."""
    query = (
        select(Sandbox.tier, func.count())
        .where(Sandbox.team_id == team_id, Sandbox.state.in_(LIVE))
        .group_by(Sandbox.tier)
    )
    if excluding is not None:
        query = query.where(Sandbox.id != excluding)
    return {tier: count for tier, count in (await session.execute(query)).all()}


async def live_by_state(session: AsyncSession, team_id: str) -> dict[str, int]:
    """The team's live sandboxes by state."""
    rows = await session.execute(
        select(Sandbox.state, func.count())
        .where(Sandbox.team_id == team_id, Sandbox.state.in_(LIVE))
        .group_by(Sandbox.state)
    )
    return {state: count for state, count in rows.all()}


async def team(session: AsyncSession, team_id: str) -> Team | None:
    return await session.get(Team, team_id)


async def team_sandbox(session: AsyncSession, team_id: str, sandbox_id: str) -> Sandbox | None:
    """The team's sandbox; None for another team's, as for one that does not exist."""
    return await session.scalar(
        select(Sandbox).where(Sandbox.id == sandbox_id, Sandbox.team_id == team_id)
    )
