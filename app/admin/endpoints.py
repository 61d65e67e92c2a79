"""Admin routes: teams and their keys. Every route here requires the admin scope; every change
is written, with its audit row, by one function of `app.admin.service`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from app.admin import service
from app.admin.schemas import (
    IssuedKeyOut,
    KeyCreate,
    KeyOut,
    KeyRotate,
    TeamCreate,
    TeamOut,
    TeamPatch,
)
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
    return TeamOut.model_validate(await service.create_team(session, actor, body))


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
    return TeamOut.model_validate(await service.update_team(session, actor, team, body))


@router.delete("/teams/{team}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_team(
    team: TeamPath, actor: AdminActor, session: SessionDep, rt: RuntimeDep
) -> None:
    await service.delete_team(session, actor, team, keys=rt.keys)


@router.post("/teams/{team}/keys", status_code=status.HTTP_201_CREATED, response_model=IssuedKeyOut)
async def create_key(
    team: TeamPath, body: KeyCreate, actor: AdminActor, session: SessionDep
) -> IssuedKeyOut:
    return _issued(await service.issue_key(session, actor, team, body))


@router.get("/teams/{team}/keys", response_model=list[KeyOut])
async def list_keys(team: TeamPath, actor: AdminActor, session: SessionDep) -> list[KeyOut]:
    return [KeyOut.model_validate(k) for k in await identity_service.list_keys(session, team)]


@router.post(
    "/keys/{key_id}/rotate", status_code=status.HTTP_201_CREATED, response_model=IssuedKeyOut
)
async def rotate_key(
    key_id: KeyPath, body: KeyRotate, actor: AdminActor, session: SessionDep, rt: RuntimeDep
) -> IssuedKeyOut:
    return _issued(await service.rotate_key(session, actor, key_id, body, keys=rt.keys))


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: KeyPath, actor: AdminActor, session: SessionDep) -> KeyOut:
    return KeyOut.model_validate(await identity_service.get_key(session, key_id))


@router.delete("/keys/{key_id}", response_model=KeyOut)
async def revoke_key(
    key_id: KeyPath, actor: AdminActor, session: SessionDep, rt: RuntimeDep
) -> KeyOut:
    return KeyOut.model_validate(await service.revoke_key(session, actor, key_id, keys=rt.keys))
