"""`GET /v1/admin/audit`: the audit log, filtered and cursor-paged (admin keys only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.audit import repository
from app.audit.schemas import AuditEntryOut, AuditPage
from app.deps import AdminActor, SessionDep
from app.errors import BadRequest
from app.inputs import Instant

router = APIRouter(prefix="/v1/admin", tags=["admin"])

Text = Annotated[str | None, Query(min_length=1, max_length=128)]


@router.get("/audit", response_model=AuditPage)
async def list_audit(
    actor: AdminActor,
    session: SessionDep,
    actor_id: Annotated[str | None, Query(alias="actor", min_length=1, max_length=64)] = None,
    team: Annotated[str | None, Query(pattern=r"^[a-z0-9-]{1,63}$")] = None,
    action: Text = None,
    target: Text = None,
    cause: Annotated[str | None, Query(min_length=1, max_length=16)] = None,
    outcome: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
    since: Annotated[Instant | None, Query(alias="from")] = None,
    until: Annotated[Instant | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditPage:
    if since is not None and until is not None and since >= until:
        raise BadRequest("'from' must be before 'to'.", kind="empty-window")
    rows, next_cursor = await repository.page(
        session,
        repository.AuditFilter(
            actor=actor_id,
            team_id=team,
            action=action,
            target=target,
            cause=cause,
            outcome=outcome,
            since=since,
            until=until,
        ),
        limit=limit,
        cursor=cursor,
    )
    return AuditPage(items=[AuditEntryOut.model_validate(r) for r in rows], next_cursor=next_cursor)
