"""Admission: may this action make one more VM run?

Every action that makes a VM run (create with start, start, restart, fork with start, a
session that wakes a sandbox) is admitted inside the same short transaction that reserves its
`starting` row, before any upstream call:

    admit → reserve a `starting` row → commit → call upstream → settle

Limits, checked narrowest first so a refusal names the limit the caller can act on:

    max_tier (403) → monthly budget (402) → owner concurrency → team concurrency
    → team burn rate (credits/h) → other teams' guaranteed slots → org plan      (429)

Race-freedom across replicas. The decision reads counts of live sandboxes (`starting`,
`running`, `unknown`) and then adds one, so two deciders must never read the same counts. Every
admission therefore first locks the single `org_plan` row (`hold`: `SELECT … FOR UPDATE`, in
the same statement that reads the team's limits) and holds that lock until its reservation is
committed. Admissions are serialised by Postgres, whatever process or replica they run in; the
critical section is the meter's charge (which the same lock serialises, `metering.charge`),
the limit checks, one counting statement and the commit. A create that does not start takes
the lock for its fork's charge alone. A create inserts its new
`starting` row before it takes the lock (no other transaction sees the row until the commit)
and passes its id as `reserved`, which the counts leave out; a start updates its existing row
after the decision, as the lock order below requires.

The counts are read by a statement of their own, after the one that took the lock: under READ
COMMITTED each statement sees the database as of its own start, so counts read by the locking
statement itself could predate a reservation committed while it waited for the lock.

Lock order, which is why this cannot deadlock: an admitting transaction takes the `org_plan`
row first and then, at most, the one sandbox row it starts. No transaction takes a sandbox row
and then the org row: the only other code that locks `org_plan`, a resize's burn-rate check,
takes it before the sandbox row too, and settling, the reconciler and the budget job only lock
sandbox rows. The meter's advisory locks are taken only by session charges, whose transactions
never take the org row. A create holds its new row (and a key-share lock on its team's row,
for the foreign key) before the org row: no other transaction can see the new row, so none
waits for it, and a key-share lock only conflicts with deleting the team row or changing its
key, which nothing does (teams are deleted by a `deleted_at` update).
Releasing capacity (a sandbox stops or fails) needs no org lock: it can only make a later
decision more permissive, never over-admit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.admission import repository
from app.admission.refusals import BudgetExhausted, QuotaExceeded, TierNotAllowed

# Re-exported: callers show figures as refusals do (`admission.plain`, app.compat).
from app.admission.refusals import plain as plain
from app.errors import AppError, TeamNotFound
from app.metrics import ADMISSIONS
from app.models import OrgPlan, Sandbox, Team
from app.sandboxes.states import SandboxState
from app.tiers import TIERS, rank
from app.usage import budget, ledger
from app.usage import repository as usage_repository
from app.webhooks import alerts

PLAN_LIMITS = {"build": 10, "scale": 250}
# The settings' default accounting timezone, for `admit` callers that do not pass theirs yet.


@dataclass(frozen=True)
class TeamLimits:
    """A team's limits as admission reads them; None is unlimited."""

    id: str
    max_concurrent: int | None
    max_concurrent_per_owner: int | None
    max_tier: str | None
    max_credits_per_hour: Decimal | None
    guaranteed: int
    monthly_budget_credits: Decimal | None

    @classmethod
    def of(cls, team: Team | Row[Any]) -> TeamLimits:
        return cls(
            id=team.id,
            max_concurrent=team.max_concurrent,
            max_concurrent_per_owner=team.max_concurrent_per_owner,
            max_tier=team.max_tier,
            max_credits_per_hour=team.max_credits_per_hour,
            guaranteed=team.guaranteed,
            monthly_budget_credits=team.monthly_budget_credits,
        )


@dataclass(frozen=True)
class Usage:
    """Live counts that admission decides on, for one team and owner. The team's burn rate is
    only summed when prices were given (it needs a price-book read)."""

    org_live: int
    team_live: int
    owner_live: int
    team_burn: Decimal | None
    reserved_for_others: int
    effective_limit: int


class PlanLimits(Protocol):
    """What the effective limit is computed from: an `OrgPlan`, or a row of just these."""

    @property
    def plan_limit(self) -> int: ...

    @property
    def observed_limit(self) -> int | None: ...


def effective_limit(plan: PlanLimits) -> int:
    """The smaller of the configured plan and the limit last observed upstream."""
    return _effective(plan.plan_limit, plan.observed_limit)


