"""The simulated clock (DESIGN §12): with a simulated upstream, Corral's clock follows the
simulator's, and `POST /v1/admin/clock/advance {seconds}` moves both, for every replica.

- In-process simulator: `app.clock.CLOCK` reads the simulator's clock itself; nothing to share.
- Standalone simulator (`CORRAL_UPSTREAM=simulator` with `CORRAL_UPSTREAM_URL`): the offset
  lives in `clock_state`. Advancing moves the simulator, writes the new offset with a new
  generation and `NOTIFY`s; every replica's `ClockFollower` (LISTEN, and a heartbeat that
  re-reads the row in case a notification was missed) applies it and records the generation
  it has applied in `clock_replicas`. The call returns once every replica heard from in the
  last `SILENT_AFTER` has applied it, so the next request anywhere sees the new time.

With a real upstream the route is a 404: production time is the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

import asyncpg
from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import text

from app import clock, clock_gate
from app.db import reading, transaction
from app.deps import AdminActor, RuntimeDep
from app.errors import NotFound, ServiceUnavailable
from app.inputs import RequestBody
from app.reconcile.leader import PeriodBusy, period_lock
from app.reconcile.plan import MISSES_TO_CLOSE
from app.reconcile.service import run_period
from app.runtime import Runtime
from app.upstream.simulator.remote import SimulatorClock, SimulatorUnreachable
from app.webhooks import alerts

log = logging.getLogger(__name__)

CHANNEL = "corral_clock"
HEARTBEAT_SECONDS = 2.0
# A replica silent for this long (wall time) is taken for dead and not waited for.
SILENT_AFTER = timedelta(seconds=3 * HEARTBEAT_SECONDS)
WAIT_SECONDS = 10.0
# How long an advance keeps trying to tell the replicas of a jump the simulator has made.
PUBLISH_SECONDS = 60.0
# At most a year in one call: the simulator hibernates every idle VM in the jump at once.
MAX_ADVANCE_SECONDS = 366 * 86400

router = APIRouter(prefix="/v1/admin/clock", tags=["admin"])


class ClockAdvance(RequestBody):
    seconds: float = Field(gt=0, le=MAX_ADVANCE_SECONDS)


class ClockOut(BaseModel):
    now: datetime
    offset_seconds: float
    replicas: int
    hibernated: list[str]


def simulator_clock(rt: Runtime) -> SimulatorClock:
    if rt.settings.upstream_mode != "simulator":
        raise NotFound("The clock moves only with a simulated upstream.", kind="not-simulated")
    if rt.simulator is not None:
        return SimulatorClock("http://simulator", app=rt.simulator)
    return SimulatorClock(rt.settings.upstream_base_url)


@router.post("/advance", response_model=ClockOut)
async def advance_clock(body: ClockAdvance, actor: AdminActor, rt: RuntimeDep) -> ClockOut:
    return await advance(rt, body.seconds)


async def advance(rt: Runtime, seconds: float) -> ClockOut:
    control = simulator_clock(rt)
    try:
        # No reconcile period and no upstream call that dates a move runs while the clock
        # jumps, nor until the jump's consequences are on the books: a call waiting for the
        # jump (a hibernate, say) would otherwise meet a VM that hibernated itself hours ago
        # and date the stop at its own, later time.
        async with period_lock(rt.engine, wait_seconds=WAIT_SECONDS), clock_gate.jump(rt.engine):
            # What runs now (a VM woken since the last poll, say) is seen before the jump, with
            # every VM's latest activity, so its stretch is on the books when the jump
            # hibernates it, and ends when the activity says.
            if rt.simulator is None:
                await _catch_up(rt, control)
            await _reconcile(rt, 1, every_sighting=True)
            if rt.simulator is None:
                # Committed before the simulator moves: a database restart from here on drops
                # the gate's lock, and the operations it lets through must know to look.
                await _mark_jumping(rt)
            moved = await control.advance(seconds)
            replicas = 1
            if rt.simulator is None:
                # The simulator has moved: from here on Corral must follow, whatever fails.
                offset = timedelta(seconds=moved.offset_seconds)
                clock.CLOCK.set_offset(offset)
                generation = await _publish_surely(rt, offset)
                replicas = await wait_for_replicas(rt, generation)
            # A jump of hours lands between two polls: what the upstream did in it (VMs that
            # hibernated themselves) is observed with the two consecutive misses that close
            # an interval.
            await _reconcile(rt, MISSES_TO_CLOSE)
            # The jump's spend is on the books: the alerts it crossed are told now, dated now.
            await alerts.evaluate(rt)
    except SimulatorUnreachable as exc:
        raise ServiceUnavailable(f"The simulator did not move its clock: {exc}") from exc
    except PeriodBusy as exc:
        raise ServiceUnavailable("A reconcile period is still running.") from exc
    finally:
        await control.aclose()
    return ClockOut(
        now=clock.now(),
        offset_seconds=clock.CLOCK.offset.total_seconds(),
        replicas=replicas,
        hibernated=list(moved.hibernated),
    )


async def _reconcile(rt: Runtime, periods: int, *, every_sighting: bool = False) -> None:
    """Periods run under the jump's period lock."""
    if not rt.settings.reconcile_enabled:
        return
    for _ in range(periods):
        await run_period(rt, every_sighting=every_sighting)


