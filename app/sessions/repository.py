"""Queries on minted-session records and the per-user mint counter."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.locks import Lock
from app.models import ApiKey, BrowserSession

# First half of the two-int advisory lock key of the per-user rate limit (see app.locks).
RATE_LOCK_CLASS = Lock.SESSION_RATE


async def lock_user(session: AsyncSession, team_id: str, user: str) -> None:
    """Serialise mints of one (team, user) for the rest of the transaction, in every replica."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:cls, hashtext(:who))"),
        {"cls": RATE_LOCK_CLASS, "who": f"{team_id}:{user}"},
    )


async def recent_mints(
    session: AsyncSession, team_id: str, user: str, since: datetime
) -> tuple[int, datetime | None]:
    """How many sessions (team, user) minted or is minting since `since`, and the oldest."""
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(BrowserSession.minted_at)).where(
                BrowserSession.team_id == team_id,
                BrowserSession.user == user,
                BrowserSession.minted_at > since,
            )
        )
    ).one()
    return int(count), oldest


async def add(session: AsyncSession, record: BrowserSession) -> BrowserSession:
    session.add(record)
    await session.flush()
    return record


async def settle(session: AsyncSession, record_id: int, bootup_type: str) -> None:
    await session.execute(
        update(BrowserSession).where(BrowserSession.id == record_id).values(bootup_type=bootup_type)
    )


async def discard(session: AsyncSession, record_id: int) -> None:
    await session.execute(delete(BrowserSession).where(BrowserSession.id == record_id))


async def page(
    session: AsyncSession,
    sandbox_id: str,
    *,
    user: str | None,
    limit: int,
    before_id: int | None,
) -> list[BrowserSession]:
    """Minted sessions of a sandbox, newest first. A row whose mint is still in flight (or
    whose process died before it settled) has no bootup type and is not a minted session."""
    query = select(BrowserSession).where(
        BrowserSession.sandbox_id == sandbox_id, BrowserSession.bootup_type.is_not(None)
    )
    if user is not None:
        query = query.where(BrowserSession.user == user)
    if before_id is not None:
        query = query.where(BrowserSession.id < before_id)
    rows = await session.scalars(query.order_by(BrowserSession.id.desc()).limit(limit))
    return list(rows)


async def get_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)
