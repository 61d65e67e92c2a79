"""The figures of the overview, the teams table and the live endpoint, from Corral's services.

Definitions, each the one an API route or a metric already uses:

- effective limit and headroom: `/v1/admin/plan`'s effective limit, and `/v1/quota`'s org
  headroom, max(limit - live, 0);
- live: sandboxes `starting`, `running` or `unknown` (admission's set), unmanaged ones
  included; unmanaged: live ones Corral did not start;
- burn rate: admission's, the credits per hour of the live sandboxes' tiers at the prices in
  force now (`/v1/quota`'s `burn_credits_per_hour`), and its USD at the current credit price;
- month-to-date spend: the usage report over [start of the month in the accounting timezone,
  now), grouped by team for all teams in one statement; the forecast for the month is that
  spend plus the burn rate over the hours left in it;
- a team is near its budget from its soft threshold (80 % when it sets none), over it once
  the spend reaches it (`budget.status_of`).

A team key's figures are its own team's, as `/v1/quota` and `/v1/usage` give them to that key;
only the effective limit and headroom are the organisation's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from app.admission import quota
from app.admission import service as admission_service
from app.dashboard import formatting, repository
from app.identity import service as identity_service
from app.identity.actor import Actor
from app.metrics import ADMISSIONS
from app.models import Team
from app.sandboxes.states import SandboxState
from app.usage import budget, periods, prices, reports
from app.usage.budget import BudgetStatus

NEAR_BUDGET = Decimal("0.8")
_SECONDS_PER_HOUR = Decimal(3600)


@dataclass(frozen=True)
class Money:
    credits: Decimal
    usd: Decimal


ZERO = Money(Decimal(0), Decimal(0))


@dataclass(frozen=True)
class LiveCounts:
    running: int = 0
    starting: int = 0
    unknown: int = 0
    unmanaged: int = 0
    # team id → live sandboxes by tier; team id → running ones
    tiers: dict[str, dict[str, int]] = field(default_factory=dict)
    running_by_team: dict[str, int] = field(default_factory=dict)

    @property
    def live(self) -> int:
        return self.running + self.starting + self.unknown

    def live_of(self, team_id: str) -> int:
        return sum(self.tiers.get(team_id, {}).values())


def live_counts(rows: Iterable[Any]) -> LiveCounts:
    by_state: dict[str, int] = defaultdict(int)
    tiers: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    running: dict[str, int] = defaultdict(int)
    unmanaged = 0
    for row in rows:
        n = int(row.n)
        by_state[row.state] += n
        tiers[row.team_id][row.tier] += n
        if row.state == SandboxState.RUNNING:
            running[row.team_id] += n
        if not row.managed:
            unmanaged += n
    return LiveCounts(
        running=by_state[SandboxState.RUNNING],
        starting=by_state[SandboxState.STARTING],
        unknown=by_state[SandboxState.UNKNOWN],
        unmanaged=unmanaged,
        tiers={team: dict(counts) for team, counts in tiers.items()},
        running_by_team=dict(running),
    )


def burn_of(tiers: dict[str, int], rates: dict[str, Decimal]) -> Decimal:
    """Credits per hour of live sandboxes by tier, as admission sums a team's burn rate."""
    return sum((rates[tier] * n for tier, n in tiers.items()), Decimal(0))


@dataclass(frozen=True)
class Month:
    start: datetime
    end: datetime
    at: datetime
    spent: Money
    by_team: dict[str, Money]

    @property
    def hours_left(self) -> Decimal:
        seconds = Decimal(str(max((self.end - self.at).total_seconds(), 0)))
        return seconds / _SECONDS_PER_HOUR

    def forecast(self, burn: Money) -> Money:
        return Money(
            self.spent.credits + burn.credits * self.hours_left,
            self.spent.usd + burn.usd * self.hours_left,
        )


async def month_spend(
    session: AsyncSession, actor: Actor, at: datetime, timezone: ZoneInfo
) -> Month:
    """Month-to-date spend as the usage report gives it to `actor` (admins: per team, all teams
    in one statement)."""
    start = periods.month_start(at, timezone)
    report = await reports.report(
        session,
        actor,
        span=reports.Window(start, max(start, at)),
        keys=["team"] if actor.is_admin else [],
        team=None,
        at=at,
        timezone=timezone,
    )
    by_team = {row.team: Money(row.credits, row.usd) for row in report.rows if row.team is not None}
    return Month(
        start=start,
        end=periods.next_month_start(start, timezone),
        at=at,
        spent=Money(report.total.credits, report.total.usd),
        by_team=by_team,
    )


