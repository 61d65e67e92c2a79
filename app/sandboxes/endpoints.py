"""Native sandbox API under /v1/sandboxes: thin handlers over the lifecycle service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.responses import JSONResponse

from app import idempotency
from app.deps import ReadingDep, RuntimeDep, SandboxReader, SandboxWriter
from app.sandboxes import creation, lifecycle, listing, service
from app.sandboxes.schemas import (
    SANDBOX_ID_PATTERN,
    EventOut,
    SandboxCreate,
    SandboxFork,
    SandboxOut,
    SandboxPage,
    SandboxPatch,
    State,
)
from app.sandboxes.states import SandboxState
from app.tiers import Tier

router = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
SandboxId = Annotated[str, Path(pattern=SANDBOX_ID_PATTERN, description="Corral's sandbox id")]


def _out(outcome: lifecycle.Outcome) -> SandboxOut:
    out = SandboxOut.model_validate(outcome.sandbox)
    out.bootup_type = outcome.bootup_type
    return out


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SandboxOut)
async def create_sandbox(
    body: SandboxCreate,
    actor: SandboxWriter,
    rt: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    spec = creation.create_spec(rt, actor, body)

    async def call() -> SandboxOut:
        return _out(await creation.create(rt, actor, spec))

    return await idempotency.run(
        rt.sessions,
        key_id=actor.key_id,
        route="POST /v1/sandboxes",
        idempotency_key=idempotency_key,
        body=body.model_dump(mode="json"),
        status_code=status.HTTP_201_CREATED,
        call=call,
    )


@router.get("", response_model=SandboxPage)
async def list_sandboxes(
    actor: SandboxReader,
    session: ReadingDep,
    team: Annotated[str | None, Query(pattern=r"^[a-z0-9-]{1,63}$")] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[list[State] | None, Query()] = None,
    tier: Tier | None = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> SandboxPage:
    where = listing.Filters(team=team, owner=owner, states=state, tier=tier, tag=tag)
    rows, next_cursor = await listing.page(session, actor, where, limit=limit, cursor=cursor)
    return SandboxPage(items=[SandboxOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/{sandbox_id}", response_model=SandboxOut)
async def get_sandbox(sandbox_id: SandboxId, actor: SandboxReader, rt: RuntimeDep) -> SandboxOut:
    sandbox, accrued = await service.get(rt, actor, sandbox_id)
    out = SandboxOut.model_validate(sandbox)
    out.accrued = accrued
    return out


@router.patch("/{sandbox_id}", response_model=SandboxOut)
async def patch_sandbox(
    sandbox_id: SandboxId, body: SandboxPatch, actor: SandboxWriter, rt: RuntimeDep
) -> SandboxOut:
    return _out(await service.update(rt, actor, sandbox_id, body))


@router.post("/{sandbox_id}/start", response_model=SandboxOut)
async def start_sandbox(sandbox_id: SandboxId, actor: SandboxWriter, rt: RuntimeDep) -> SandboxOut:
    return _out(await service.start(rt, actor, sandbox_id))


@router.post("/{sandbox_id}/hibernate", response_model=SandboxOut)
async def hibernate_sandbox(
    sandbox_id: SandboxId, actor: SandboxWriter, rt: RuntimeDep
) -> SandboxOut:
    return _out(await service.stop(rt, actor, sandbox_id, to_state=SandboxState.HIBERNATED))


@router.post("/{sandbox_id}/shutdown", response_model=SandboxOut)
async def shutdown_sandbox(
    sandbox_id: SandboxId, actor: SandboxWriter, rt: RuntimeDep
) -> SandboxOut:
    return _out(await service.stop(rt, actor, sandbox_id, to_state=SandboxState.SHUTDOWN))


@router.post("/{sandbox_id}/restart", response_model=SandboxOut)
async def restart_sandbox(
    sandbox_id: SandboxId, actor: SandboxWriter, rt: RuntimeDep
) -> SandboxOut:
    return _out(await service.restart(rt, actor, sandbox_id))


@router.post("/{sandbox_id}/fork", status_code=status.HTTP_201_CREATED, response_model=SandboxOut)
async def fork_sandbox(
    sandbox_id: SandboxId,
    body: SandboxFork,
    actor: SandboxWriter,
    rt: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    async def call() -> SandboxOut:
        return _out(await creation.fork(rt, actor, sandbox_id, body))

    return await idempotency.run(
        rt.sessions,
        key_id=actor.key_id,
        route=f"POST /v1/sandboxes/{sandbox_id}/fork",
        idempotency_key=idempotency_key,
        body=body.model_dump(mode="json"),
        status_code=status.HTTP_201_CREATED,
        call=call,
    )


@router.delete("/{sandbox_id}", response_model=SandboxOut)
async def delete_sandbox(
    sandbox_id: SandboxId, actor: SandboxWriter, rt: RuntimeDep, response: Response
) -> SandboxOut:
    return _out(await service.delete(rt, actor, sandbox_id))


@router.get("/{sandbox_id}/events", response_model=list[EventOut])
async def sandbox_events(
    sandbox_id: SandboxId, actor: SandboxReader, rt: RuntimeDep
) -> list[EventOut]:
    return [EventOut.model_validate(e) for e in await service.events(rt, actor, sandbox_id)]