async def publish(rt: Runtime, offset: timedelta) -> int:
    async with transaction(rt.sessions) as session:
        generation: int = (
            await session.execute(
                text(
                    "UPDATE clock_state SET offset_us = :offset, generation = generation + 1,"
                    " jumping = false WHERE id = 1 RETURNING generation"
                ),
                {"offset": offset // timedelta(microseconds=1)},
            )
        ).scalar_one()
        # Delivered when the transaction commits, with the row already changed.
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": str(generation)},
        )
    return generation


async def _mark_jumping(rt: Runtime) -> None:
    async with transaction(rt.sessions) as session:
        await session.execute(text("UPDATE clock_state SET jumping = true WHERE id = 1"))


async def catch_up(rt: Runtime) -> None:
    """`_catch_up` on its own, for an operation that waited out a jump or found one marked
    under way with no lock held (a database restart dropped it). Only a standalone simulator
    can be left behind; one that does not answer leaves the time as it is."""
    if rt.settings.upstream_mode != "simulator" or rt.simulator is not None:
        return
    control = simulator_clock(rt)
    try:
        await _catch_up(rt, control)
    except (SimulatorUnreachable, ServiceUnavailable):
        log.warning("could not check the clock against the simulator's", exc_info=True)
    finally:
        await control.aclose()


async def _catch_up(rt: Runtime, control: SimulatorClock) -> None:
    """Publish the simulator's offset if Corral's is not it, or a jump is marked under way: an
    advance whose replica died, or whose database restarted, after the simulator moved left
    every replica behind."""
    offset = timedelta(seconds=(await control.read()).offset_seconds)
    async with reading(rt.sessions) as session:
        marked = bool(await session.scalar(text("SELECT jumping FROM clock_state WHERE id = 1")))
    if marked or abs(offset - clock.CLOCK.offset) > timedelta(milliseconds=1):
        log.warning("clock behind the simulator's; catching up", extra={"offset": str(offset)})
        clock.CLOCK.set_offset(offset)
        await wait_for_replicas(rt, await publish(rt, offset))


async def _publish_surely(rt: Runtime, offset: timedelta) -> int:
    """`publish`, retried while the database is away (a restart takes seconds): a jump the
    replicas never hear of would date everything they do by the old time."""
    deadline = asyncio.get_running_loop().time() + PUBLISH_SECONDS
    while True:
        try:
            return await publish(rt, offset)
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("clock offset not published yet; retrying", exc_info=True)
            await asyncio.sleep(0.5)


async def wait_for_replicas(rt: Runtime, generation: int) -> int:
    """Wait until every live replica has applied `generation`; return how many there are."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        async with transaction(rt.sessions) as session:
            behind, live = (
                await session.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE generation < :generation), count(*)"
                        " FROM clock_replicas WHERE seen_at > :fresh"
                    ),
                    {"generation": generation, "fresh": clock.wall() - SILENT_AFTER},
                )
            ).one()
        if behind == 0:
            return int(live)
        if asyncio.get_running_loop().time() > deadline:
            raise ServiceUnavailable(
                f"{behind} replica(s) have not applied the new clock yet.", retry_after=1
            )
        await asyncio.sleep(0.02)


def _dsn(rt: Runtime) -> str:
    url = rt.engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class ClockFollower:
    """This replica's side: keep `CLOCK` at the shared offset and say which one it applied."""

    def __init__(self, rt: Runtime, replica: str) -> None:
        self.rt = rt
        self.replica = replica
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # The first sync happens before the replica serves, so it never answers in real time.
        await self._sync_once()
        self._task = asyncio.create_task(self._run(), name="clock-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            async with transaction(self.rt.sessions) as session:
                await session.execute(
                    text("DELETE FROM clock_replicas WHERE name = :name"), {"name": self.replica}
                )

    async def _run(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(_dsn(self.rt))
            except Exception:
                log.warning("clock follower cannot reach the database", exc_info=True)
                await asyncio.sleep(HEARTBEAT_SECONDS)
                continue
            try:
                await conn.add_listener(CHANNEL, self._notified)
                while True:
                    await self._sync(conn)
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), HEARTBEAT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A restarted database: reconnect, re-read, carry on.
                log.warning("clock follower lost its connection", exc_info=True)
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()

    def _notified(self, *_: object) -> None:
        self._changed.set()

    async def _sync_once(self) -> None:
        conn = await asyncpg.connect(_dsn(self.rt))
        try:
            await self._sync(conn)
        finally:
            await conn.close()

    async def _sync(self, conn: asyncpg.Connection) -> None:
        offset_us, generation = await conn.fetchrow(
            "SELECT offset_us, generation FROM clock_state WHERE id = 1"
        )
        clock.CLOCK.set_offset(timedelta(microseconds=offset_us))
        await conn.execute(
            "INSERT INTO clock_replicas (name, generation, seen_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO UPDATE SET generation = $2, seen_at = $3",
            self.replica,
            generation,
            clock.wall(),
        )
