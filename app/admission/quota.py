"""Read-only views of admission: the dry-run check, the caller's quota, the org plan."""

from __future__ import annotations

from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.admission import repository, service
from app.admission.schemas import (
    OrgQuota,
    PlanIn,
    PlanOut,
    QuotaAllowed,
    QuotaCheck,
    QuotaOut,
    TeamHeadroom,
    TeamLimits,
    TeamUsage,
)
from app.audit import service as audit
from app.errors import OwnerMismatch, SandboxNotFound, TeamRequired, Unprocessable, WrongTeam
from app.identity import service as identity_service
from app.identity.actor import Actor
from app.models import OrgPlan
from app.sandboxes import access
from app.sandboxes.states import SandboxState
from app.usage import budget


def _team_of(actor: Actor, requested: str | None) -> str:
    if actor.is_admin:
        if requested is None:
            raise TeamRequired()
        return requested
    if requested not in (None, actor.team_id):
        raise WrongTeam("sees its own team's quota")
    assert actor.team_id is not None
    return actor.team_id


async def check(
    session: AsyncSession,
    actor: Actor,
    body: QuotaCheck,
    *,
    default_tier: str,
    timezone: ZoneInfo,
) -> QuotaAllowed:
    team_id = _team_of(actor, body.team)
    team = await identity_service.get_team(session, team_id)
    # As the create itself answers: a bound key acts for its own owner only.
    if actor.owner is not None and body.owner not in (None, actor.owner):
        raise OwnerMismatch()
    owner = actor.owner or body.owner
    tier: str = body.tier or default_tier
    if body.action == "start":
        if body.sandbox_id is None:
            raise Unprocessable("A start check names its sandbox_id.", kind="sandbox-required")
        sandbox = await repository.team_sandbox(session, team_id, body.sandbox_id)
        # The rule of every route: an owner-bound caller sees its owner's sandboxes only.
        if sandbox is None or not access.may_see(actor, sandbox):
            raise SandboxNotFound(body.sandbox_id)
        owner, tier = sandbox.owner, sandbox.tier
    refusal = await service.decide(
        session, team, owner=owner, tier=tier, at=clock.now(), timezone=timezone
    )
    if refusal is not None:
        raise refusal
    return QuotaAllowed(team=team_id, tier=tier, owner=owner)


async def show(
    session: AsyncSession, actor: Actor, requested: str | None, *, timezone: ZoneInfo
) -> QuotaOut:
    team_id = _team_of(actor, requested)
    team = await identity_service.get_team(session, team_id)
    at = clock.now()
    plan = await service.load_plan(session, lock=False)
    used = await service.usage(session, plan, team_id, None, await service.rates_at(session, at))
    assert used.team_burn is not None
    by_state = await repository.live_by_state(session, team_id)
    status = await budget.budget_status(session, team, at, timezone=timezone)
    return QuotaOut(
        team=team_id,
        limits=TeamLimits.model_validate(team, from_attributes=True),
        usage=TeamUsage(
            live=used.team_live,
            running=by_state.get(SandboxState.RUNNING, 0),
            starting=by_state.get(SandboxState.STARTING, 0),
            burn_credits_per_hour=service.plain(used.team_burn),
            month_to_date_credits=status.spent,
        ),
        headroom=TeamHeadroom(
            concurrent=None
            if team.max_concurrent is None
            else max(team.max_concurrent - used.team_live, 0),
            credits_per_hour=None
            if team.max_credits_per_hour is None
            else service.plain(max(team.max_credits_per_hour - used.team_burn, Decimal(0))),
            budget_credits=status.remaining,
        ),
        budget_warning=status.threshold_crossed,
        org=OrgQuota(
            plan=plan.plan,
            effective_limit=used.effective_limit,
            live=used.org_live,
            reserved_for_guarantees=used.reserved_for_others,
            headroom=max(used.effective_limit - used.org_live, 0),
        ),
    )


def _plan_out(row: OrgPlan) -> PlanOut:
    return PlanOut(
        plan=row.plan,
        plan_limit=row.plan_limit,
        observed_limit=row.observed_limit,
        observed_at=row.observed_at,
        effective_limit=service.effective_limit(row),
    )


async def plan(session: AsyncSession) -> PlanOut:
    return _plan_out(await service.load_plan(session, lock=False))


async def set_plan(session: AsyncSession, actor: Actor, body: PlanIn) -> PlanOut:
    """Change the org plan, with its audit row, in the caller's transaction."""
    row = await service.load_plan(session, lock=True)
    row.plan = body.plan
    row.plan_limit = body.limit if body.limit is not None else service.PLAN_LIMITS[body.plan]
    row.updated_at = clock.now()
    await session.flush()
    await audit.record(
        session, actor=actor.key_id, action="plan.update", team_id=None, target="org",
        detail={"plan": row.plan, "limit": row.plan_limit},
    )  # fmt: skip
    return _plan_out(row)
