"""A simulated month on the shared clock (DESIGN §12, §13): a team spending at a steady rate
is told of its 50/80/90 % crossings and its exhaustion on the right simulated days, exactly
once each, is told every day before that when its budget will run out (naming the right date
within a day), is hibernated by budget once, and starts over in the next month. A receiver in
its own process, registered through the admin API and verifying with `standardwebhooks`, gets
every one of those events, once, while the month runs."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import select

from app import clock
from app.models import UsageInterval, WebhookEvent
from app.runtime import Runtime
from app.usage import budget, periods
from app.webhooks.events import EVENT_TYPES
from app.webhooks.worker import DeliveryWorker
from tests.fixtures import factories
from tests.reconcile.helpers import at
from tests.webhooks.receiver import Receiver, running

ADVANCE = "/v1/admin/clock/advance"
STEP = timedelta(hours=6)
# The budget lasts this long at the sandbox's rate.
HOURS_OF_BUDGET = 490


async def _advance(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, upstream_id: str | None, seconds: float
) -> None:
    if upstream_id is not None:
        # Someone works in it: it never idles into hibernation (its timeout is a day).
        touched = await sim.post(f"/_simulator/vms/{upstream_id}/touch")
        assert touched.status_code == 200, touched.text
    moved = await client.post(ADVANCE, json={"seconds": seconds}, headers=factories.ADMIN)
    assert moved.status_code == 200, moved.text


async def _events(runtime: Runtime) -> list[WebhookEvent]:
    async with runtime.sessions() as session:
        return list(
            await session.scalars(
                select(WebhookEvent)
                .where(WebhookEvent.team_id == "steady")
                .order_by(WebhookEvent.occurred_at, WebhookEvent.type)
            )
        )


def _day(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d}"


@asynccontextmanager
async def _receiver(
    client: httpx.AsyncClient, runtime: Runtime, log_dir: Path
) -> AsyncIterator[Receiver]:
    """An endpoint for every event type, made through the admin API, whose receiver verifies
    with the secret that API showed once; and a delivery worker, as a replica runs one."""
    made = await client.post(
        "/v1/admin/webhooks",
        json={"url": "http://127.0.0.1:9/unused", "events": sorted(EVENT_TYPES)},
        headers=factories.ADMIN,
    )
    assert made.status_code == 201, made.text
    with running([made.json()["secret"]], log_dir) as receiver:
        moved = await client.patch(
            f"/v1/admin/webhooks/{made.json()['id']}",
            json={"url": f"{receiver.url}/ok"},
            headers=factories.ADMIN,
        )
        assert moved.status_code == 200, moved.text
        worker = DeliveryWorker(runtime)
        worker.start()
        try:
            yield receiver
        finally:
            await worker.stop()


async def _all_delivered(runtime: Runtime, receiver: Receiver) -> list[dict[str, object]]:
    async with runtime.sessions() as session:
        written = set(await session.scalars(select(WebhookEvent.id)))
    for _ in range(600):
        got = receiver.requests()
        if {r["id"] for r in got} >= written:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(written - {r['id'] for r in receiver.requests()})} undelivered")


async def test_a_steady_spender_is_told_each_threshold_on_its_day_once(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime, tmp_path: Path
) -> None:
    async with _receiver(client, runtime, tmp_path) as receiver:
        await _a_month_and_a_half(client, sim, runtime)
        received = await _all_delivered(runtime, receiver)
    async with runtime.sessions() as session:
        written = {e.id: e.type for e in await session.scalars(select(WebhookEvent))}
    # Every event, verified, exactly once (no replica died), under its own id and type.
    assert sorted(r["id"] for r in received) == sorted(written)
    assert all(r["verified"] for r in received)
    assert {r["id"]: r["type"] for r in received} == written
    assert Counter(written.values())["budget.threshold_crossed"] == 4


async def _a_month_and_a_half(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
) -> None:
    timezone = runtime.settings.budget_timezone
    first = periods.next_month_start(clock.now(), timezone)
    await _advance(client, sim, None, (first - clock.now()).total_seconds() + 60)
    headers = await factories.team_with_key(client, "steady", budget_policy="hibernate")
    created = await factories.sandbox(client, headers, hibernation_timeout_seconds=86400)
    async with runtime.sessions() as session:
        interval = await session.scalar(
            select(UsageInterval).where(UsageInterval.sandbox_id == created["id"])
        )
    assert interval is not None and interval.credits_per_hour > 0
    began, rate = interval.started_at, interval.credits_per_hour
    patched = await client.patch(
        "/v1/admin/teams/steady",
        json={"monthly_budget_credits": str(rate * HOURS_OF_BUDGET)},
        headers=factories.ADMIN,
    )
    assert patched.status_code == 200, patched.text

    def crossing(fraction: str) -> datetime:
        return began + timedelta(hours=float(HOURS_OF_BUDGET * Decimal(fraction)))

    second = periods.next_month_start(first, timezone)
    upstream_id: str | None = created["upstream_id"]
    while clock.now() + STEP < second:
        await _advance(client, sim, upstream_id, STEP.total_seconds())
        if await budget.enforce_budgets(runtime):
            upstream_id = None  # hibernated by budget: no one works in it any more
    january = await _events(runtime)

    kinds = Counter(e.type for e in january)
    assert kinds["budget.threshold_crossed"] == 3
    assert kinds["budget.exhausted"] == 1
    assert kinds["sandbox.hibernated_by_budget"] == 1
    for event in january:
        if event.type == "budget.threshold_crossed":
            expected = crossing(event.data["threshold"])
            # Told at the first evaluation after the crossing, on its simulated day.
            assert expected <= event.occurred_at < expected + STEP, event.data
            assert _day(event.occurred_at) == _day(expected), event.data
    [exhausted] = [e for e in january if e.type == "budget.exhausted"]
    assert _day(exhausted.occurred_at) == _day(crossing("1"))
    assert Decimal(exhausted.data["spent_credits"]) >= rate * HOURS_OF_BUDGET
    projected = [e for e in january if e.type == "budget.projected_exhaustion"]
    days = [_day(e.occurred_at) for e in projected]
    # Once a day, every day from the first until the exhaustion.
    assert len(days) == len(set(days)) == (crossing("1") - first).days + 1
    for event in projected:
        assert abs(at(event.data["projected_at"]) - crossing("1")) < timedelta(days=1)
        assert event.occurred_at < exhausted.occurred_at

    # The next month: a fresh budget, the same thresholds told again, once.
    await _advance(client, sim, None, (second - clock.now()).total_seconds() + 60)
    started = await client.post(f"/v1/sandboxes/{created['id']}/start", headers=headers)
    assert started.status_code == 200, started.text
    upstream_id = created["upstream_id"]
    restarted = clock.now()
    while clock.now() < restarted + timedelta(hours=HOURS_OF_BUDGET / 2 + 12):
        await _advance(client, sim, upstream_id, STEP.total_seconds())
    february = [e for e in await _events(runtime) if e.occurred_at >= second]
    crossed = [e for e in february if e.type == "budget.threshold_crossed"]
    assert [e.data["threshold"] for e in crossed] == ["0.5"]
    assert crossed[0].data["month"] == f"{second:%Y-%m}"
    half = restarted + timedelta(hours=HOURS_OF_BUDGET / 2)
    assert half <= crossed[0].occurred_at < half + STEP + timedelta(minutes=5)
