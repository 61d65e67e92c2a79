"""The delivery worker every replica runs (DESIGN §13).

It claims due deliveries in one short statement (`FOR UPDATE SKIP LOCKED`, a lease on the wall
clock of the attempt timeout plus `LEASE_MARGIN`), then sends each outside any transaction and
records the result (`app.webhooks.delivery`). So:

- two replicas never hold the same delivery at once: each claim skips what another is
  claiming, and a held lease keeps it out of every claim until it ends;
- delivery is at least once: a replica that dies mid-attempt leaves its leases to run out,
  and another replica then sends those deliveries again, under the same `webhook-id`;
- one endpoint never delays another: at most `webhook_concurrency_per_endpoint` attempts per
  endpoint are in flight in this replica, and a claim asks for no more than an endpoint's free
  slots, so a slow or failing endpoint's backlog takes neither the slots nor the claims that
  healthy endpoints need. An endpoint that keeps failing is only probed (`FAILING_AFTER`), so
  it does not take the replica's time either.

It wakes on `LISTEN corral_webhooks` (a new event, on a dedicated connection that is opened
again after a database restart), when an attempt frees a slot of an endpoint that may have more
waiting, and otherwise every `webhook_poll_seconds`, which is what finds retries coming due.
A database that is away stops the claims, not the loop: errors are logged and it goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from datetime import timedelta

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app import clock
from app.db import autocommit, unavailable
from app.runtime import Runtime
from app.webhooks import delivery
from app.webhooks import delivery_repository as repository
from app.webhooks.delivery_repository import Claimed
from app.webhooks.events import CHANNEL

log = logging.getLogger(__name__)

# A lease covers the attempt's timeout and then the writing of its result.
LEASE_MARGIN = timedelta(seconds=5)
# Attempts in flight in one replica, over all endpoints: what one process sensibly holds open.
MAX_IN_FLIGHT = 256
# How often the LISTEN connection is checked when no notification arrives (a connection cut
# without a FIN is otherwise never noticed), and the wait before opening it again.
LISTEN_CHECK_SECONDS = 5.0
RECONNECT_SECONDS = 1.0
# Back-off of the claim loop while the database is away.
CLAIM_BACKOFF_MAX_SECONDS = 5.0
# After this many failed attempts in a row (in this replica) an endpoint is probed: one
# attempt at a time, one every PROBE_SECONDS, until one succeeds and it has all its slots
# again. A failing receiver then costs the replica next to nothing instead of a healthy
# endpoint's share, and its backlog mostly waits untried, to go out as soon as it answers,
# rather than being tried, failed and scheduled minutes or hours later.
FAILING_AFTER = 5
PROBE_SECONDS = 1.0
# Results written in one statement at most.
RECORD_BATCH = 500
# How long `stop` waits to give this replica's claims back.
RELEASE_TIMEOUT_SECONDS = 2.0


# A result waiting to be written, and who waits for it.
_Queued = tuple[delivery.Result, "asyncio.Future[bool]"]


class Recorder:
    """Writes attempts' results for the worker, all that finished while the last write ran in
    one statement: a write per attempt would spend most of an attempt's time committing."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._queue: list[_Queued] = []
        self._ready = asyncio.Event()

    async def record(self, result: delivery.Result) -> bool:
        """Queue one result; True once it is written, False if its delivery had moved on."""
        written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((result, written))
        self._ready.set()
        return await written

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                batch: list[_Queued] = []
                later: list[_Queued] = []
                ids: set[int] = set()
                for item in self._queue:
                    # The same delivery twice (re-claimed after its lease ran out while its
                    # first result waited) goes in the next statement.
                    if len(batch) < RECORD_BATCH and item[0].claimed.id not in ids:
                        ids.add(item[0].claimed.id)
                        batch.append(item)
                    else:
                        later.append(item)
                self._queue = later
                await self._write(batch)

    async def _write(self, batch: list[_Queued]) -> None:
        try:
            written = await delivery.record(self.engine, [result for result, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for result, future in batch:
            if not future.done():
                future.set_result(result.claimed.id in written)


class DeliveryWorker:
    def __init__(
        self,
        rt: Runtime,
        *,
        http: httpx.AsyncClient | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.max_in_flight = max_in_flight
        self._own_http = http is None
        self.http = http if http is not None else delivery.new_client(rt.settings)
        self.recorder = Recorder(rt.engine)
        # Requests in flight per endpoint: what its concurrency limit counts.
        self.in_flight: Counter[str] = Counter()
        # Claims not yet recorded, by delivery id: what the batch limit counts, and what
        # `stop` gives back.
        self._held: dict[int, Claimed] = {}
        # Failed attempts in a row per endpoint, in this replica, and when each endpoint that
        # keeps failing may be probed next (monotonic clock).
        self._failures: Counter[str] = Counter()
        self._probe_at: dict[str, float] = {}
        # Endpoints that may have more due than the last claim took (see `claim_and_send`).
        self._more: set[str] = set()
        self._batch_full = False
        self._wake = asyncio.Event()
        # Set while the LISTEN connection is up; `connections` counts how often it was opened.
        self.listening = asyncio.Event()
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self.run(), name="webhook-claims"),
            asyncio.create_task(self.listen(), name="webhook-listen"),
            asyncio.create_task(self.recorder.run(), name="webhook-recorder"),
        ]

    async def stop(self) -> None:
        """Stop claiming, cancel the attempts in flight and give their claims back, so another
        replica sends them at once rather than after their leases (they may have reached the
        receiver already: at least once)."""
        tasks = [*self._loops, *self._tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops = []
        held, self._held = list(self._held.values()), {}
        if held:
            try:
                async with asyncio.timeout(RELEASE_TIMEOUT_SECONDS):
                    async with autocommit(self.rt.engine) as conn:
                        await repository.release(conn, held)
            except Exception:
                log.warning("could not give webhook claims back; their leases will run out")
        if self._own_http:
            await self.http.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                await self.claim_and_send()
                failures = 0
            except Exception as exc:
                failures += 1
                if unavailable(exc):
                    log.warning("database unavailable; webhook claims paused")
                else:
                    log.exception("webhook claim failed")
                await asyncio.sleep(min(0.2 * 2**failures, CLAIM_BACKOFF_MAX_SECONDS))
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.webhook_poll_seconds):
                    await self._wake.wait()

    async def claim_and_send(self) -> int:
        """Claim what is due for the free slots and start sending it; returns how many."""
        free = self.max_in_flight - len(self._held)
        if free <= 0:
            return 0
        per_endpoint = self.settings.webhook_concurrency_per_endpoint
        busy = dict(self.in_flight)
        now = time.monotonic()
        for endpoint_id, probe_at in self._probe_at.items():
            # A failing endpoint's slots but one are taken, and that one too until its probe.
            taken = per_endpoint if probe_at > now else per_endpoint - 1
            busy[endpoint_id] = busy.get(endpoint_id, 0) + taken
        wall = clock.wall()
        async with autocommit(self.rt.engine) as conn:
            claimed = await repository.claim(
                conn,
                now=clock.now(),
                wall=wall,
                lease_until=wall
                + timedelta(seconds=self.settings.webhook_timeout_seconds)
                + LEASE_MARGIN,
                per_endpoint=per_endpoint,
                in_flight=busy,
                limit=free,
            )
        got = Counter(item.endpoint_id for item in claimed)
        # An endpoint that got every slot it had free, or had none free, may have more due; one
        # that got fewer had nothing more due, and only a new event (a notification) or a retry
        # coming due (the poll) gives it more.
        self._more = {e for e, n in busy.items() if n >= per_endpoint} | {
            e for e, n in got.items() if n >= per_endpoint - busy.get(e, 0)
        }
        # The batch, not the endpoints, was the limit: any slot that frees may be used.
        self._batch_full = len(claimed) >= free
        for item in claimed:
            self.in_flight[item.endpoint_id] += 1
            self._held[item.id] = item
            task = asyncio.create_task(self._attempt(item), name=f"webhook-{item.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    async def _attempt(self, claimed: Claimed) -> None:
        try:
            try:
                result = await delivery.attempt(self.http, claimed, settings=self.settings)
                self._count(claimed.endpoint_id, result.recorded.status == "succeeded")
            finally:
                # The receiver is done with it: its endpoint's slot is free while the result
                # is written (the lease keeps the delivery out of every claim meanwhile).
                self._free_slot(claimed.endpoint_id)
            await self.recorder.record(result)
        except asyncio.CancelledError:
            # Still held, for `stop` to give back.
            raise
        except Exception:
            # Its lease runs out and it is sent again: at least once.
            log.exception("webhook attempt failed", extra={"delivery_id": claimed.id})
        self._held.pop(claimed.id, None)
        if self._batch_full:
            self._wake.set()

    def _count(self, endpoint_id: str, succeeded: bool) -> None:
        if succeeded:
            self._failures.pop(endpoint_id, None)
            self._probe_at.pop(endpoint_id, None)
            return
        self._failures[endpoint_id] += 1
        if self._failures[endpoint_id] >= FAILING_AFTER:
            self._probe_at[endpoint_id] = time.monotonic() + PROBE_SECONDS

    def _free_slot(self, endpoint_id: str) -> None:
        self.in_flight[endpoint_id] -= 1
        if self.in_flight[endpoint_id] <= 0:
            del self.in_flight[endpoint_id]
        if self._batch_full or endpoint_id in self._more:
            self._wake.set()

    async def listen(self) -> None:
        """Hold a LISTEN connection for as long as the worker runs, opening it again whenever
        it is lost."""
        url = self.rt.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                conn = await asyncpg.connect(
                    url,
                    timeout=10,
                    server_settings={"application_name": "corral-webhooks"},
                )
            except Exception:
                log.warning("webhook listener cannot reach the database")
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            try:
                await self._hold(conn)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("webhook listener lost its connection")
            else:
                log.warning("webhook listener's connection closed")
            finally:
                self.listening.clear()
                await _close(conn)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _hold(self, conn: asyncpg.Connection) -> None:
        """Listen on `conn` until it is lost."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._notified)
        self.connections += 1
        self.listening.set()
        # Whatever was emitted while it was away was not heard.
        self.wake()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LISTEN_CHECK_SECONDS):
                    await lost.wait()
            if not lost.is_set():
                async with asyncio.timeout(LISTEN_CHECK_SECONDS):
                    await conn.fetchval("SELECT 1")

    def _notified(self, *_: object) -> None:
        self._wake.set()


async def _close(conn: asyncpg.Connection) -> None:
    """Close politely when the connection still works, else drop it."""
    try:
        async with asyncio.timeout(1.0):
            await conn.close()
    except Exception:
        conn.terminate()
