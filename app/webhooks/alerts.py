"""The budget and plan alerts (DESIGN §13): which events are due now, each once per period.

`evaluate` runs after every reconcile period on the leader (and after a jump of a simulated
clock), in one transaction that reads the figures and writes the events they call for:

- `budget.threshold_crossed`: month-to-date spend ≥ budget times threshold, for each of the team's
  thresholds (default 50/80/90 %), once per threshold per budget month;
- `budget.exhausted`: spend ≥ budget, once per budget month;
- `budget.projected_exhaustion`: not yet exhausted, but at the current burn rate (the summed
  price of the team's open intervals) the remaining budget runs out before the month ends;
  once per day (of the accounting timezone) per team, naming the projected moment;
- `org.plan_headroom_low` / `org.plan_full`: on entering the condition (less than 10 % of the
  effective plan free / none free), once per episode; the condition is re-armed when a later
  evaluation finds it over. Admission also raises them in the transaction of the admission
  that fills the plan (`note_admission`), so a full plan is told at once, not a period later.

"Once" is the outbox's dedupe key (a budget month, a day) or the `alert_conditions` row (an
episode), so a second replica evaluating at the same time, or a period run again after a
crash, writes nothing twice. The month and day are those of the accounting timezone
(`CORRAL_BUDGET_TIMEZONE`), the same the budget itself runs in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app import clock
from app.db import transaction
from app.models import Team
from app.runtime import Runtime
from app.usage import budget, periods
from app.webhooks import alerts_repository as repository
from app.webhooks.events import Event, emit_many

# Below this fraction of the plan free, the headroom is low.
LOW_HEADROOM = Decimal("0.1")


def _plain(value: Decimal) -> str:
    return f"{value.normalize():f}" if value == value.to_integral() else f"{value:f}"


def thresholds_of(team: Team) -> Sequence[Decimal]:
    if team.budget_thresholds is None:
        return budget.DEFAULT_THRESHOLDS
    return [Decimal(t) for t in team.budget_thresholds]


def budget_events(
    team: Team,
    spent: Decimal,
    burn_per_hour: Decimal,
    at: datetime,
    timezone: ZoneInfo,
) -> list[Event]:
    """The budget events the figures call for at `at` (the outbox drops repeats)."""
    limit = team.monthly_budget_credits
    if limit is None:
        return []
    month_start = periods.month_start(at, timezone)
    resets_at = periods.next_month_start(at, timezone)
    month = f"{month_start.astimezone(timezone):%Y-%m}"
    figures = {
        "team": team.id,
        "spent_credits": f"{spent:f}",
        "budget_credits": _plain(limit),
        "remaining_credits": f"{max(limit - spent, Decimal(0)):f}",
        "burn_rate_credits_per_hour": f"{burn_per_hour:f}",
        "month": month,
        "resets_at": resets_at.isoformat(),
        "policy": team.budget_policy,
        "link": f"/v1/admin/teams/{team.id}",
    }
    events: list[Event] = []
    for threshold in thresholds_of(team):
        if spent >= limit * threshold:
            events.append(
                Event(
                    "budget.threshold_crossed",
                    {**figures, "threshold": _plain(threshold)},
                    team_id=team.id,
                    dedupe_key=f"budget.threshold_crossed:{team.id}:{month}:{_plain(threshold)}",
                    at=at,
                )
            )
    if spent >= limit:
        events.append(
            Event(
                "budget.exhausted",
                figures,
                team_id=team.id,
                dedupe_key=f"budget.exhausted:{team.id}:{month}",
                at=at,
            )
        )
    elif burn_per_hour > 0:
        hours = (limit - spent) / burn_per_hour
        projected = at + timedelta(hours=float(hours))
        if projected < resets_at:
            day = f"{at.astimezone(timezone):%Y-%m-%d}"
            events.append(
                Event(
                    "budget.projected_exhaustion",
                    {
                        **figures,
                        "projected_at": projected.isoformat(),
                        "projected_date": f"{projected.astimezone(timezone):%Y-%m-%d}",
                    },
                    team_id=team.id,
                    dedupe_key=f"budget.projected_exhaustion:{team.id}:{day}",
                    at=at,
                )
            )
    return events


async def plan_events(
    db: AsyncSession | AsyncConnection, live: int, limit: int, at: datetime, *, clears: bool
) -> list[Event]:
    """The plan events entering a condition calls for, with the conditions recorded; with
    `clears`, a condition found over is re-armed (admission only ever sets them: it cannot
    see sandboxes stop)."""
    free = limit - live
    states = {
        "org.plan_headroom_low": limit > 0 and Decimal(free) < LOW_HEADROOM * limit,
        "org.plan_full": limit > 0 and free <= 0,
    }
    data = {
        "live": live,
        "effective_limit": limit,
        "headroom": max(free, 0),
        "headroom_fraction": _plain(Decimal(max(free, 0)) / limit) if limit > 0 else "0",
        "link": "/v1/admin/plan",
    }
    events = []
    for name, active in states.items():
        if not active and not clears:
            continue
        if await repository.set_condition(db, name, active, at) and active:
            events.append(Event(name, data, at=at))
    return events


async def note_admission(db: AsyncSession, *, live_after: int, limit: int) -> None:
    """In the admitting transaction: the plan events this admission's VM brings about. Only
    an admission that leaves less than 10 % free writes anything."""
    if limit <= 0 or Decimal(limit - live_after) >= LOW_HEADROOM * limit:
        return
    await emit_many(db, await plan_events(db, live_after, limit, clock.now(), clears=False))


async def evaluate(rt: Runtime, at: datetime | None = None) -> list[str]:
    """Write every budget and plan event due at `at`; returns the ids of the events written."""
    at = at or clock.now()
    timezone = rt.settings.budget_timezone
    async with transaction(rt.sessions) as session:
        events: list[Event] = []
        rates = await repository.burn_rates(session)
        spent = await budget.month_to_date_by_team(session, at, timezone=timezone)
        for team in await repository.budgeted_teams(session):
            events += budget_events(
                team,
                spent.get(team.id, Decimal("0.000000")),
                rates.get(team.id, Decimal(0)),
                at,
                timezone,
            )
        live, limit = await repository.org_occupancy(session)
        events += await plan_events(session, live, limit, at, clears=True)
        return await emit_many(session, events)
