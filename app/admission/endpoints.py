"""The quota API (`/v1/quota`) and the organisation plan (`/v1/admin/plan`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.admission import quota
from app.admission.schemas import PlanIn, PlanOut, QuotaAllowed, QuotaCheck, QuotaOut
from app.deps import AdminActor, SandboxReader, SessionDep, SettingsDep

router = APIRouter(tags=["quota"])


@router.post("/v1/quota/check", response_model=QuotaAllowed)
async def check_quota(
    body: QuotaCheck, actor: SandboxReader, session: SessionDep, settings: SettingsDep
) -> QuotaAllowed:
    """Would this action be admitted now? The same answer as the action itself (the same
    refusal status and body), with no side effect."""
    return await quota.check(
        session,
        actor,
        body,
        default_tier=settings.default_tier,
        timezone=settings.budget_timezone,
    )


@router.get("/v1/quota", response_model=QuotaOut)
async def get_quota(
    actor: SandboxReader,
    session: SessionDep,
    settings: SettingsDep,
    team: Annotated[str | None, Query(pattern=r"^[a-z0-9-]{1,63}$")] = None,
) -> QuotaOut:
    return await quota.show(session, actor, team, timezone=settings.budget_timezone)


@router.get("/v1/admin/plan", response_model=PlanOut, tags=["admin"])
async def get_plan(actor: AdminActor, session: SessionDep) -> PlanOut:
    return await quota.plan(session)


@router.put("/v1/admin/plan", response_model=PlanOut, tags=["admin"])
async def put_plan(body: PlanIn, actor: AdminActor, session: SessionDep) -> PlanOut:
    return await quota.set_plan(session, actor, body)
