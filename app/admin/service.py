"""Admin verbs on teams and keys: each is one identity change and its audit row.

Invariants: both are written in the caller's transaction (the request's), so neither is ever
committed without the other; nothing here commits. A verb that ends or shortens a key's life
(deleting its team, rotating it, revoking it) forgets the key in this replica's key cache;
other replicas let it go within the cache's TTL (`app.identity.cache`).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.admin.schemas import KeyCreate, KeyRotate, TeamCreate, TeamPatch
from app.audit import service as audit
from app.identity import service as identity_service
from app.identity.actor import Actor
from app.identity.cache import KeyCache
from app.identity.service import IssuedKey
from app.models import ApiKey, Team


def _plain(value: object) -> object:
    """A changed field as the audit row keeps it: decimals as strings, lists element-wise."""
    if value is None:
        return None
    if isinstance(value, list):
        return [str(item) for item in value]
    return str(value)


async def create_team(session: AsyncSession, actor: Actor, body: TeamCreate) -> Team:
    team = await identity_service.create_team(session, team_id=body.id, name=body.name)
    # Hourly limits may be set at birth; the ones not sent take the settings.
    limits = body.model_dump(exclude_unset=True, exclude={"id", "name"})
    if limits:
        team = await identity_service.update_team(session, team.id, limits)
    await audit.record(
        session,
        actor=actor.key_id,
        action="team.create",
        team_id=team.id,
        target=team.id,
        detail={k: _plain(v) for k, v in limits.items()},
    )
    return team


async def update_team(session: AsyncSession, actor: Actor, team_id: str, body: TeamPatch) -> Team:
    """Set the fields the request names; a limit sent as null becomes unlimited."""
    changes = body.model_dump(exclude_unset=True)
    # A team always has a name: a null one leaves it as it is.
    if changes.get("name", "") is None:
        changes.pop("name")
    team = await identity_service.update_team(session, team_id, changes)
    await audit.record(
        session,
        actor=actor.key_id,
        action="team.update",
        team_id=team_id,
        target=team_id,
        detail={k: _plain(v) for k, v in changes.items()},
    )
    return team


async def delete_team(session: AsyncSession, actor: Actor, team_id: str, *, keys: KeyCache) -> None:
    await identity_service.delete_team(session, team_id)
    keys.forget(team_id=team_id)
    await audit.record(
        session, actor=actor.key_id, action="team.delete", team_id=team_id, target=team_id
    )


async def issue_key(
    session: AsyncSession, actor: Actor, team_id: str, body: KeyCreate
) -> IssuedKey:
    await identity_service.get_team(session, team_id)
    issued = await identity_service.issue_key(
        session,
        team_id=team_id,
        name=body.name,
        scopes=body.scopes,
        owner=body.owner,
        expires_at=body.expires_at,
    )
    await audit.record(
        session, actor=actor.key_id, action="key.create", team_id=team_id, target=issued.row.id
    )
    return issued


async def rotate_key(
    session: AsyncSession, actor: Actor, key_id: str, body: KeyRotate, *, keys: KeyCache
) -> IssuedKey:
    # The old key's expiry changes: drop what this replica remembers of it.
    keys.forget(key_id)
    issued = await identity_service.rotate_key(
        session, key_id, overlap=timedelta(seconds=body.overlap_seconds)
    )
    await audit.record(
        session,
        actor=actor.key_id,
        action="key.rotate",
        team_id=issued.row.team_id,
        target=key_id,
        detail={"successor": issued.row.id},
    )
    return issued


async def revoke_key(session: AsyncSession, actor: Actor, key_id: str, *, keys: KeyCache) -> ApiKey:
    row = await identity_service.revoke_key(session, key_id)
    keys.forget(key_id)
    await audit.record(
        session, actor=actor.key_id, action="key.revoke", team_id=row.team_id, target=key_id
    )
    return row
