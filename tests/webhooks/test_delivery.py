"""One delivery attempt against a real receiver process (DESIGN §13): what it signs, what each
answer leads to, the back-off schedule on Corral's clock, and the claim and its lease.

The clock is the in-process simulator's, frozen, so a schedule is checked exactly and moved
through by advancing it, never by sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import quote

import httpx
import pytest

from app import clock
from app.db import autocommit
from app.metrics import REGISTRY
from app.runtime import Runtime
from app.settings import Settings
from app.upstream.simulator import simulator_of
from app.upstream.simulator.clock import SimulatedClock
from app.webhooks import delivery, signing
from app.webhooks import delivery_repository as repository
from app.webhooks.delivery import BACKOFF, MAX_ATTEMPTS
from app.webhooks.delivery_repository import Claimed, Recorded
from tests.processes import free_port
from tests.webhooks.conftest import (
    EVENT_TYPE,
    NEW_SECRET,
    SECRET,
    add_endpoint,
    attempts_of,
    deliveries,
    emit,
    endpoint,
)
from tests.webhooks.receiver import Receiver

LEASE = timedelta(seconds=30)


@pytest.fixture
def sim_clock(runtime: Runtime) -> SimulatedClock:
    frozen = simulator_of(runtime.simulator).clock
    frozen.freeze()
    return frozen


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    client = delivery.new_client(settings)
    yield client
    await client.aclose()


async def claim(
    rt: Runtime,
    *,
    wall: datetime | None = None,
    per_endpoint: int = 4,
    in_flight: dict[str, int] | None = None,
    limit: int = 100,
) -> list[Claimed]:
    wall = wall or clock.wall()
    async with autocommit(rt.engine) as conn:
        return await repository.claim(
            conn,
            now=clock.now(),
            wall=wall,
            lease_until=wall + LEASE,
            per_endpoint=per_endpoint,
            in_flight=in_flight or {},
            limit=limit,
        )


async def attempt_once(
    rt: Runtime, http: httpx.AsyncClient, settings: Settings | None = None
) -> Recorded:
    [claimed] = await claim(rt)
    return await delivery.deliver(rt.engine, http, claimed, settings=settings or rt.settings)


def logged(receiver: Receiver, event_id: str) -> list[dict[str, object]]:
    return [r for r in receiver.requests() if r["id"] == event_id]


class TestSignature:
    async def test_the_receiver_verifies_it_with_the_standardwebhooks_library(
        self, runtime: Runtime, http: httpx.AsyncClient, webhook_receiver: Receiver
    ) -> None:
        endpoint_id = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
        [event_id] = await emit(runtime.sessions)

        recorded = await attempt_once(runtime, http)

        assert recorded.status == "succeeded"
        [request] = logged(webhook_receiver, event_id)
        assert request["verified_with"] == [True, False]
        assert request["signatures"] == 1
        assert request["type"] == EVENT_TYPE
        assert request["content_type"] == "application/json"
        assert str(request["user_agent"]).startswith("Corral")
        [row] = await deliveries(runtime.sessions, endpoint_id)
        assert (row.status, row.attempts, row.last_status_code) == ("succeeded", 1, 200)
        assert row.completed_at is not None and row.claimed_until is None
        [tried] = await attempts_of(runtime.sessions, row.id)
        assert (tried.attempt, tried.status_code, tried.error) == (1, 200, None)
        assert tried.duration_ms >= 0

    async def test_during_a_rotation_both_secrets_sign_and_each_verifies_alone(
        self, runtime: Runtime, http: httpx.AsyncClient, webhook_receiver: Receiver
    ) -> None:
        await add_endpoint(
            runtime.sessions,
            f"{webhook_receiver.url}/ok",
            secret=NEW_SECRET,
            previous_secret=SECRET,
            previous_secret_expires_at=clock.now() + timedelta(hours=24),
        )
        [event_id] = await emit(runtime.sessions)

        await attempt_once(runtime, http)

        [request] = logged(webhook_receiver, event_id)
        assert request["signatures"] == 2
        assert request["verified_with"] == [True, True]

    async def test_an_expired_previous_secret_no_longer_signs(
        self, runtime: Runtime, http: httpx.AsyncClient, webhook_receiver: Receiver
    ) -> None:
        await add_endpoint(
            runtime.sessions,
            f"{webhook_receiver.url}/ok",
            secret=NEW_SECRET,
            previous_secret=SECRET,
            previous_secret_expires_at=clock.now() - timedelta(seconds=1),
        )
        [event_id] = await emit(runtime.sessions)

        await attempt_once(runtime, http)

        [request] = logged(webhook_receiver, event_id)
        assert request["signatures"] == 1
        assert request["verified_with"] == [False, True]

    async def test_the_receiver_refuses_a_signature_by_another_secret(
        self, webhook_receiver: Receiver
    ) -> None:
        body = '{"data":{},"timestamp":"2026-01-01T00:00:00+00:00","type":"x"}'
        headers = signing.headers(
            [signing.new_secret()], message_id="msg_forged", sent_at=clock.wall(), body=body
        )
        async with httpx.AsyncClient() as client:
            await client.post(f"{webhook_receiver.url}/ok", content=body, headers=headers)

        [request] = logged(webhook_receiver, "msg_forged")
        assert request["verified"] is False

    async def test_a_simulated_month_later_the_timestamp_is_still_the_wall_clock(
        self,
        runtime: Runtime,
        http: httpx.AsyncClient,
        webhook_receiver: Receiver,
        sim_clock: SimulatedClock,
    ) -> None:
        await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
        sim_clock.advance(30 * 86400)
        [event_id] = await emit(runtime.sessions)

        await attempt_once(runtime, http)

        # The library refuses a timestamp more than five minutes from the receiver's clock.
        [request] = logged(webhook_receiver, event_id)
        assert request["verified_with"] == [True, False]


class TestOutcomes:
    async def test_410_disables_the_endpoint_and_fails_the_delivery(
        self, runtime: Runtime, http: httpx.AsyncClient, webhook_receiver: Receiver
    ) -> None:
        endpoint_id = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/gone")
        await emit(runtime.sessions, 2)

        [claimed] = await claim(runtime, per_endpoint=1)
        recorded = await delivery.deliver(runtime.engine, http, claimed, settings=runtime.settings)

        assert recorded.status == "failed"
        gone = await endpoint(runtime.sessions, endpoint_id)
        assert gone.enabled is False
        assert gone.disabled_reason is not None and "410" in gone.disabled_reason
        first, second = await deliveries(runtime.sessions, endpoint_id)
        assert (first.status, first.last_status_code, first.attempts) == ("failed", 410, 1)
        assert first.completed_at is not None and first.next_attempt_at is None
        # The endpoint's other deliveries wait, unclaimed, for it to be enabled again.
        assert second.status == "pending"
        assert await claim(runtime) == []

    async def test_a_500_is_retried_on_the_schedule_and_fails_after_the_seventh_attempt(
        self,
        runtime: Runtime,
        http: httpx.AsyncClient,
        webhook_receiver: Receiver,
        sim_clock: SimulatedClock,
    ) -> None:
        endpoint_id = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/fail")
        [event_id] = await emit(runtime.sessions)
        schedule = []

        for number in range(1, MAX_ATTEMPTS + 1):
            before = clock.now()
            recorded = await attempt_once(runtime, http)
            [row] = await deliveries(runtime.sessions, endpoint_id)
            assert row.attempts == number
            assert row.last_status_code == 500
            assert row.claimed_until is None
            if number == MAX_ATTEMPTS:
                break
            assert recorded.status == row.status == "pending"
            assert row.next_attempt_at is not None
            wait = row.next_attempt_at - before
            schedule.append(wait)
            # Not due a second early, due when the wait is over.
            sim_clock.advance(wait.total_seconds() - 1)
            assert await claim(runtime) == []
            sim_clock.advance(1)

        assert schedule == list(BACKOFF)
        assert schedule[:2] == [timedelta(seconds=5), timedelta(minutes=5)]
        assert (row.status, row.next_attempt_at) == ("failed", None)
        assert row.completed_at == clock.now()
        tried = await attempts_of(runtime.sessions, row.id)
        assert [a.attempt for a in tried] == list(range(1, 8))
        assert {a.status_code for a in tried} == {500}
        assert len(logged(webhook_receiver, event_id)) == 7
        assert await claim(runtime) == []

    @pytest.mark.parametrize(
        ("retry_after", "wait"),
        [
            ("120", timedelta(seconds=120)),
            # Shorter than the back-off: the back-off stands.
            ("1", timedelta(seconds=5)),
            # A receiver cannot park a delivery for a year.
            ("31536000", timedelta(hours=24)),
        ],
    )
    async def test_retry_after_puts_the_next_attempt_no_earlier_than_it_says(
        self,
        runtime: Runtime,
        http: httpx.AsyncClient,
        webhook_receiver: Receiver,
        sim_clock: SimulatedClock,
        retry_after: str,
        wait: timedelta,
    ) -> None:
        url = f"{webhook_receiver.url}/busy?retry_after={retry_after}"
        endpoint_id = await add_endpoint(runtime.sessions, url)
        await emit(runtime.sessions)

        recorded = await attempt_once(runtime, http)

        assert recorded.status == "pending"
        [row] = await deliveries(runtime.sessions, endpoint_id)
        assert row.last_status_code == 503
        assert row.next_attempt_at == clock.now() + wait

    async def test_retry_after_as_an_http_date(
        self,
        runtime: Runtime,
        http: httpx.AsyncClient,
        webhook_receiver: Receiver,
        sim_clock: SimulatedClock,
    ) -> None:
        date = format_datetime(clock.wall().replace(microsecond=0) + timedelta(hours=1), True)
        url = f"{webhook_receiver.url}/fail?status=429&retry_after={quote(date)}"
        endpoint_id = await add_endpoint(runtime.sessions, url)
        await emit(runtime.sessions)

        await attempt_once(runtime, http)

        [row] = await deliveries(runtime.sessions, endpoint_id)
        assert row.last_status_code == 429
        assert row.next_attempt_at is not None
        wait = row.next_attempt_at - clock.now()
        assert timedelta(minutes=59) < wait <= timedelta(hours=1)

    async def test_a_timeout_is_retried_and_says_so(
        self,
        runtime: Runtime,
        http: httpx.AsyncClient,
        webhook_receiver: Receiver,
        sim_clock: SimulatedClock,
    ) -> None:
        endpoint_id = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/slow?delay=5")
        [event_id] = await emit(runtime.sessions)
        quick = runtime.settings.model_copy(update={"webhook_timeout_seconds": 0.3})

        recorded = await attempt_once(runtime, http, quick)

        assert recorded.status == "pending"
        [row] = await deliveries(runtime.sessions, endpoint_id)
        assert row.last_status_code is None
        assert row.last_error == "timed out after 0.3 s"
        assert row.next_attempt_at == clock.now() + timedelta(seconds=5)
        # It may have arrived: unknown, not failed, so it is sent again under the same id.
        assert len(logged(webhook_receiver, event_id)) == 1

    async def test_a_refused_connection_is_retried_with_its_error(
        self, runtime: Runtime, http: httpx.AsyncClient, sim_clock: SimulatedClock
    ) -> None:
        endpoint_id = await add_endpoint(runtime.sessions, f"http://127.0.0.1:{free_port()}/x")
        await emit(runtime.sessions)

        await attempt_once(runtime, http)

        [row] = await deliveries(runtime.sessions, endpoint_id)
        assert row.status == "pending"
        assert row.last_status_code is None
        assert row.last_error is not None and "Cannot connect" in row.last_error
        [tried] = await attempts_of(runtime.sessions, row.id)
        assert tried.error == row.last_error

    async def test_a_redirect_is_not_followed(
        self,
        runtime: Runtime,
        http: httpx.AsyncClient,
        webhook_receiver: Receiver,
        sim_clock: SimulatedClock,
    ) -> None:
        target = quote(f"{webhook_receiver.url}/ok")
        url = f"{webhook_receiver.url}/moved?status=307&location={target}"
        endpoint_id = await add_endpoint(runtime.sessions, url)
        [event_id] = await emit(runtime.sessions)

        await attempt_once(runtime, http)

        [row] = await deliveries(runtime.sessions, endpoint_id)
        assert (row.status, row.last_status_code) == ("pending", 307)
        assert [r["path"] for r in logged(webhook_receiver, event_id)] == ["/moved"]

    async def test_a_url_the_allowed_hosts_no_longer_admit_is_not_sent(
        self,
        runtime: Runtime,
        http: httpx.AsyncClient,
        webhook_receiver: Receiver,
        sim_clock: SimulatedClock,
    ) -> None:
        endpoint_id = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
        [event_id] = await emit(runtime.sessions)
        narrowed = runtime.settings.model_copy(
            update={"webhook_allowed_hosts": ["hooks.example.com"]}
        )

        await attempt_once(runtime, http, narrowed)

        [row] = await deliveries(runtime.sessions, endpoint_id)
        assert row.status == "pending" and row.attempts == 1
        assert row.last_error is not None and "127.0.0.1" in row.last_error
        assert row.next_attempt_at == clock.now() + timedelta(seconds=5)
        assert logged(webhook_receiver, event_id) == []

    async def test_a_secret_that_cannot_sign_is_a_failed_attempt_not_a_crash(
        self,
        runtime: Runtime,
        http: httpx.AsyncClient,
        webhook_receiver: Receiver,
        sim_clock: SimulatedClock,
    ) -> None:
        url = f"{webhook_receiver.url}/ok"
        endpoint_id = await add_endpoint(runtime.sessions, url, secret="whsec_!!!")
        [event_id] = await emit(runtime.sessions)

        await attempt_once(runtime, http)

        [row] = await deliveries(runtime.sessions, endpoint_id)
        assert (row.status, row.attempts) == ("pending", 1)
        assert row.last_error is not None and row.last_error.startswith("not sent")
        assert row.next_attempt_at == clock.now() + timedelta(seconds=5)
        assert logged(webhook_receiver, event_id) == []

    async def test_attempts_and_delays_are_counted(
        self, runtime: Runtime, http: httpx.AsyncClient, webhook_receiver: Receiver
    ) -> None:
        def sample(name: str, labels: dict[str, str] | None = None) -> float:
            return REGISTRY.get_sample_value(name, labels or {}) or 0.0

        succeeded = {"type": EVENT_TYPE, "outcome": "succeeded"}
        before = sample("corral_webhook_attempts_total", succeeded)
        delays = sample("corral_webhook_delivery_delay_seconds_count")
        await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
        await emit(runtime.sessions)

        await attempt_once(runtime, http)

        assert sample("corral_webhook_attempts_total", succeeded) == before + 1
        assert sample("corral_webhook_delivery_delay_seconds_count") == delays + 1


class TestClaim:
    async def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_ends(
        self, runtime: Runtime, webhook_receiver: Receiver
    ) -> None:
        await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
        await emit(runtime.sessions)
        wall = clock.wall()

        [first] = await claim(runtime, wall=wall)

        assert await claim(runtime, wall=wall + LEASE - timedelta(seconds=1)) == []
        [again] = await claim(runtime, wall=wall + LEASE + timedelta(seconds=1))
        assert again.id == first.id and again.event_id == first.event_id
        assert again.claimed_until > first.claimed_until

    async def test_no_endpoint_gets_more_than_its_free_slots(
        self, runtime: Runtime, webhook_receiver: Receiver
    ) -> None:
        busy = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/slow")
        idle = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
        await emit(runtime.sessions, 10)

        claimed = await claim(runtime, per_endpoint=3, in_flight={busy: 2})

        assert sorted(c.endpoint_id for c in claimed) == sorted([busy] + [idle] * 3)
        # Oldest first within an endpoint.
        ours = [c for c in claimed if c.endpoint_id == idle]
        assert [c.id for c in ours] == sorted(c.id for c in ours)
        assert await claim(runtime, per_endpoint=3, in_flight={busy: 3, idle: 3}) == []

    async def test_a_small_batch_goes_round_the_endpoints_not_to_the_oldest_backlog(
        self, runtime: Runtime, webhook_receiver: Receiver
    ) -> None:
        backlog = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/slow")
        await emit(runtime.sessions, 10)
        newer = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
        await emit(runtime.sessions, 10)

        claimed = await claim(runtime, limit=2)

        assert sorted(c.endpoint_id for c in claimed) == sorted([backlog, newer])

    async def test_disabled_and_deleted_endpoints_are_not_claimed(
        self, runtime: Runtime, webhook_receiver: Receiver
    ) -> None:
        disabled = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
        deleted = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
        await emit(runtime.sessions)
        async with autocommit(runtime.engine) as conn:
            await conn.exec_driver_sql(
                f"UPDATE webhook_endpoints SET enabled = false WHERE id = '{disabled}'"
            )
            await conn.exec_driver_sql(
                f"UPDATE webhook_endpoints SET deleted_at = now() WHERE id = '{deleted}'"
            )

        assert await claim(runtime) == []


class TestLateResults:
    """A result written after the lease was lost resurrects nothing and duplicates nothing."""

    def failure(self) -> Recorded:
        now = clock.now()
        return Recorded(
            status="pending",
            at=now,
            duration_ms=1,
            status_code=500,
            error=None,
            next_attempt_at=now + timedelta(seconds=5),
            completed_at=None,
        )

    def success(self) -> Recorded:
        now = clock.now()
        return Recorded(
            status="succeeded",
            at=now,
            duration_ms=1,
            status_code=200,
            error=None,
            next_attempt_at=None,
            completed_at=now,
        )

    async def record(self, rt: Runtime, claimed: Claimed, recorded: Recorded) -> bool:
        async with autocommit(rt.engine) as conn:
            return await repository.record(conn, [(claimed, recorded)]) == {claimed.id}

    async def test_a_failure_after_another_replica_took_over_is_not_written(
        self, runtime: Runtime, webhook_receiver: Receiver
    ) -> None:
        endpoint_id = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
        await emit(runtime.sessions)
        wall = clock.wall()
        [lost] = await claim(runtime, wall=wall)
        [taken] = await claim(runtime, wall=wall + LEASE + timedelta(seconds=1))

        assert await self.record(runtime, lost, self.failure()) is False
        [row] = await deliveries(runtime.sessions, endpoint_id)
        assert (row.attempts, row.claimed_until) == (0, taken.claimed_until)

        assert await self.record(runtime, taken, self.success()) is True
        # The first replica's success comes last: the delivery has moved on.
        assert await self.record(runtime, lost, self.success()) is False
        [row] = await deliveries(runtime.sessions, endpoint_id)
        assert (row.status, row.attempts) == ("succeeded", 1)
        assert len(await attempts_of(runtime.sessions, row.id)) == 1

    async def test_a_failure_never_reopens_a_delivery_that_succeeded(
        self, runtime: Runtime, webhook_receiver: Receiver
    ) -> None:
        endpoint_id = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
        await emit(runtime.sessions)
        [claimed] = await claim(runtime)
        assert await self.record(runtime, claimed, self.success()) is True

        assert await self.record(runtime, claimed, self.failure()) is False

        [row] = await deliveries(runtime.sessions, endpoint_id)
        assert (row.status, row.attempts, row.next_attempt_at) == ("succeeded", 1, None)

    async def test_a_success_after_the_lease_ran_out_unclaimed_is_kept(
        self, runtime: Runtime, webhook_receiver: Receiver
    ) -> None:
        endpoint_id = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
        await emit(runtime.sessions)
        [claimed] = await claim(runtime, wall=clock.wall() - 2 * LEASE)

        assert await self.record(runtime, claimed, self.success()) is True
        [row] = await deliveries(runtime.sessions, endpoint_id)
        assert row.status == "succeeded"


async def test_results_written_together_are_each_what_they_would_be_alone(
    runtime: Runtime, webhook_receiver: Receiver
) -> None:
    ok = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/ok")
    gone = await add_endpoint(runtime.sessions, f"{webhook_receiver.url}/gone")
    await emit(runtime.sessions, 2)
    wall = clock.wall()
    claimed = await claim(runtime, wall=wall)
    [lost] = [c for c in claimed if c.endpoint_id == ok][:1]
    # One of ok's deliveries was taken over by another replica meanwhile.
    async with autocommit(runtime.engine) as conn:
        await conn.exec_driver_sql(
            f"UPDATE webhook_deliveries SET claimed_until = claimed_until + interval '1 s'"
            f" WHERE id = {lost.id}"
        )
    now = clock.now()
    results = []
    for item in claimed:
        code = 410 if item.endpoint_id == gone else 500
        sent = delivery.Sent(code, None, None, 3)
        results.append((item, delivery.decide(item, sent, at=now, now=now)[0]))

    async with autocommit(runtime.engine) as conn:
        written = await repository.record(conn, results)

    assert written == {c.id for c in claimed} - {lost.id}
    assert (await endpoint(runtime.sessions, gone)).enabled is False
    assert (await endpoint(runtime.sessions, ok)).enabled is True
    rows = await deliveries(runtime.sessions, ok)
    statuses = {row.id: (row.status, row.attempts) for row in rows}
    assert statuses[lost.id] == ("pending", 0)
    assert sorted(statuses.values()) == [("pending", 0), ("pending", 1)]
    assert [row.status for row in await deliveries(runtime.sessions, gone)] == ["failed"] * 2
    for item in claimed:
        expected = 0 if item.id == lost.id else 1
        assert len(await attempts_of(runtime.sessions, item.id)) == expected


def test_retry_after_reads_seconds_and_dates() -> None:
    wall = datetime(2026, 1, 1, tzinfo=UTC)
    assert delivery.retry_after("30", wall=wall) == timedelta(seconds=30)
    assert delivery.retry_after(" 7 ", wall=wall) == timedelta(seconds=7)
    assert delivery.retry_after("Thu, 01 Jan 2026 00:10:00 GMT", wall=wall) == timedelta(minutes=10)
    # A date in the past means now; nonsense means nothing.
    assert delivery.retry_after("Wed, 31 Dec 2025 00:00:00 GMT", wall=wall) == timedelta(0)
    assert delivery.retry_after("soon", wall=wall) is None
    assert delivery.retry_after("-5", wall=wall) is None
    assert delivery.retry_after("²", wall=wall) is None
    assert delivery.retry_after(None, wall=wall) is None
    assert delivery.retry_after("9" * 40, wall=wall) == timedelta(hours=24)
