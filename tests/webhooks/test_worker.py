"""The delivery worker against a real receiver process: claims shared by two workers, one
endpoint's trouble kept from another's deliveries, the LISTEN wake-up, retries found by the
poll, and a stop that gives its claims back. Assertions are on outcomes and order; the waits
are generous bounds, never measurements."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from app.db import autocommit, create_engine, session_factory
from app.runtime import Runtime
from app.upstream.simulator import simulator_of
from app.webhooks import delivery
from app.webhooks.worker import PROBE_SECONDS, DeliveryWorker
from tests.webhooks.conftest import (
    EVENT_TYPE,
    OTHER_TYPE,
    add_endpoint,
    deliveries,
    emit,
    wait_for,
)
from tests.webhooks.receiver import Receiver


def tuned(rt: Runtime, **settings: Any) -> Runtime:
    return dataclasses.replace(rt, settings=rt.settings.model_copy(update=settings))


@asynccontextmanager
async def working(
    rt: Runtime, *, http: httpx.AsyncClient | None = None, max_in_flight: int = 64
) -> AsyncIterator[DeliveryWorker]:
    worker = DeliveryWorker(rt, http=http, max_in_flight=max_in_flight)
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


def all_done(rt: Runtime, *endpoint_ids: str, status: str = "succeeded") -> Callable[[], Any]:
    async def done() -> bool:
        for endpoint_id in endpoint_ids:
            rows = await deliveries(rt.sessions, endpoint_id)
            if not rows or any(row.status != status for row in rows):
                return False
        return True

    return done


async def test_two_workers_never_send_the_same_delivery_twice(
    runtime: Runtime, database_url: str, webhook_receiver: Receiver
) -> None:
    first = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok?delay=0.02")
    second = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok?delay=0.01")
    ids = set(await emit(runtime.sessions, 100))
    sent: Counter[str] = Counter()

    def counting(name: str) -> httpx.AsyncClient:
        async def count(_: httpx.Request) -> None:
            sent[name] += 1

        client = delivery.new_client(runtime.settings)
        client.event_hooks["request"] = [count]
        return client

    other_engine = create_engine(database_url, pool_size=4)
    other = dataclasses.replace(
        runtime, engine=other_engine, sessions=session_factory(other_engine)
    )
    a, b = counting("a"), counting("b")
    try:
        async with working(runtime, http=a), working(other, http=b):
            await wait_for(all_done(runtime, first, second), "every delivery to succeed")
    finally:
        await a.aclose()
        await b.aclose()
        await other_engine.dispose()

    received = Counter(r["id"] for r in webhook_receiver.requests() if r["id"] in ids)
    assert set(received) == ids
    assert set(received.values()) == {2}, "each event once per endpoint"
    assert sum(sent.values()) == 200
    assert sent["a"] > 0 and sent["b"] > 0, f"both workers should have sent: {sent}"


@pytest.mark.parametrize("max_in_flight", [4, 64])
async def test_a_slow_and_a_failing_endpoint_do_not_delay_a_healthy_one(
    runtime: Runtime, webhook_receiver: Receiver, max_in_flight: int
) -> None:
    rt = tuned(runtime, webhook_concurrency_per_endpoint=2)
    slow_url = f"{webhook_receiver.url}/slow?delay=3"
    await add_endpoint(rt.sessions, slow_url)
    await add_endpoint(rt.sessions, f"{webhook_receiver.url}/fail")
    healthy = await add_endpoint(rt.sessions, f"{webhook_receiver.url}/ok", types=[OTHER_TYPE])
    # The troubled endpoints' deliveries are older: a claim by age alone would take them all.
    troubled = set(await emit(rt.sessions, 10, EVENT_TYPE))
    wanted = set(await emit(rt.sessions, 10, OTHER_TYPE))

    # With 4, fewer slots than the troubled endpoints could fill between them; with 64, room
    # for all their backlog if the per-endpoint limit did not hold.
    async with working(rt, max_in_flight=max_in_flight):
        await wait_for(all_done(rt, healthy), "the healthy endpoint's deliveries")

    log = webhook_receiver.requests()
    last_healthy = max(i for i, r in enumerate(log) if r["id"] in wanted)
    slow_before = [r for r in log[:last_healthy] if r["id"] in troubled and r["path"] == "/slow"]
    # Every healthy delivery arrived within the slow endpoint's first round of two.
    assert len(slow_before) <= 2


async def test_listen_wakes_the_worker_long_before_its_poll(
    runtime: Runtime, webhook_receiver: Receiver
) -> None:
    rt = tuned(runtime, webhook_poll_seconds=60)
    await add_endpoint(rt.sessions, f"{webhook_receiver.url}/ok")

    async with working(rt) as worker:

        async def listening() -> bool:
            return worker.listening.is_set()

        await wait_for(listening, "the worker to listen")
        [warm_up] = await emit(rt.sessions)
        await wait_for(lambda: _received(webhook_receiver, warm_up), "the first event")
        # Nothing but a notification wakes the worker now, for a minute.
        [event_id] = await emit(rt.sessions)
        await wait_for(lambda: _received(webhook_receiver, event_id), "the notified event", 20)


async def _received(receiver: Receiver, event_id: str) -> bool:
    return event_id in receiver.ids()


async def test_a_retry_that_comes_due_is_found_by_the_poll(
    runtime: Runtime, webhook_receiver: Receiver
) -> None:
    rt = tuned(runtime, webhook_poll_seconds=0.1)
    endpoint_id = await add_endpoint(rt.sessions, f"{webhook_receiver.url}/fail")
    [event_id] = await emit(rt.sessions)

    async def attempts(n: int) -> bool:
        [row] = await deliveries(rt.sessions, endpoint_id)
        return row.attempts >= n

    async with working(rt):
        await wait_for(lambda: attempts(1), "the first attempt")
        simulator_of(rt.simulator).clock.advance(5)
        await wait_for(lambda: attempts(2), "the retry 5 s later")

    assert webhook_receiver.ids().count(event_id) == 2
    [row] = await deliveries(rt.sessions, endpoint_id)
    assert row.status == "pending" and row.attempts == 2


async def test_stop_gives_the_claims_in_flight_back(
    runtime: Runtime, webhook_receiver: Receiver
) -> None:
    endpoint_id = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/slow?delay=5")
    [event_id] = await emit(runtime.sessions)

    async with working(runtime):
        await wait_for(lambda: _received(webhook_receiver, event_id), "the attempt to start")

    [row] = await deliveries(runtime.sessions, endpoint_id)
    # Not recorded (no answer came), and free for any replica at once.
    assert (row.status, row.attempts, row.claimed_until) == ("pending", 0, None)


async def test_a_failing_endpoint_is_only_probed_until_it_succeeds_again(
    runtime: Runtime, webhook_receiver: Receiver
) -> None:
    rt = tuned(runtime, webhook_poll_seconds=0.1)
    endpoint_id = await add_endpoint(rt.sessions, f"{webhook_receiver.url}/fail?delay=0.2")
    ids = set(await emit(rt.sessions, 30))

    def arrivals(path: str) -> list[float]:
        return sorted(
            r["received_at"]
            for r in webhook_receiver.requests()
            if r["id"] in ids and r["path"] == path
        )

    async def failed(n: int) -> bool:
        return len(arrivals("/fail")) >= n

    async with working(rt):
        # Two rounds of four fail (five failures in a row make it failing), then probes.
        await wait_for(lambda: failed(10), "ten failed attempts")
        async with autocommit(rt.engine) as conn:
            await conn.exec_driver_sql(
                f"UPDATE webhook_endpoints SET url = '{webhook_receiver.url}/ok?delay=0.2'"
                f" WHERE id = '{endpoint_id}'"
            )

        async def recovered() -> bool:
            rows = await deliveries(rt.sessions, endpoint_id)
            return sum(row.status == "succeeded" for row in rows) >= 12

        await wait_for(recovered, "the endpoint to recover")

    failing = arrivals("/fail")
    # After two rounds of four, one probe at a time, a probe interval apart.
    probes = [b - a for a, b in itertools.pairwise(failing[8:10])]
    assert min(probes) >= PROBE_SECONDS, probes
    # After its first success it has all its slots again: attempts overlap.
    healthy = arrivals("/ok")
    assert min(b - a for a, b in itertools.pairwise(healthy)) < 0.1
