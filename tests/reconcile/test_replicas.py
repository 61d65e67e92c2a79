"""Two real `corral serve` processes on one database and one standalone simulator: exactly one
of them reconciles, and when it is killed the other takes over."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.db import create_engine, session_factory, transaction
from app.models import ReconcileRun
from tests import processes
from tests.conftest import ADMIN_KEY
from tests.database import scratch

SIM_KEY = "replica-test-simulator-key"
INTERVAL = "0.5"
# A generous bound for an outcome to appear; nothing is asserted about how fast it does.
WAIT_SECONDS = 60.0


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with scratch(f"corral_replicas_{os.getpid()}") as url:
        yield url


async def runs(url: str) -> list[str]:
    """The replica of every reconcile run so far, in order."""
    engine = create_engine(url, pool_size=1)
    try:
        async with transaction(session_factory(engine)) as session:
            rows = await session.scalars(select(ReconcileRun.replica).order_by(ReconcileRun.id))
            return list(rows)
    finally:
        await engine.dispose()


async def test_one_replica_reconciles_and_another_takes_over_when_it_dies(
    database: str, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        sim = stack.enter_context(processes.simulator(SIM_KEY, tmp_path))
        replicas = {
            name: stack.enter_context(
                processes.corral(
                    database_url=database,
                    upstream_url=sim.url,
                    upstream_key=SIM_KEY,
                    admin_key=ADMIN_KEY,
                    log_dir=tmp_path,
                    reconcile_enabled="true",
                    reconcile_interval=INTERVAL,
                    replica=name,
                )
            )
            for name in ("a", "b")
        }

        async def periods() -> bool:
            return len(await runs(database)) >= 8

        await wait_for(periods, "eight reconcile periods")
        before = await runs(database)
        by_replica = Counter(before)
        assert len(by_replica) == 1, f"more than one replica reconciled: {by_replica}"
        [leader] = by_replica
        [follower] = set(replicas) - {leader}

        replicas[leader].kill()

        async def follower_leads() -> bool:
            return (await runs(database))[len(before) :].count(follower) >= 3

        await wait_for(follower_leads, f"replica {follower} to take over")
        after = (await runs(database))[len(before) :]
        # The killed leader may have recorded the period it was in; nothing after that.
        assert set(after[1:]) == {follower}

        async with httpx.AsyncClient(base_url=replicas[follower].url) as http:
            listing = await http.get(
                "/v1/admin/reconciliation",
                params={"limit": 3},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
        assert listing.status_code == 200
        body = listing.json()
        assert {r["replica"] for r in body["runs"]} == {follower}
        assert all(r["outcome"] == "ok" for r in body["runs"])
