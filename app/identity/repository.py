"""Every query on teams and API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, Sandbox, Team
from app.sandboxes.states import FINAL


async def get_team(session: AsyncSession, team_id: str) -> Team | None:
    """The team, deleted or not."""
    return await session.get(Team, team_id)


async def add_team(session: AsyncSession, team: Team) -> Team:
    session.add(team)
    await session.flush()
    # Read back what the database filled in (the server defaults: guaranteed, budget_policy).
    await session.refresh(team)
    return team


async def live_teams(session: AsyncSession) -> list[Team]:
    rows = await session.scalars(select(Team).where(Team.deleted_at.is_(None)).order_by(Team.id))
    return list(rows)


async def has_unfinished_sandbox(session: AsyncSession, team_id: str) -> bool:
    """Whether the team has a sandbox that is not deleted or failed."""
    found = await session.scalar(
        select(Sandbox.id).where(Sandbox.team_id == team_id, Sandbox.state.not_in(FINAL)).limit(1)
    )
    return found is not None


async def revoke_team_keys(session: AsyncSession, team_id: str, at: datetime) -> None:
    await session.execute(
        update(ApiKey)
        .where(ApiKey.team_id == team_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=at)
    )


async def add_key(session: AsyncSession, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    await session.refresh(key)
    return key


async def get_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def keys_of(session: AsyncSession, team_id: str) -> list[ApiKey]:
    rows = await session.scalars(
        select(ApiKey).where(ApiKey.team_id == team_id).order_by(ApiKey.created_at, ApiKey.id)
    )
    return list(rows)


async def touch_key(session: AsyncSession, key_id: str, at: datetime) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))


async def has_admin_key(session: AsyncSession) -> bool:
    """Whether some admin key is not revoked."""
    found = await session.scalar(
        select(ApiKey.id).where(ApiKey.is_admin.is_(True), ApiKey.revoked_at.is_(None)).limit(1)
    )
    return found is not None
