"""Every query on the templates an admin allowed to be forked."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ForkTemplate


def _for(team_id: str | None) -> ColumnElement[bool]:
    """The organisation's rows (None) or one team's."""
    column = ForkTemplate.team_id
    return column.is_(None) if team_id is None else column == team_id


async def is_allowed(session: AsyncSession, upstream_id: str, team_id: str) -> bool:
    """Whether the template is allowed for the whole organisation or for this team."""
    found = await session.scalar(
        select(ForkTemplate.id)
        .where(
            ForkTemplate.upstream_id == upstream_id,
            or_(ForkTemplate.team_id.is_(None), ForkTemplate.team_id == team_id),
        )
        .limit(1)
    )
    return found is not None


async def listed(session: AsyncSession, team_id: str | None) -> list[ForkTemplate]:
    """The organisation's rows (team_id None) or one team's own, oldest first."""
    rows = await session.scalars(
        select(ForkTemplate).where(_for(team_id)).order_by(ForkTemplate.allowed_at, ForkTemplate.id)
    )
    return list(rows)


async def get(session: AsyncSession, upstream_id: str, team_id: str | None) -> ForkTemplate | None:
    found: ForkTemplate | None = await session.scalar(
        select(ForkTemplate).where(ForkTemplate.upstream_id == upstream_id, _for(team_id))
    )
    return found


async def add(
    session: AsyncSession, upstream_id: str, team_id: str | None, *, at: datetime, by: str
) -> tuple[ForkTemplate, bool]:
    """The row, inserted unless it is there already: (row, inserted). Two admins allowing the
    same template at once both succeed; the unique index keeps one row."""
    inserted = await session.scalar(
        insert(ForkTemplate)
        .values(upstream_id=upstream_id, team_id=team_id, allowed_at=at, allowed_by=by)
        .on_conflict_do_nothing(index_elements=["upstream_id", "team_id"])
        .returning(ForkTemplate.id)
    )
    row = await get(session, upstream_id, team_id)
    assert row is not None, "inserted or already there"
    return row, inserted is not None


async def remove(session: AsyncSession, upstream_id: str, team_id: str | None) -> bool:
    result = await session.execute(
        delete(ForkTemplate)
        .where(ForkTemplate.upstream_id == upstream_id, _for(team_id))
        .returning(ForkTemplate.id)
    )
    return result.first() is not None
