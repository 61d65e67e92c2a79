"""Session routes: mint and list per-user sessions, issue browser tokens, and the browser's
own `POST /v1/browser/session` (authenticated by a browser token, not an API key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, status

from app.deps import CurrentActor, RuntimeDep
from app.errors import Unauthorized
from app.identity.actor import Actor
from app.sandboxes.schemas import SANDBOX_ID_PATTERN
from app.sessions import service
from app.sessions.schemas import (
    BrowserSessionRequest,
    BrowserTokenCreate,
    BrowserTokenOut,
    SandboxSessionOut,
    SessionCreate,
    SessionRecordPage,
)

router = APIRouter(tags=["sessions"])

# Answers that carry a credential (a pitcher token, a browser token) must not be cached by a
# browser or a proxy.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _no_store(response: Response) -> None:
    response.headers.update(NO_STORE)


SandboxId = Annotated[str, Path(pattern=SANDBOX_ID_PATTERN, description="Corral's sandbox id")]


async def _require_read(actor: CurrentActor) -> Actor:
    service.authorise_read(actor)
    return actor


@router.post(
    "/v1/sandboxes/{sandbox_id}/sessions",
    status_code=status.HTTP_201_CREATED,
    response_model=SandboxSessionOut,
)
async def mint_session(
    sandbox_id: SandboxId,
    body: SessionCreate,
    actor: CurrentActor,
    rt: RuntimeDep,
    response: Response,
) -> SandboxSessionOut:
    _no_store(response)
    minted = await service.mint(
        rt, actor, sandbox_id, user=body.user, permission=body.permission, via="api"
    )
    return minted.session


@router.get("/v1/sandboxes/{sandbox_id}/sessions", response_model=SessionRecordPage)
async def list_sessions(
    sandbox_id: SandboxId,
    actor: Annotated[Actor, Depends(_require_read)],
    rt: RuntimeDep,
    user: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    # A session record id is a bigint: beyond it is a bad cursor, not a driver error.
    cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> SessionRecordPage:
    return await service.list_records(rt, actor, sandbox_id, user=user, limit=limit, cursor=cursor)


@router.post(
    "/v1/sandboxes/{sandbox_id}/browser-tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=BrowserTokenOut,
)
async def issue_browser_token(
    sandbox_id: SandboxId,
    body: BrowserTokenCreate,
    actor: CurrentActor,
    rt: RuntimeDep,
    response: Response,
) -> BrowserTokenOut:
    _no_store(response)
    return await service.issue_browser_token(rt, actor, sandbox_id, body)


async def _browser_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "A browser token is required: Authorization: Bearer <token>.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


@router.post("/v1/browser/session", response_model=SandboxSessionOut)
async def browser_session(
    token: Annotated[str, Depends(_browser_token)],
    rt: RuntimeDep,
    response: Response,
    body: Annotated[BrowserSessionRequest | None, Body()] = None,
) -> SandboxSessionOut:
    _no_store(response)
    minted = await service.mint_for_browser(rt, token, body.sandbox_id if body else None)
    return minted.session
