"""Monthly budgets: month-to-date spend per team, its status, and the hibernate policy.

- Spend is the team's credits since the start of the calendar month in the accounting
  timezone (`periods`; callers pass `Settings.budget_timezone`), computed by the report query
  (same billing rule, same rounding), with open intervals counted up to `at`. It is read
  through the (team_id, ended_at) and period indexes, so admission can afford it on every start.
- The soft threshold (a fraction of the budget) only warns: a `Corral-Budget-Warning` header
  (`warning.BudgetWarning`) and `/v1/quota`. Spend at or over the budget is "exhausted":
  admission refuses new starts (402) whatever the policy, and with `budget_policy=hibernate`
  `enforce_budgets` also hibernates the team's running sandboxes (cause `budget`).
- `enforce_budgets` may be called from any replica at any time: a session-level advisory lock
  lets one run at a time, each sandbox is hibernated through the lifecycle service (its own
  short transactions, no transaction across the upstream call), and a sandbox that is no
  longer running by then is left alone. Each sandbox it hibernates counts once in
  `corral_budget_hibernations_total{team}`.
- The same job prunes the hourly meter of upstream work (`metering.prune`): the reconcile
  leader runs it after every period, so the meter's table holds about one hour of rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import clock, metering
from app.db import transaction
from app.errors import AppError
from app.identity.actor import Actor
from app.locks import Lock
from app.metrics import BUDGET_HIBERNATIONS
from app.models import Sandbox, Team
from app.runtime import Runtime
from app.usage import periods, repository

log = logging.getLogger(__name__)

# The fractions of a budget whose crossing is announced, for a team that names none.
DEFAULT_THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("0.9"))

BUDGET_ACTOR = Actor(key_id="budget", team_id=None, scopes=frozenset({"admin"}), is_admin=True)


async def month_to_date_credits(
    session: AsyncSession, team_id: str, at: datetime, *, timezone: ZoneInfo
) -> Decimal:
    """Credits the team's usage has cost from the start of `at`'s month (in `timezone`) up to
    `at`."""
    start = periods.month_start(at, timezone)
    if at <= start:
        return Decimal("0.000000")
    rows = await repository.usage_rows(
        session,
        repository.UsageQuery(
            start=start,
            end=at,
            at=at,
            group_by=(),
            timezone=timezone.key,
            team_id=team_id,
        ),
    )
    credits: Decimal = rows[0].credits
    return credits


async def month_to_date_by_team(
    session: AsyncSession, at: datetime, *, timezone: ZoneInfo
) -> dict[str, Decimal]:
    """`month_to_date_credits` of every team with usage this month, in one statement (a team
    without usage is absent: it spent 0)."""
    start = periods.month_start(at, timezone)
    if at <= start:
        return {}
    rows = await repository.usage_rows(
        session,
        repository.UsageQuery(
            start=start, end=at, at=at, group_by=("team",), timezone=timezone.key
        ),
    )
    return {row.team_id: row.credits for row in rows}


@dataclass(frozen=True)
class BudgetStatus:
    team_id: str
    month_start: datetime
    budget: Decimal | None
    policy: str
    soft_threshold: Decimal | None
    spent: Decimal
    remaining: Decimal | None  # None without a budget
    threshold_crossed: bool  # spent ≥ budget * soft threshold (or the budget is exhausted)
    exhausted: bool  # spent ≥ budget

    @property
    def warning(self) -> str | None:
        """The Corral-Budget-Warning header value, when there is something to warn about."""
        if not self.threshold_crossed or self.budget is None:
            return None
        state = "exhausted" if self.exhausted else "threshold"
        budget = f"{self.budget.normalize():f}"
        return f"{state}; spent={self.spent}; budget={budget}; month={self.month_start:%Y-%m}"


def status_of(team: Team, spent: Decimal, start: datetime) -> BudgetStatus:
    budget = team.monthly_budget_credits
    threshold = team.budget_soft_threshold
    exhausted = budget is not None and spent >= budget
    crossed = exhausted or (
        budget is not None and threshold is not None and spent >= budget * threshold
    )
    return BudgetStatus(
        team_id=team.id,
        month_start=start,
        budget=budget,
        policy=team.budget_policy,
        soft_threshold=threshold,
        spent=spent,
        remaining=None if budget is None else max(budget - spent, Decimal(0)),
        threshold_crossed=crossed,
        exhausted=exhausted,
    )


async def budget_status(
    session: AsyncSession, team: Team, at: datetime, *, timezone: ZoneInfo
) -> BudgetStatus:
    spent = await month_to_date_credits(session, team.id, at, timezone=timezone)
    return status_of(team, spent, periods.month_start(at, timezone))


async def exhausted_running(
    session: AsyncSession, at: datetime, *, timezone: ZoneInfo
) -> list[tuple[str, str]]:
    """(team id, sandbox id) of running sandboxes whose team has the hibernate policy and has
    exhausted its budget."""
    teams = list(
        await session.scalars(
            select(Team)
            .where(
                Team.budget_policy == "hibernate",
                Team.monthly_budget_credits.is_not(None),
                Team.deleted_at.is_(None),
                select(func.count())
                .select_from(Sandbox)
                .where(Sandbox.team_id == Team.id, Sandbox.state == "running")
                .scalar_subquery()
                > 0,
            )
            .order_by(Team.id)
        )
    )
    targets: list[tuple[str, str]] = []
    for team in teams:
        if not (await budget_status(session, team, at, timezone=timezone)).exhausted:
            continue
        running = await session.scalars(
            select(Sandbox.id)
            .where(Sandbox.team_id == team.id, Sandbox.state == "running")
            .order_by(Sandbox.id)
        )
        targets.extend((team.id, sandbox_id) for sandbox_id in running)
    return targets


async def enforce_budgets(rt: Runtime, at: datetime | None = None) -> int:
    """Hibernate the running sandboxes of every team with `budget_policy=hibernate` whose
    monthly budget is exhausted. Returns how many this call hibernated (0 when another
    replica holds the job's lock)."""
    from app.sandboxes import service as sandboxes_service
    from app.sandboxes.states import SandboxState

    at = at or clock.now()
    async with rt.engine.connect() as lock_conn:
        locked = await lock_conn.scalar(select(func.pg_try_advisory_lock(Lock.BUDGET_ENFORCE)))
        # End the implicit transaction at once: the lock is the session's, not a transaction's.
        await lock_conn.commit()
        if not locked:
            return 0
        try:
            await metering.prune(rt.engine, at)
            async with transaction(rt.sessions) as session:
                targets = await exhausted_running(session, at, timezone=rt.settings.budget_timezone)
            hibernated = 0
            for team_id, sandbox_id in targets:
                try:
                    outcome = await sandboxes_service.stop(
                        rt,
                        BUDGET_ACTOR,
                        sandbox_id,
                        to_state=SandboxState.HIBERNATED,
                        cause="budget",
                    )
                except AppError as exc:
                    # One sandbox the upstream would not stop must not spare the others;
                    # the next run tries again.
                    log.warning(
                        "budget hibernation failed",
                        extra={"team_id": team_id, "sandbox_id": sandbox_id, "error": exc.kind},
                    )
                    continue
                if outcome.sandbox.state == "hibernated" and outcome.sandbox.last_cause == "budget":
                    hibernated += 1
                    BUDGET_HIBERNATIONS.labels(team_id).inc()
            if targets:
                log.info(
                    "budget enforcement",
                    extra={"candidates": len(targets), "hibernated": hibernated},
                )
            return hibernated
        finally:
            await lock_conn.execute(select(func.pg_advisory_unlock(Lock.BUDGET_ENFORCE)))
            await lock_conn.commit()
