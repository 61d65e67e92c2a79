"""Admin routes of the browser-token signing keys: list them with their lifetimes (ids and
times only: no secret is stored) and rotate, with the overlap `app.sessions.signing_keys`
describes. Admin keys only; a rotation is audited."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict

from app.deps import AdminActor, RuntimeDep
from app.sessions import signing_keys

router = APIRouter(prefix="/v1/admin/browser-token-keys", tags=["admin"])


class BrowserTokenKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kid: str
    # pending: verifies, signs from activates_at; signing: signs new tokens; verifying: an
    # older key whose tokens still verify until retires_at; retired: verifies nothing.
    state: Literal["pending", "signing", "verifying", "retired"]
    created_at: datetime
    activates_at: datetime
    retires_at: datetime | None


@router.get("", response_model=list[BrowserTokenKeyOut])
async def list_keys(actor: AdminActor, rt: RuntimeDep) -> list[BrowserTokenKeyOut]:
    return [BrowserTokenKeyOut.model_validate(k) for k in await signing_keys.list_keys(rt)]


@router.post("/rotate", status_code=status.HTTP_201_CREATED, response_model=BrowserTokenKeyOut)
async def rotate(actor: AdminActor, rt: RuntimeDep) -> BrowserTokenKeyOut:
    return BrowserTokenKeyOut.model_validate(await signing_keys.rotate(rt, actor))