@dataclass(frozen=True)
class Figures:
    scope: str  # "org" for an admin, "team" for a team key
    effective_limit: int
    headroom: int
    live: int
    running: int
    starting: int
    unknown: int | None
    unmanaged: int | None
    team_limit: int | None
    team_headroom: int | None
    burn: Money
    month: Month

    @property
    def forecast(self) -> Money:
        return self.month.forecast(self.burn)

    def hooks(self) -> dict[str, dict[str, str]]:
        """Each key figure by its `data-figure` name: the plain number and its text."""
        counts: dict[str, int | None] = {
            "effective-limit": self.effective_limit,
            "live": self.live,
            "running": self.running,
            "starting": self.starting,
            "unmanaged": self.unmanaged,
            "headroom": self.headroom,
        }
        shown = {
            name: {"value": formatting.plain(n), "text": formatting.integer(n)}
            for name, n in counts.items()
            if n is not None
        }
        money = {
            "burn-rate": (self.burn, " /h"),
            "month-spend": (self.month.spent, ""),
            "month-forecast": (self.forecast, ""),
        }
        for name, (amount, unit) in money.items():
            shown[name] = {
                "value": formatting.plain(amount.credits.quantize(Decimal("0.000001"))),
                "text": f"{formatting.credits(amount.credits)} credits{unit}",
                "usd": f"{formatting.usd(amount.usd)}{unit}",
            }
        return shown


@dataclass(frozen=True)
class Basis:
    """What several figures are computed from, read once per page."""

    at: datetime
    rates: dict[str, Decimal]
    credit_usd: Decimal
    month: Month
    live: LiveCounts

    def money(self, credits_per_hour: Decimal) -> Money:
        return Money(credits_per_hour, credits_per_hour * self.credit_usd)


async def basis(session: AsyncSession, actor: Actor, at: datetime, timezone: ZoneInfo) -> Basis:
    return Basis(
        at=at,
        rates=await admission_service.rates_at(session, at),
        credit_usd=(await prices.price_book(session, at)).current.credit_usd,
        month=await month_spend(session, actor, at, timezone),
        live=live_counts(await repository.live_sandboxes(session)),
    )


async def figures(session: AsyncSession, actor: Actor, base: Basis, timezone: ZoneInfo) -> Figures:
    if actor.is_admin:
        plan = await quota.plan(session)
        live = base.live
        burn = sum((burn_of(tiers, base.rates) for tiers in live.tiers.values()), Decimal(0))
        return Figures(
            scope="org",
            effective_limit=plan.effective_limit,
            headroom=max(plan.effective_limit - live.live, 0),
            live=live.live,
            running=live.running,
            starting=live.starting,
            unknown=live.unknown,
            unmanaged=live.unmanaged,
            team_limit=None,
            team_headroom=None,
            burn=base.money(burn),
            month=base.month,
        )
    shown = await quota.show(session, actor, None, timezone=timezone)
    return Figures(
        scope="team",
        effective_limit=shown.org.effective_limit,
        headroom=shown.org.headroom,
        live=shown.usage.live,
        running=shown.usage.running,
        starting=shown.usage.starting,
        unknown=None,
        unmanaged=None,
        team_limit=shown.limits.max_concurrent,
        team_headroom=shown.headroom.concurrent,
        burn=base.money(shown.usage.burn_credits_per_hour),
        month=base.month,
    )


@dataclass(frozen=True)
class TeamRow:
    team: Team
    live: int
    running: int
    burn: Money
    spent: Money
    status: BudgetStatus

    @property
    def fraction(self) -> Decimal | None:
        """Spend as a fraction of the budget (None without one)."""
        if self.status.budget is None:
            return None
        if self.status.budget == 0:
            return Decimal(1)
        return self.spent.credits / self.status.budget

    @property
    def over(self) -> bool:
        return self.status.exhausted

    @property
    def near(self) -> bool:
        fraction = self.fraction
        return self.status.threshold_crossed or (fraction is not None and fraction >= NEAR_BUDGET)


async def team_rows(session: AsyncSession, actor: Actor, base: Basis) -> list[TeamRow]:
    """Every team the actor sees, with its live counts, burn rate and month-to-date spend,
    in a fixed number of statements whatever the number of teams."""
    if actor.is_admin:
        teams = await identity_service.list_teams(session)
    else:
        assert actor.team_id is not None
        teams = [await identity_service.get_team(session, actor.team_id)]
    rows = []
    for team in teams:
        spent = base.month.by_team.get(team.id, ZERO) if actor.is_admin else base.month.spent
        rows.append(
            TeamRow(
                team=team,
                live=base.live.live_of(team.id),
                running=base.live.running_by_team.get(team.id, 0),
                burn=base.money(burn_of(base.live.tiers.get(team.id, {}), base.rates)),
                spent=spent,
                status=budget.status_of(team, spent.credits, base.month.start),
            )
        )
    return rows


@dataclass(frozen=True)
class RefusalCount:
    limit: str
    count: int


def replica_refusals() -> list[RefusalCount]:
    """Admission refusals counted by this replica since it started, by limit (the
    `corral_admissions_total` counter; other replicas count their own)."""
    counts: dict[str, int] = defaultdict(int)
    for metric in ADMISSIONS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("outcome") == "refused":
                counts[sample.labels.get("limit", "")] += int(sample.value)
    return [RefusalCount(limit, n) for limit, n in sorted(counts.items()) if n]


def near_budget(rows: Sequence[TeamRow]) -> list[TeamRow]:
    """Teams near or over their budget, the most spent (as a fraction) first."""
    flagged = [row for row in rows if row.near or row.over]
    return sorted(flagged, key=lambda row: (-(row.fraction or Decimal(0)), row.team.id))
