"""Teams and API keys.

Invariants: a team id is a slug; a key belongs to one team (or is an admin key with no team),
never to `unassigned` (the reconciler's team of adopted VMs, seeded by the migrations);
a key's secret exists only in the creation answer, the database keeps its SHA-256; a revoked or
expired key authenticates nothing from the next request on (no cache holds keys).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession

from app import clock, inputs
from app.errors import BearerRejected, Conflict, TeamNotFound, Unprocessable
from app.identity import keys, repository
from app.identity.actor import Actor
from app.identity.errors import AdminScopeOnTeamKey, KeyNotFound, ReservedTeam, UnknownScope
from app.models import ApiKey, Team

# last_used_at is a hint, not a log: write it at most this often per key.
_LAST_USED_RESOLUTION = timedelta(seconds=60)
ENV_ADMIN_KEY_ID = "env-admin"
# Where the reconciler records VMs that run upstream without a row (app.reconcile.unmanaged).
UNASSIGNED_TEAM = "unassigned"


@dataclass(frozen=True)
class IssuedKey:
    row: ApiKey
    token: str


async def create_team(session: AsyncSession, *, team_id: str, name: str) -> Team:
    # A deleted team keeps its id: its records still name it.
    if await repository.get_team(session, team_id) is not None:
        raise Conflict(f"Team {team_id!r} already exists.", kind="team-exists")
    return await repository.add_team(session, Team(id=team_id, name=name))


async def get_team(session: AsyncSession, team_id: str) -> Team:
    team = await repository.get_team(session, team_id)
    if team is None or team.deleted_at is not None:
        raise TeamNotFound(team_id)
    return team


async def update_team(session: AsyncSession, team_id: str, changes: Mapping[str, Any]) -> Team:
    """Set the given fields (names of `Team` columns) on a live team. A null for a column that
    always has a value (`guaranteed`, `budget_policy`) is refused (422), not sent to the
    database to fail there as a 500."""
    required = [
        name
        for name, value in changes.items()
        if value is None and not sa_inspect(Team).columns[name].nullable
    ]
    if required:
        raise Unprocessable(
            f"{', '.join(sorted(required))} cannot be null; send a value.",
            kind="null-not-allowed",
        )
    team = await get_team(session, team_id)
    for name, value in changes.items():
        setattr(team, name, value)
    await session.flush()
    return team


async def list_teams(session: AsyncSession) -> list[Team]:
    return await repository.live_teams(session)


async def delete_team(session: AsyncSession, team_id: str) -> None:
    """Delete a team that has no live sandbox; its keys are revoked, its records kept."""
    team = await get_team(session, team_id)
    if await repository.has_unfinished_sandbox(session, team_id):
        raise Conflict(
            f"Team {team_id!r} still has sandboxes; delete them first.", kind="team-not-empty"
        )
    now = clock.now()
    team.deleted_at = now
    await repository.revoke_team_keys(session, team_id, now)
    await session.flush()


async def issue_key(
    session: AsyncSession,
    *,
    team_id: str | None,
    name: str,
    scopes: list[str],
    owner: str | None = None,
    expires_at: datetime | None = None,
    is_admin: bool = False,
    rotated_from: str | None = None,
) -> IssuedKey:
    if team_id == UNASSIGNED_TEAM:
        raise ReservedTeam(team_id)
    unknown = set(scopes) - keys.SCOPES
    if unknown:
        raise UnknownScope(unknown)
    if "admin" in scopes and not is_admin:
        raise AdminScopeOnTeamKey()
    # The rule the schemas hold owners to, for callers without one (the CLI); a successor
    # keeps its predecessor's owner, so a rotation is never refused for it.
    problem = None if owner is None or rotated_from is not None else inputs.owner_problem(owner)
    if problem is not None:
        raise Unprocessable(f"The owner is not valid: {problem}", kind="invalid-owner")
    if expires_at is not None and expires_at <= clock.now():
        raise Unprocessable("expires_at must be in the future.", kind="invalid-expiry")
    new = keys.generate()
    row = await repository.add_key(
        session,
        ApiKey(
            id=new.key_id,
            team_id=team_id,
            name=name,
            secret_sha256=new.digest,
            scopes=sorted(set(scopes)),
            is_admin=is_admin,
            owner=owner,
            expires_at=expires_at,
            rotated_from=rotated_from,
        ),
    )
    return IssuedKey(row=row, token=new.token)


async def list_keys(session: AsyncSession, team_id: str) -> list[ApiKey]:
    """Every key of a live team, revoked ones too (404 for a team that does not exist)."""
    await get_team(session, team_id)
    return await repository.keys_of(session, team_id)


async def get_key(session: AsyncSession, key_id: str) -> ApiKey:
    row = await repository.get_key(session, key_id)
    if row is None:
        raise KeyNotFound(key_id)
    return row


async def revoke_key(session: AsyncSession, key_id: str) -> ApiKey:
    row = await get_key(session, key_id)
    if row.revoked_at is None:
        row.revoked_at = clock.now()
        await session.flush()
    return row


async def rotate_key(session: AsyncSession, key_id: str, *, overlap: timedelta) -> IssuedKey:
    """Issue a successor with the same team, scopes and owner; the old key keeps working for
    `overlap`, so deployments can roll over without an outage."""
    old = await repository.get_key(session, key_id)
    if old is None or old.revoked_at is not None:
        raise KeyNotFound(key_id, or_revoked=True)
    issued = await issue_key(
        session,
        team_id=old.team_id,
        name=old.name,
        scopes=list(old.scopes),
        owner=old.owner,
        expires_at=old.expires_at,
        is_admin=old.is_admin,
        rotated_from=old.id,
    )
    deadline = clock.now() + overlap
    if old.expires_at is None or old.expires_at > deadline:
        old.expires_at = deadline
    await session.flush()
    return issued


async def authenticate(session: AsyncSession, token: str, *, env_admin_key: str | None) -> Actor:
    """The actor a presented bearer token stands for, or Unauthorized."""
    if env_admin_key is not None and hmac.compare_digest(token.encode(), env_admin_key.encode()):
        return Actor(key_id=ENV_ADMIN_KEY_ID, team_id=None, scopes=keys.SCOPES, is_admin=True)
    parsed = keys.parse(token)
    if parsed is None:
        raise BearerRejected("The API key is malformed.")
    key_id, secret = parsed
    row = await repository.get_key(session, key_id)
    # Hash even when the id is unknown so timing does not tell which ids exist.
    stored = row.secret_sha256 if row is not None else b"\0" * 32
    if not keys.matches(secret, stored) or row is None:
        raise BearerRejected("The API key is not valid.")
    now = clock.now()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        raise BearerRejected("The API key is revoked or expired.")
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION:
        await repository.touch_key(session, row.id, now)
    return Actor(
        key_id=row.id,
        team_id=row.team_id,
        scopes=frozenset(row.scopes),
        is_admin=row.is_admin,
        owner=row.owner,
        expires_at=row.expires_at,
    )


async def has_admin_key(session: AsyncSession) -> bool:
    return await repository.has_admin_key(session)