def _effective(plan_limit: int, observed_limit: int | None) -> int:
    return plan_limit if observed_limit is None else min(plan_limit, observed_limit)


async def load_plan(session: AsyncSession, *, lock: bool) -> OrgPlan:
    return await repository.plan(session, lock=lock)


async def rates_at(session: AsyncSession, at: datetime) -> dict[str, Decimal]:
    """Credits/h of every tier at a moment: one price-book read per decision."""
    version = await usage_repository.price_version_at(session, at)
    return {tier: ledger.price_in(version, tier)[0] for tier in TIERS}


def _burn(tiers: dict[str, int], rates: dict[str, Decimal]) -> Decimal:
    return sum((rates[tier] * count for tier, count in tiers.items()), Decimal(0))


async def burn_rate(
    session: AsyncSession, team_id: str, at: datetime, *, excluding: str | None = None
) -> Decimal:
    """Summed credits/h of the team's live sandboxes (optionally leaving one out)."""
    tiers = await repository.live_tiers(session, team_id, excluding=excluding)
    return _burn(tiers, await rates_at(session, at))


async def usage(
    session: AsyncSession,
    plan: OrgPlan,
    team_id: str,
    owner: str | None,
    rates: dict[str, Decimal] | None = None,
) -> Usage:
    return await _usage(session, effective_limit(plan), team_id, owner, rates)


async def _usage(
    session: AsyncSession,
    limit: int,
    team_id: str,
    owner: str | None,
    rates: dict[str, Decimal] | None,
    *,
    reserved: str | None = None,
) -> Usage:
    row = await repository.counts(session, team_id, owner, leaving_out=reserved)
    return Usage(
        org_live=row.org_live,
        team_live=row.team_live,
        owner_live=row.owner_live if owner is not None else 0,
        team_burn=None if rates is None else _burn(row.team_tiers, rates),
        reserved_for_others=int(row.reserved),
        effective_limit=limit,
    )


async def precheck(
    session: AsyncSession, team: TeamLimits, *, tier: str, at: datetime, timezone: ZoneInfo
) -> AppError | None:
    """The limits that do not depend on what else runs: tier and budget."""
    if team.max_tier is not None and rank(tier) > rank(team.max_tier):
        return TierNotAllowed(team.id, tier, team.max_tier)
    if team.monthly_budget_credits is not None:
        spent = await budget.month_to_date_credits(session, team.id, at, timezone=timezone)
        if spent >= team.monthly_budget_credits:
            return BudgetExhausted(team.id, spent, team.monthly_budget_credits)
    return None


def capacity(
    team: TeamLimits, now_used: Usage, *, owner: str | None, tier: str, rate: Decimal | None
) -> AppError | None:
    """The concurrency and burn-rate limits, narrowest first, against live counts."""
    per_owner = team.max_concurrent_per_owner
    if owner is not None and per_owner is not None and now_used.owner_live + 1 > per_owner:
        return QuotaExceeded(
            f"Owner {owner!r} already runs {now_used.owner_live} sandboxes.",
            limit="max_concurrent_per_owner", scope="owner",
            current=now_used.owner_live, maximum=per_owner,
        )  # fmt: skip
    if team.max_concurrent is not None and now_used.team_live + 1 > team.max_concurrent:
        return QuotaExceeded(
            f"Team {team.id} already runs {now_used.team_live} sandboxes.",
            limit="max_concurrent", scope="team",
            current=now_used.team_live, maximum=team.max_concurrent,
        )  # fmt: skip
    if team.max_credits_per_hour is not None:
        assert now_used.team_burn is not None and rate is not None, "a burn limit needs prices"
        if now_used.team_burn + rate > team.max_credits_per_hour:
            return QuotaExceeded(
                f"A {tier} ({plain(rate)} credits/h) would take team {team.id} over its burn rate.",
                limit="max_credits_per_hour", scope="team",
                current=now_used.team_burn, maximum=team.max_credits_per_hour,
            )  # fmt: skip
    if now_used.org_live + 1 > now_used.effective_limit:
        return QuotaExceeded(
            f"The organisation runs {now_used.org_live} of {now_used.effective_limit} VMs.",
            limit="org_plan", scope="org",
            current=now_used.org_live, maximum=now_used.effective_limit,
        )  # fmt: skip
    # The team's own unused guarantee is not reserved against it.
    own_guarantee_free = max(team.guaranteed - now_used.team_live, 0)
    if own_guarantee_free == 0 and (
        now_used.org_live + 1 + now_used.reserved_for_others > now_used.effective_limit
    ):
        return QuotaExceeded(
            "The remaining capacity is guaranteed to other teams.",
            limit="guaranteed", scope="org",
            current=now_used.org_live + now_used.reserved_for_others,
            maximum=now_used.effective_limit,
        )  # fmt: skip
    return None


