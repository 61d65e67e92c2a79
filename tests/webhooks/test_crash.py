"""At least once, through crashes (DESIGN §13): a replica killed with deliveries in flight
leaves them to another once their leases run out, and a database restart loses nothing.

Real processes: `corral serve` replicas on a scratch database, a standalone simulator, the
receiver; the restart is of a private Postgres cluster, never the shared server."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from app.db import async_url, create_engine, migrate, session_factory
from app.runtime import Runtime
from app.settings import Settings
from app.upstream.simulator import create_simulator_app
from app.webhooks.worker import DeliveryWorker
from tests import processes
from tests.conftest import ADMIN_KEY, SIMULATOR_KEY, simulated_runtime
from tests.database import scratch
from tests.pgcluster import Cluster, cluster
from tests.webhooks.conftest import add_endpoint, attempts_of, deliveries, emit, wait_for
from tests.webhooks.receiver import Receiver

SIM_KEY = "webhook-crash-simulator-key"


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with scratch(f"corral_webhook_crash_{os.getpid()}") as url:
        engine = create_engine(url, pool_size=2)
        await migrate(engine)
        await engine.dispose()
        yield url


async def test_a_killed_replica_s_deliveries_are_sent_again_by_the_survivor(
    database: str, tmp_path: Path, webhook_receiver: Receiver
) -> None:
    engine = create_engine(database, pool_size=2)
    sessions = session_factory(engine)
    try:
        endpoint_id = await add_endpoint(sessions, f"{webhook_receiver.url}/slow?delay=1")
        with ExitStack() as stack:
            sim = stack.enter_context(processes.simulator(SIM_KEY, tmp_path))
            a, b = (
                stack.enter_context(
                    processes.corral(
                        database_url=database,
                        upstream_url=sim.url,
                        upstream_key=SIM_KEY,
                        admin_key=ADMIN_KEY,
                        log_dir=tmp_path,
                        replica=name,
                        # A lease of 2 + 5 s: the survivor takes over soon after.
                        webhook_timeout_seconds="2",
                        webhook_poll_seconds="0.2",
                    )
                )
                for name in ("a", "b")
            )
            ids = set(await emit(sessions, 16))

            async def both_in_flight() -> bool:
                # Four per replica per endpoint: eight at once means both are sending.
                return len(ids & set(webhook_receiver.ids())) >= 8

            await wait_for(both_in_flight, "both replicas to send")
            a.kill()
            killed_at = time.time()

            async def all_succeeded() -> bool:
                rows = await deliveries(sessions, endpoint_id)
                return all(row.status == "succeeded" for row in rows)

            await wait_for(all_succeeded, "the survivor to deliver everything")
            assert b.popen.poll() is None

        requests = [r for r in webhook_receiver.requests() if r["id"] in ids]
        received = Counter(r["id"] for r in requests)
        assert set(received) == ids, "every event delivered at least once"
        assert all(r["verified"] for r in requests)
        # While both lived, SKIP LOCKED kept them apart.
        before_kill = Counter(r["id"] for r in requests if r["received_at"] < killed_at)
        assert set(before_kill.values()) == {1}
        # What the killed replica had in flight went again, under the same webhook-id.
        again = {event_id for event_id, n in received.items() if n > 1}
        assert again, "the killed replica had deliveries in flight"
        assert again <= set(before_kill)
        for row in await deliveries(sessions, endpoint_id):
            assert row.attempts >= 1
            assert len(await attempts_of(sessions, row.id)) == row.attempts
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    with cluster() as running:
        yield running


async def test_a_database_restart_loses_nothing_and_the_worker_resumes(
    pg: Cluster, webhook_receiver: Receiver
) -> None:
    url = async_url(pg.url)
    engine = create_engine(url, pool_size=4)
    await migrate(engine)
    settings = Settings(
        database_url=url,
        admin_key=ADMIN_KEY,
        upstream="simulator",
        reconcile_enabled=False,
        # Only a notification (or the reconnection) wakes it within the test.
        webhook_poll_seconds=60,
    )
    simulator = create_simulator_app(api_key=SIMULATOR_KEY)
    try:
        async with simulated_runtime(settings, engine, simulator) as rt:
            await _restart_under_load(pg, rt, webhook_receiver)
    finally:
        await engine.dispose()


async def _restart_under_load(pg: Cluster, rt: Runtime, receiver: Receiver) -> None:
    endpoint_id = await add_endpoint(rt.sessions, f"{receiver.url}/slow?delay=1")
    worker = DeliveryWorker(rt)
    worker.start()
    try:
        ids = set(await emit(rt.sessions, 12))

        async def sending() -> bool:
            return len(ids & set(receiver.ids())) >= 4

        await wait_for(sending, "the first attempts")
        # The answers to what is in flight arrive while the database is down.
        await asyncio.to_thread(pg.stop, "fast")
        await asyncio.sleep(1.5)
        await asyncio.to_thread(pg.start)

        async def all_succeeded() -> bool:
            rows = await deliveries(rt.sessions, endpoint_id)
            return len(rows) == len(ids) and all(row.status == "succeeded" for row in rows)

        await wait_for(all_succeeded, "every delivery after the restart")
        assert ids <= set(receiver.ids())

        async def listening_again() -> bool:
            return worker.connections >= 2 and worker.listening.is_set()

        await wait_for(listening_again, "the listener to reconnect")
        for _ in range(2):
            # The second can only have been heard on the new connection: the poll is a minute.
            [event_id] = await emit(rt.sessions)

            async def arrived(event_id: str = event_id) -> bool:
                return event_id in receiver.ids()

            await wait_for(arrived, "an event emitted after the restart", 20)
    finally:
        await worker.stop()
