"""FastAPI dependencies, as `Annotated` aliases so handlers read like prose."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import reading
from app.errors import BearerRejected, MissingScope
from app.identity import service as identity_service
from app.identity.actor import Actor
from app.runtime import Runtime
from app.settings import Settings


# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
# dependency in a worker thread, a hand-off that costs more than the work.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_sessions(runtime: RuntimeDep) -> async_sessionmaker[AsyncSession]:
    return runtime.sessions


SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]


async def get_session(sessions: SessionsDep) -> AsyncIterator[AsyncSession]:
    """The request is the unit of work: commit on success, roll back on any error."""
    async with sessions() as session, session.begin():
        yield session


# scope="function": commit before the response is sent, so a client that reads right after
# a write (on any replica) sees it; the default would commit after the response.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_reading(sessions: SessionsDep) -> AsyncIterator[AsyncSession]:
    """For a request that only reads: no transaction round trips (`db.reading`)."""
    async with reading(sessions) as session:
        yield session


ReadingDep = Annotated[AsyncSession, Depends(get_reading, scope="function")]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise BearerRejected("An API key is required: Authorization: Bearer <key>.")
    return token.strip()


async def authenticate(request: Request, runtime: RuntimeDep) -> Actor:
    token = _bearer(request)
    actor = runtime.keys.get(token)
    if actor is None:
        admin_key = runtime.settings.admin_key
        async with runtime.sessions() as session, session.begin():
            actor = await identity_service.authenticate(
                session, token, env_admin_key=admin_key.get_secret_value() if admin_key else None
            )
        runtime.keys.put(token, actor, actor.expires_at)
    request.state.actor = actor
    return actor


CurrentActor = Annotated[Actor, Depends(authenticate)]


def require(scope: str) -> Callable[[Actor], Coroutine[Any, Any, Actor]]:
    async def check(actor: CurrentActor) -> Actor:
        if not actor.has(scope):
            raise MissingScope(scope)
        return actor

    return check


AdminActor = Annotated[Actor, Depends(require("admin"))]
SandboxReader = Annotated[Actor, Depends(require("sandboxes:read"))]
SandboxWriter = Annotated[Actor, Depends(require("sandboxes:write"))]
