"""Listing sandboxes: what `GET /v1/sandboxes` shows a key.

Invariants: a team key lists its own team only (a `team` filter naming another team is
ignored, not refused, as it always was), an owner-bound key lists its owner's sandboxes only
(whatever `owner` it asks for); admins list every team or the one they name. Pages are
newest first and keyset-paginated (`repository.page`), so a walk is stable while sandboxes are
created.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.identity.actor import Actor
from app.models import Sandbox
from app.sandboxes import repository


@dataclass(frozen=True)
class Filters:
    team: str | None = None
    owner: str | None = None
    states: Sequence[str] | None = None
    tier: str | None = None
    tag: str | None = None


async def page(
    session: AsyncSession, actor: Actor, where: Filters, *, limit: int, cursor: str | None
) -> tuple[list[Sandbox], str | None]:
    """One page of the sandboxes the actor may see, and the cursor of the next (None: last)."""
    return await repository.page(
        session,
        team_id=where.team if actor.is_admin else actor.team_id,
        owner=actor.owner or where.owner,
        states=where.states,
        tier=where.tier,
        tag=where.tag,
        limit=limit,
        cursor=cursor,
    )