async def decide(
    session: AsyncSession,
    team: Team,
    *,
    owner: str | None,
    tier: str,
    at: datetime,
    timezone: ZoneInfo,
) -> AppError | None:
    """The refusal for one more running VM of this team/owner/tier, or None to admit, without
    locking anything: the dry run of `admit`."""
    plan = await load_plan(session, lock=False)
    limits = TeamLimits.of(team)
    refusal, _ = await _decide(session, limits, effective_limit(plan), owner, tier, at, timezone)
    return refusal


async def _decide(
    session: AsyncSession,
    team: TeamLimits,
    limit: int,
    owner: str | None,
    tier: str,
    at: datetime,
    timezone: ZoneInfo,
    *,
    reserved: str | None = None,
) -> tuple[AppError | None, Usage | None]:
    """The refusal (or None), and the live counts it was decided on (None when a limit that
    does not depend on them refused)."""
    refusal = await precheck(session, team, tier=tier, at=at, timezone=timezone)
    if refusal is not None:
        return refusal, None
    # Prices are read only for a team whose burn rate is limited.
    rates = await rates_at(session, at) if team.max_credits_per_hour is not None else None
    now_used = await _usage(session, limit, team.id, owner, rates, reserved=reserved)
    refusal = capacity(
        team, now_used, owner=owner, tier=tier, rate=None if rates is None else rates[tier]
    )
    return refusal, now_used


@dataclass(frozen=True)
class OrgHeld:
    """What `hold` returns: the org row is locked until the transaction ends, and the team's
    limits were read with it. Admission decides on it, and the meter charges forks and starts
    under it (the org row serialises those charges; see `metering.charge`)."""

    team: TeamLimits
    limit: int


async def hold(session: AsyncSession, team_id: str) -> OrgHeld:
    """Lock the org row and read the live team's limits with it (404 for a team that does not
    exist or was deleted, with nothing locked)."""
    # The org row first, the team's limits with it: see the module's docstring.
    row = await repository.lock_org_for_team(session, team_id)
    if row is None:
        raise TeamNotFound(team_id)
    return OrgHeld(TeamLimits.of(row), _effective(row.plan_limit, row.observed_limit))


async def admit(
    session: AsyncSession,
    held: OrgHeld,
    *,
    owner: str | None,
    tier: str,
    action: str,
    timezone: ZoneInfo,
    at: datetime | None = None,
    reserved: str | None = None,
) -> None:
    """Admit one more running VM for the held team, or raise the refusal. The monthly budget
    counts from the month's start in `timezone`: pass `Settings.budget_timezone`.

    Call inside the transaction that took `held` and reserves the `starting` row and commits.
    `reserved` is the id of a new row this transaction inserted already (a create's): the
    counts leave it out, as the VM being admitted is the one added."""
    at = at or clock.now()
    refusal, used = await _decide(
        session, held.team, held.limit, owner, tier, at, timezone, reserved=reserved
    )
    limit_name = refusal.extra["limit"] if refusal is not None else "none"
    ADMISSIONS.labels(action, "refused" if refusal else "admitted", limit_name).inc()
    if refusal is not None:
        raise refusal
    assert used is not None
    # The VM that fills the plan tells so in its own transaction (DESIGN §13).
    await alerts.note_admission(session, live_after=used.org_live + 1, limit=held.limit)


async def check_resize(
    session: AsyncSession, sandbox: Sandbox, tier: str, *, at: datetime | None = None
) -> None:
    """A live tier change upward must respect max_tier and the burn rate."""
    at = at or clock.now()
    team = await repository.team(session, sandbox.team_id)
    assert team is not None
    if team.max_tier is not None and rank(tier) > rank(team.max_tier):
        raise TierNotAllowed(team.id, tier, team.max_tier)
    if team.max_credits_per_hour is not None and sandbox.state == SandboxState.RUNNING:
        await load_plan(session, lock=True)
        others = await burn_rate(session, team.id, at, excluding=sandbox.id)
        rate = (await rates_at(session, at))[tier]
        if others + rate > team.max_credits_per_hour:
            raise QuotaExceeded(
                f"Resizing to {tier} would take team {team.id} over its burn rate.",
                limit="max_credits_per_hour", scope="team",
                current=others, maximum=team.max_credits_per_hour,
            )  # fmt: skip
