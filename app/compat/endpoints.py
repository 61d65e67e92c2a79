"""The upstream's paths under /csb, for the official SDK (`CSB_BASE_URL=<corral>/csb`).

Thin handlers: parse, call one facade service function, wrap the answer in the upstream's
envelope. Statuses are the upstream's: 201 for fork and the preview-token calls except revoke,
200 otherwise, and `/meta/info` unwrapped. Errors are rendered by `CompatRoute` in the
upstream's `{"errors": [...]}` shape (see `app.compat.responses`)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from app.compat import previews, service
from app.compat.responses import PREFIX, CompatRoute, ok
from app.compat.schemas import (
    TOKEN_ID_PATTERN,
    VM_ID_PATTERN,
    ForkRequest,
    HibernationTimeoutRequest,
    PreviewTokenCreate,
    PreviewTokenUpdate,
    SessionRequest,
    SpecsRequest,
    StartRequest,
    sandbox_view,
)
from app.deps import CurrentActor, RuntimeDep, authenticate
from app.errors import MissingScope
from app.identity.actor import Actor
from app.inputs import Owner
from app.sandboxes.schemas import TEMPLATE_PATTERN, SandboxPatch
from app.sandboxes.states import SandboxState

router = APIRouter(prefix=PREFIX, tags=["sdk-facade"], route_class=CompatRoute)

UpstreamId = Annotated[str, Path(pattern=VM_ID_PATTERN, description="The upstream sandbox id")]
ForkSource = Annotated[
    str, Path(pattern=TEMPLATE_PATTERN, description="A template or the team's sandbox")
]
TokenId = Annotated[str, Path(pattern=TOKEN_ID_PATTERN)]
OwnerHeader = Annotated[
    Owner | None,
    Header(
        alias="X-Corral-Owner",
        description="Acts for this owner (an unbound key only; a bound key's owner otherwise).",
    ),
]


def _needs(scope: str | None) -> Callable[..., Coroutine[Any, Any, Actor]]:
    async def check(actor: CurrentActor, owner: OwnerHeader = None) -> Actor:
        acting = service.acting(actor, owner)
        if scope is not None and not acting.has(scope):
            raise MissingScope(scope)
        return acting

    return check


Reader = Annotated[Actor, Depends(_needs("sandboxes:read"))]
Writer = Annotated[Actor, Depends(_needs("sandboxes:write"))]
# Session scopes depend on the permission asked; the sessions service checks them.
SessionMinter = Annotated[Actor, Depends(_needs(None))]


# --- sandboxes ---------------------------------------------------------------------------


@router.post("/sandbox/{upstream_id}/fork", status_code=201)
async def fork_sandbox(
    upstream_id: ForkSource, body: ForkRequest, actor: Writer, rt: RuntimeDep
) -> JSONResponse:
    outcome = await service.fork(rt, actor, upstream_id, body)
    start = outcome.start.model_dump(mode="json") if outcome.start is not None else None
    data = {
        "id": outcome.sandbox.upstream_id,
        "alias": outcome.sandbox.upstream_id,
        "title": outcome.sandbox.title,
        "start_response": start,
    }
    return ok(data, status_code=201)


@router.get("/sandbox")
async def list_sandboxes(
    actor: Reader,
    rt: RuntimeDep,
    tags: Annotated[str | None, Query(max_length=1000)] = None,
    order_by: Literal["inserted_at", "updated_at"] = "updated_at",
    direction: Literal["asc", "desc"] = "desc",
    # Above 50 is clamped, not refused: the SDK sends its `limit` as the page size.
    page_size: Annotated[int, Query(ge=1, le=10_000)] = 20,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    status: Literal["running"] | None = None,
) -> JSONResponse:
    wanted = [tag for tag in (tags or "").split(",") if tag]
    data = await service.list_page(
        rt,
        actor,
        tags=wanted,
        running_only=status == "running",
        order_by=order_by,
        descending=direction == "desc",
        page=page,
        page_size=page_size,
    )
    return ok(data)


@router.get("/sandbox/{upstream_id}")
async def get_sandbox(upstream_id: UpstreamId, actor: Reader, rt: RuntimeDep) -> JSONResponse:
    return ok(sandbox_view(await service.resolve(rt, actor, upstream_id)))


# --- VMs ---------------------------------------------------------------------------------


@router.post("/vm/{upstream_id}/start")
async def start_vm(
    upstream_id: UpstreamId,
    actor: Writer,
    rt: RuntimeDep,
    body: Annotated[StartRequest | None, Body()] = None,
) -> JSONResponse:
    outcome = await service.start(rt, actor, upstream_id, body or StartRequest())
    assert outcome.start is not None, "a start always carries the upstream's answer"
    # The Pitcher token goes to this caller only; it is never logged or stored.
    return ok(outcome.start.model_dump(mode="json"))


@router.post("/vm/{upstream_id}/hibernate")
async def hibernate_vm(upstream_id: UpstreamId, actor: Writer, rt: RuntimeDep) -> JSONResponse:
    await service.stop(rt, actor, upstream_id, to_state=SandboxState.HIBERNATED)
    return ok({})


@router.post("/vm/{upstream_id}/shutdown")
async def shutdown_vm(upstream_id: UpstreamId, actor: Writer, rt: RuntimeDep) -> JSONResponse:
    await service.stop(rt, actor, upstream_id, to_state=SandboxState.SHUTDOWN)
    return ok({})


@router.delete("/vm/{upstream_id}")
async def delete_vm(upstream_id: UpstreamId, actor: Writer, rt: RuntimeDep) -> JSONResponse:
    await service.delete(rt, actor, upstream_id)
    return ok({})


@router.put("/vm/{upstream_id}/specs")
@router.post("/vm/{upstream_id}/update_specs")
async def update_specs(
    upstream_id: UpstreamId, body: SpecsRequest, actor: Writer, rt: RuntimeDep
) -> JSONResponse:
    sandbox = await service.update(rt, actor, upstream_id, SandboxPatch(tier=body.tier))
    return ok({"id": sandbox.upstream_id, "tier": sandbox.tier})


@router.put("/vm/{upstream_id}/hibernation_timeout")
async def update_hibernation_timeout(
    upstream_id: UpstreamId, body: HibernationTimeoutRequest, actor: Writer, rt: RuntimeDep
) -> JSONResponse:
    patch = SandboxPatch(hibernation_timeout_seconds=body.hibernation_timeout_seconds)
    sandbox = await service.update(rt, actor, upstream_id, patch)
    return ok(
        {
            "id": sandbox.upstream_id,
            "hibernation_timeout_seconds": sandbox.hibernation_timeout_seconds,
        }
    )


@router.get("/vm/running")
async def running_vms(actor: Reader, rt: RuntimeDep) -> JSONResponse:
    return ok(await service.running_vms(rt, actor))


@router.post("/vm/{upstream_id}/sessions")
async def create_session(
    upstream_id: UpstreamId, body: SessionRequest, actor: SessionMinter, rt: RuntimeDep
) -> JSONResponse:
    data = await service.create_session(
        rt, actor, upstream_id, session_id=body.session_id, permission=body.permission
    )
    return ok(data)


# --- preview tokens ----------------------------------------------------------------------


@router.post("/sandbox/{upstream_id}/tokens", status_code=201)
async def create_preview_token(
    upstream_id: UpstreamId,
    actor: Writer,
    rt: RuntimeDep,
    body: Annotated[PreviewTokenCreate | None, Body()] = None,
) -> JSONResponse:
    expires_at = body.expires_at if body is not None else None
    return ok(await previews.create_token(rt, actor, upstream_id, expires_at), status_code=201)


@router.get("/sandbox/{upstream_id}/tokens", status_code=201)
async def list_preview_tokens(
    upstream_id: UpstreamId, actor: Writer, rt: RuntimeDep
) -> JSONResponse:
    # 201 for a read is the upstream's own quirk (CONTRACT §2.14), kept for fidelity.
    return ok(await previews.list_tokens(rt, actor, upstream_id), status_code=201)


@router.patch("/sandbox/{upstream_id}/tokens/{token_id}", status_code=201)
async def update_preview_token(
    upstream_id: UpstreamId,
    token_id: TokenId,
    body: PreviewTokenUpdate,
    actor: Writer,
    rt: RuntimeDep,
) -> JSONResponse:
    data = await previews.update_token(rt, actor, upstream_id, token_id, body.expires_at)
    return ok(data, status_code=201)


@router.delete("/sandbox/{upstream_id}/tokens")
async def revoke_preview_tokens(
    upstream_id: UpstreamId, actor: Writer, rt: RuntimeDep
) -> JSONResponse:
    await previews.revoke_tokens(rt, actor, upstream_id)
    return ok({})


# --- meta --------------------------------------------------------------------------------


@router.get("/meta/info")
async def meta_info(request: Request, rt: RuntimeDep, owner: OwnerHeader = None) -> JSONResponse:
    """Authentication is optional here, as upstream: without a key, only `api` is answered."""
    actor = None
    if request.headers.get("authorization"):
        actor = service.acting(await authenticate(request, rt), owner)
    return JSONResponse(await service.meta_info(rt, actor))
