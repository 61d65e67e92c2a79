"""Scrape-time gauges computed from the database (the names are in app.metrics.GAUGE_NAMES).

Every replica reads the same tables, so every replica reports the same truth whichever one
Prometheus scrapes. A snapshot is cached for `ttl_seconds` so that several scrapers (or a
scrape storm) cost one round of queries; concurrent scrapes wait for the same refresh.

Invariants: labels are team ids and tiers only (both bounded by admin action), never sandbox
ids or owners; every query runs in one short read-only transaction, never across an await on
anything but the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import clock
from app.db import transaction
from app.models import OrgPlan, Sandbox, Team, UsageInterval, WebhookDelivery, WebhookEvent
from app.sandboxes.states import LIVE, SandboxState
from app.usage import budget


@dataclass(frozen=True)
class Snapshot:
    running: dict[tuple[str, str], int] = field(default_factory=dict)
    starting: dict[str, int] = field(default_factory=dict)
    burn_rate: dict[str, Decimal] = field(default_factory=dict)
    budget_remaining: dict[str, Decimal] = field(default_factory=dict)
    plan_limit: int = 0
    live: int = 0
    unmanaged: int = 0
    webhook_events: dict[str, int] = field(default_factory=dict)
    webhook_deliveries: dict[str, int] = field(default_factory=dict)

    @property
    def headroom(self) -> int:
        # Negative when more VMs are live than the plan allows (unmanaged ones, a lowered plan).
        return self.plan_limit - self.live


async def read_snapshot(session: AsyncSession, *, at: datetime, timezone: ZoneInfo) -> Snapshot:
    running_rows = await session.execute(
        select(Sandbox.team_id, Sandbox.tier, func.count())
        .where(Sandbox.state == SandboxState.RUNNING)
        .group_by(Sandbox.team_id, Sandbox.tier)
    )
    starting_rows = await session.execute(
        select(Sandbox.team_id, func.count())
        .where(Sandbox.state == SandboxState.STARTING)
        .group_by(Sandbox.team_id)
    )
    # Live as admission counts them: holding, or about to hold, a VM.
    live_rows = await session.execute(
        select(Sandbox.managed, func.count())
        .where(Sandbox.state.in_(LIVE))
        .group_by(Sandbox.managed)
    )
    live_by_managed = {bool(managed): int(n) for managed, n in live_rows}
    teams = list(
        await session.execute(
            select(Team.id, Team.monthly_budget_credits).where(Team.deleted_at.is_(None))
        )
    )
    rates = dict(
        (team_id, Decimal(rate))
        for team_id, rate in await session.execute(
            select(UsageInterval.team_id, func.sum(UsageInterval.credits_per_hour))
            .where(UsageInterval.ended_at.is_(None))
            .group_by(UsageInterval.team_id)
        )
    )
    spent = await budget.month_to_date_by_team(session, at, timezone=timezone)
    remaining = {
        team_id: Decimal(monthly) - spent.get(team_id, Decimal(0))
        for team_id, monthly in teams
        if monthly is not None
    }
    plan = await session.get(OrgPlan, 1)
    limit = 0
    if plan is not None:
        limit = plan.plan_limit
        if plan.observed_limit is not None:
            limit = min(limit, plan.observed_limit)
    # Counted from the outbox, so every replica reports every event once, whoever wrote it.
    events = await session.execute(
        select(WebhookEvent.type, func.count()).group_by(WebhookEvent.type)
    )
    deliveries = await session.execute(
        select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
    )
    return Snapshot(
        webhook_events={kind: int(n) for kind, n in events},
        webhook_deliveries={status: int(n) for status, n in deliveries},
        running={(team, tier): int(n) for team, tier, n in running_rows},
        starting={team: int(n) for team, n in starting_rows},
        burn_rate={team_id: rates.get(team_id, Decimal(0)) for team_id, _ in teams},
        budget_remaining=remaining,
        plan_limit=limit,
        live=sum(live_by_managed.values()),
        unmanaged=live_by_managed.get(False, 0),
    )


class DatabaseGauges:
    """Holds the cached snapshot; `refresh` before a scrape, then collect it synchronously."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        timezone: ZoneInfo,
        ttl_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        # Budget spend counts from the month's start in the accounting timezone.
        self.timezone = timezone
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._snapshot: Snapshot | None = None
        self._taken_at = 0.0
        self._lock = asyncio.Lock()

    async def refresh(self) -> Snapshot:
        async with self._lock:
            if self._snapshot is None or self.clock() - self._taken_at >= self.ttl_seconds:
                async with transaction(self.sessions) as session:
                    self._snapshot = await read_snapshot(
                        session, at=clock.now(), timezone=self.timezone
                    )
                self._taken_at = self.clock()
            return self._snapshot

    def collector(self, snapshot: Snapshot) -> Collector:
        return _SnapshotCollector(snapshot)


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.snapshot
        running = GaugeMetricFamily(
            "corral_sandboxes_running", "Running sandboxes.", labels=["team", "tier"]
        )
        for (team, tier), n in sorted(s.running.items()):
            running.add_metric([team, tier], n)
        yield running
        starting = GaugeMetricFamily(
            "corral_sandboxes_starting",
            "Sandboxes admitted whose upstream start is in flight.",
            labels=["team"],
        )
        for team, n in sorted(s.starting.items()):
            starting.add_metric([team], n)
        yield starting
        burn = GaugeMetricFamily(
            "corral_burn_rate_credits_per_hour",
            "Summed credits per hour of the team's running sandboxes.",
            labels=["team"],
        )
        for team, rate in sorted(s.burn_rate.items()):
            burn.add_metric([team], float(rate))
        yield burn
        remaining = GaugeMetricFamily(
            "corral_budget_remaining_credits",
            "Monthly budget minus month-to-date spend, for teams with a budget.",
            labels=["team"],
        )
        for team, credits in sorted(s.budget_remaining.items()):
            remaining.add_metric([team], float(credits))
        yield remaining
        yield GaugeMetricFamily(
            "corral_org_plan_limit",
            "The effective org limit: min(plan limit, concurrent_vm_limit observed upstream).",
            value=s.plan_limit,
        )
        yield GaugeMetricFamily(
            "corral_org_plan_headroom",
            "Effective org limit minus live (starting, running, unknown) sandboxes.",
            value=s.headroom,
        )
        yield GaugeMetricFamily(
            "corral_unmanaged_sandboxes",
            "Live sandboxes running upstream that Corral did not start.",
            value=s.unmanaged,
        )
        written = CounterMetricFamily(
            "corral_webhook_events",
            "Webhook events written to the outbox, by type.",
            labels=["type"],
        )
        for kind, n in sorted(s.webhook_events.items()):
            written.add_metric([kind], n)
        yield written
        deliveries = GaugeMetricFamily(
            "corral_webhook_deliveries",
            "Webhook deliveries by status; pending is the backlog.",
            labels=["status"],
        )
        for status in ("pending", "succeeded", "failed", "cancelled"):
            deliveries.add_metric([status], s.webhook_deliveries.get(status, 0))
        yield deliveries
