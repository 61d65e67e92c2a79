"""Admin routes: teams and their keys. Every route here requires the admin scope."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, status

from app.admin.schemas import (
    IssuedKeyOut,
    KeyCreate,
    KeyOut,
    KeyRotate,
    TeamCreate,
    TeamOut,
    TeamPatch,
)
from app.audit import service as audit
from app.deps import AdminActor, RuntimeDep, SessionDep
from app.identity import service as identity_service
from app.identity.service import IssuedKey

router = APIRouter(prefix="/v1/admin", tags=["admin"])

TeamPath = Annotated[str, Path(pattern=r"^[a-z0-9-]{1,63}$")]
KeyPath = Annotated[str, Path(pattern=r"^[a-z0-9]{1,32}$")]


def _issued(issued: IssuedKey) -> IssuedKeyOut:
    return IssuedKeyOut.model_validate(
        {**KeyOut.model_validate(issued.row).model_dump(), "key": issued.token}
    )


@router.post("/teams", status_code=status.HTTP_201_CREATED, response_model=TeamOut)
async def create_team(body: TeamCreate, actor: AdminActor, session: SessionDep) -> TeamOut:
    team = await identity_service.create_team(session, team_id=body.id, name=body.name)
    await audit.record(
        session, actor=actor.key_id, action="team.create", team_id=team.id, target=team.id
    )
    return TeamOut.model_validate(team)


@router.get("/teams", response_model=list[TeamOut])
async def list_teams(actor: AdminActor, session: SessionDep) -> list[TeamOut]:
    return [TeamOut.model_validate(t) for t in await identity_service.list_teams(session)]


@router.get("/teams/{team}", response_model=TeamOut)
async def get_team(team: TeamPath, actor: AdminActor, session: SessionDep) -> TeamOut:
    return TeamOut.model_validate(await identity_service.get_team(session, team))


@router.patch("/teams/{team}", response_model=TeamOut)
async def patch_team(
    team: TeamPath, body: TeamPatch, actor: AdminActor, session: SessionDep
) -> TeamOut:
    row = await identity_service.get_team(session, team)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name", "") is None:
        changes.pop("name")
    for name, value in changes.items():
        setattr(row, name, value)
    await session.flush()
    await audit.record(
        session,
        actor=actor.key_id,
        action="team.update",
        team_id=team,
        target=team,
        detail={k: str(v) if v is not None else None for k, v in changes.items()},
    )
    return TeamOut.model_validate(row)


@router.delete("/teams/{team}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_team(
    team: TeamPath, actor: AdminActor, session: SessionDep, rt: RuntimeDep
) -> None:
    await identity_service.delete_team(session, team)
    rt.keys.forget(team_id=team)
    await audit.record(session, actor=actor.key_id, action="team.delete", team_id=team, target=team)


@router.post("/teams/{team}/keys", status_code=status.HTTP_201_CREATED, response_model=IssuedKeyOut)
async def create_key(
    team: TeamPath, body: KeyCreate, actor: AdminActor, session: SessionDep
) -> IssuedKeyOut:
    await identity_service.get_team(session, team)
    issued = await identity_service.issue_key(
        session,
        team_id=team,
        name=body.name,
        scopes=body.scopes,
        owner=body.owner,
        expires_at=body.expires_at,
    )
    await audit.record(
        session, actor=actor.key_id, action="key.create", team_id=team, target=issued.row.id
    )
    return _issued(issued)


@router.get("/teams/{team}/keys", response_model=list[KeyOut])
async def list_keys(team: TeamPath, actor: AdminActor, session: SessionDep) -> list[KeyOut]:
    await identity_service.get_team(session, team)
    return [KeyOut.model_validate(k) for k in await identity_service.list_keys(session, team)]


@router.post(
    "/keys/{key_id}/rotate", status_code=status.HTTP_201_CREATED, response_model=IssuedKeyOut
)
async def rotate_key(
    key_id: KeyPath, body: KeyRotate, actor: AdminActor, session: SessionDep, rt: RuntimeDep
) -> IssuedKeyOut:
    # The old key's expiry changes: drop what this replica remembers of it.
    rt.keys.forget(key_id)
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
    return _issued(issued)


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: KeyPath, actor: AdminActor, session: SessionDep) -> KeyOut:
    return KeyOut.model_validate(await identity_service.get_key(session, key_id))


@router.delete("/keys/{key_id}", response_model=KeyOut)
async def revoke_key(
    key_id: KeyPath, actor: AdminActor, session: SessionDep, rt: RuntimeDep
) -> KeyOut:
    row = await identity_service.revoke_key(session, key_id)
    rt.keys.forget(key_id)
    await audit.record(
        session, actor=actor.key_id, action="key.revoke", team_id=row.team_id, target=key_id
    )
    return KeyOut.model_validate(row)
