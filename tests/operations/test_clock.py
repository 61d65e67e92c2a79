"""One clock (DESIGN §12): with a simulated upstream, `POST /v1/admin/clock/advance` moves the
simulator and Corral together — in-process, and across real replicas that share a database
and a standalone simulator — and the simulator's auto-hibernations land at their exact moment,
which the reconciler's inferred interval end matches."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, NamedTuple

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from app.db import create_engine, migrate
from app.locks import Lock
from app.runtime import Runtime
from app.settings import Settings
from tests import processes
from tests.conftest import ADMIN_KEY
from tests.database import recreate
from tests.fixtures import factories, upstream
from tests.reconcile.helpers import at, intervals, reconcile, sandbox, vm

ADVANCE = "/v1/admin/clock/advance"


class TestInProcess:
    async def test_an_advance_moves_the_simulator_and_corral(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        before = (await sim.get("/_simulator/clock")).json()
        response = await client.post(ADVANCE, json={"seconds": 86400}, headers=factories.ADMIN)
        assert response.status_code == 200, response.text
        after = (await sim.get("/_simulator/clock")).json()
        assert after["offset_seconds"] - before["offset_seconds"] == 86400
        assert response.json()["offset_seconds"] == pytest.approx(after["offset_seconds"], abs=1)
        # What Corral writes now is stamped with the simulated time.
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        assert at(created["created_at"]) >= at(after["now"]) - timedelta(seconds=1)

    async def test_an_auto_hibernation_ends_the_interval_at_its_simulated_moment(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, hibernation_timeout_seconds=300)
        await reconcile(runtime)  # seen running, with its last activity
        moved = await client.post(ADVANCE, json={"seconds": 3600}, headers=factories.ADMIN)
        assert created["upstream_id"] in moved.json()["hibernated"]
        for _ in range(2):  # absent from two polls in a row
            await reconcile(runtime)
        assert (await sandbox(runtime, created["id"])).state == "hibernated"
        [stretch] = (await vm(sim, created["upstream_id"]))["ledger"]["stretches"]
        [interval] = await intervals(runtime, created["id"])
        assert interval.ended_at is not None
        # last_active_at + timeout, as the simulator did it: within the clocks' read skew.
        assert abs(interval.ended_at - at(stretch["ended_at"])) < timedelta(seconds=1)

    async def test_only_admins_move_it_and_bad_amounts_are_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        assert (
            await client.post(ADVANCE, json={"seconds": 60}, headers=headers)
        ).status_code == 403
        assert (await client.post(ADVANCE, json={"seconds": 60})).status_code == 401
        for body in ({"seconds": 0}, {"seconds": -5}, {"seconds": 10**9}, {"days": 1}, {}):
            refused = await client.post(ADVANCE, json=body, headers=factories.ADMIN)
            assert refused.status_code == 422, body

    async def test_with_a_real_upstream_there_is_no_clock_to_move(self, runtime: Runtime) -> None:
        from dataclasses import replace

        from app.main import create_app

        real = runtime.settings.model_copy(
            update={"upstream": "codesandbox", "upstream_key": "csb_x"}
        )
        app = create_app(runtime=replace(runtime, settings=real))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://corral"
        ) as http:
            response = await http.post(ADVANCE, json={"seconds": 60}, headers=factories.ADMIN)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")


class TestCallsWaitingForAJump:
    """A call sent while the clock jumps runs after what the jump did is on the books."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"reconcile_enabled": True})

    async def test_a_start_sent_during_the_jump_meets_the_hibernation_recorded(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, hibernation_timeout_seconds=300)
        await reconcile(runtime)  # seen running, with its last activity
        before = (await sim.get("/_simulator/clock")).json()["offset_seconds"]
        jump = asyncio.create_task(
            client.post(ADVANCE, json={"seconds": 86400}, headers=factories.ADMIN)
        )
        # The simulator has jumped (and hibernated the VM); Corral has not recorded it yet.
        # Polled: the jump is another request's, with no event to wait on.
        moved = 0.0
        while moved < 86400:
            await asyncio.sleep(0.001)
            moved = (await sim.get("/_simulator/clock")).json()["offset_seconds"] - before
        started = await client.post(f"/v1/sandboxes/{created['id']}/start", headers=headers)
        assert (await jump).status_code == 200
        assert started.status_code == 200, started.text
        first, *_ = (await vm(sim, created["upstream_id"]))["ledger"]["stretches"]
        earlier, *_ = await intervals(runtime, created["id"])
        # Closed when the VM hibernated itself, not when the start met it stopped.
        assert earlier.ended_at is not None
        assert abs(earlier.ended_at - at(first["ended_at"])) < timedelta(seconds=1)

    async def test_activity_since_the_last_sighting_is_seen_before_the_jump(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        """Activity newer than the last written sighting is written however recent that
        sighting is: the jump hibernates the VM by it."""
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, hibernation_timeout_seconds=300)
        await reconcile(runtime)  # seen running, with its first activity
        await sim.post("/_simulator/clock/advance", json={"seconds": 20})
        touched = await sim.post(f"/vm/{created['upstream_id']}/start", json={})
        assert touched.status_code == 200  # running already: its activity is now
        moved = await client.post(ADVANCE, json={"seconds": 86400}, headers=factories.ADMIN)
        assert moved.status_code == 200, moved.text
        [stretch] = (await vm(sim, created["upstream_id"]))["ledger"]["stretches"]
        [interval] = await intervals(runtime, created["id"])
        assert interval.ended_at is not None
        # 320 s upstream, and as long here: not 300 s from the first activity.
        assert abs(
            (interval.ended_at - interval.started_at)
            - (at(stretch["ended_at"]) - at(stretch["started_at"]))
        ) < timedelta(seconds=1)

    async def test_a_jump_waits_until_an_operation_has_written_what_its_call_did(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        """The whole operation, not its upstream call alone: a start answered before a jump
        and written after it would meet its reservation lapsed by hours and taken by the
        reconciler, and the minutes the VM ran before it hibernated itself would be lost."""
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, hibernation_timeout_seconds=300)
        hibernated = await client.post(f"/v1/sandboxes/{created['id']}/hibernate", headers=headers)
        assert hibernated.status_code == 200
        # From the first advance on, operations take turns with jumps.
        assert (
            await client.post(ADVANCE, json={"seconds": 60}, headers=factories.ADMIN)
        ).status_code == 200
        holder = await runtime.engine.connect()
        held = asyncio.Event()
        simulator = runtime.simulator

        async def start_then_hold_the_row(scope: Any, receive: Any, send: Any) -> None:
            await simulator(scope, receive, send)  # type: ignore[operator]
            if scope["type"] == "http" and scope["path"].endswith("/start"):
                # Answered upstream; Corral's write of it now waits for this lock.
                await holder.begin()
                await holder.execute(
                    text("SELECT 1 FROM sandboxes WHERE id = :id FOR UPDATE"), {"id": created["id"]}
                )
                held.set()

        try:
            async with upstream.through(runtime, start_then_hold_the_row):
                starting = asyncio.create_task(
                    client.post(f"/v1/sandboxes/{created['id']}/start", headers=headers)
                )
                await asyncio.wait_for(held.wait(), 10)
                before = (await sim.get("/_simulator/clock")).json()["offset_seconds"]
                jump = asyncio.create_task(
                    client.post(ADVANCE, json={"seconds": 86400}, headers=factories.ADMIN)
                )
                await _until_the_jump_waits_for_its_turn(runtime)
                assert (await sim.get("/_simulator/clock")).json()["offset_seconds"] == before
                await holder.commit()
                started = await starting
                assert started.status_code == 200, started.text
                assert (await jump).status_code == 200
        finally:
            await holder.close()
        stretches = (await vm(sim, created["upstream_id"]))["ledger"]["stretches"]
        ran = await intervals(runtime, created["id"])
        assert len(ran) == len(stretches) == 2
        # The start's stretch, booted before the jump and hibernated by it, is on the books.
        assert ran[1].ended_at is not None
        assert abs(ran[1].started_at - at(stretches[1]["started_at"])) < timedelta(seconds=1)
        assert abs(ran[1].ended_at - at(stretches[1]["ended_at"])) < timedelta(seconds=1)


async def _until_the_jump_waits_for_its_turn(runtime: Runtime) -> None:
    gate = int(Lock.CLOCK_GATE)
    for _ in range(500):
        async with runtime.engine.connect() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND NOT granted AND objid = :gate"
                ),
                {"gate": gate},
            )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the jump never came to wait for the operation in flight")


SIM_KEY = "clock-simulator-key"


class Stack(NamedTuple):
    first: processes.Process
    second: processes.Process
    simulator: processes.Process
    database_url: str


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two replicas sharing a database, and the standalone simulator they follow."""
    import asyncio

    async def database() -> str:
        url = await recreate(f"corral_clock_{os.getpid()}")
        engine = create_engine(url, pool_size=1)
        await migrate(engine)
        await engine.dispose()
        return url

    url = asyncio.run(database())
    logs = tmp_path_factory.mktemp("clock")
    with processes.simulator(SIM_KEY, logs) as simulator:
        common = {
            "database_url": url,
            "upstream_url": simulator.url,
            "upstream_key": SIM_KEY,
            "admin_key": ADMIN_KEY,
            "log_dir": logs,
        }
        # The first reconciles (rarely on its own: the advances run its periods).
        with (
            processes.corral(
                **common, reconcile_enabled="true", reconcile_interval="3600"
            ) as first,
            processes.corral(**common) as second,
        ):
            yield Stack(first, second, simulator, url)


async def test_an_advance_through_one_replica_is_seen_by_the_next_request_to_another(
    replicas: Stack,
) -> None:
    first, second = replicas.first, replicas.second
    async with (
        httpx.AsyncClient(base_url=first.url, timeout=30) as a,
        httpx.AsyncClient(base_url=second.url, timeout=30) as b,
    ):
        moved = await a.post(ADVANCE, json={"seconds": 10 * 86400}, headers=factories.ADMIN)
        assert moved.status_code == 200, moved.text
        assert moved.json()["replicas"] == 2
        simulated_now = at(moved.json()["now"])
        # At once, on the other replica: what it stamps is ten days ahead.
        headers = await factories.team_with_key(b, "clock-team")
        created = await factories.sandbox(b, headers)
        assert at(created["created_at"]) >= simulated_now - timedelta(seconds=1)
        again = await b.post(ADVANCE, json={"seconds": 86400}, headers=factories.ADMIN)
        assert again.json()["replicas"] == 2
        assert at(again.json()["now"]) - simulated_now >= timedelta(days=1)


async def test_a_jump_the_replicas_never_heard_of_is_caught_up_before_the_next_advance(
    replicas: Stack,
) -> None:
    """The simulator moved and the advancing replica died before it told the others (here: the
    simulator moved by itself). The next advance catches Corral up first, so what it reconciles
    before its own jump is seen at the simulator's time: the VM that hibernated itself in the
    unheard jump is closed when it did, not a day early at the time Corral still had."""
    first, simulator = replicas.first, replicas.simulator
    async with (
        httpx.AsyncClient(base_url=first.url, timeout=30) as a,
        httpx.AsyncClient(base_url=simulator.url, timeout=30) as sim,
    ):
        headers = await factories.team_with_key(a, "caught-up-team")
        created = await factories.sandbox(a, headers, hibernation_timeout_seconds=300)
        # Seen running (the advance's periods), and operations now take turns with jumps.
        assert (await a.post(ADVANCE, json={"seconds": 5}, headers=factories.ADMIN)).is_success
        unheard = await sim.post("/_simulator/clock/advance", json={"seconds": 86400})
        assert unheard.status_code == 200
        moved = await a.post(ADVANCE, json={"seconds": 60}, headers=factories.ADMIN)
        assert moved.status_code == 200, moved.text
        [stretch] = (await vm(sim, created["upstream_id"]))["ledger"]["stretches"]
        events = (await a.get(f"/v1/sandboxes/{created['id']}/events", headers=headers)).json()
        [closed] = [e for e in events if e["to_state"] == "hibernated"]
        ended = at(closed["detail"]["ended_at"])
        assert abs(ended - at(stretch["ended_at"])) < timedelta(seconds=5)


async def test_an_operation_that_waited_out_a_jump_whose_replica_died_takes_the_new_time(
    replicas: Stack,
) -> None:
    """A replica jumping the clock holds the gate, moves the simulator and dies before it
    tells anyone (here: the test holds the gate, moves the simulator, and lets go). The
    operation that waited for the gate takes the simulator's time before it does anything."""
    first, second, simulator = replicas.first, replicas.second, replicas.simulator
    async with (
        httpx.AsyncClient(base_url=first.url, timeout=30) as a,
        httpx.AsyncClient(base_url=second.url, timeout=30) as b,
        httpx.AsyncClient(base_url=simulator.url, timeout=30) as sim,
    ):
        # From the first advance on, operations take turns with jumps.
        assert (await a.post(ADVANCE, json={"seconds": 5}, headers=factories.ADMIN)).is_success
        headers = await factories.team_with_key(b, "waited-team")
        jumper = await asyncpg.connect(replicas.database_url.replace("+asyncpg", ""))
        try:
            await jumper.execute("SELECT pg_advisory_lock($1)", int(Lock.CLOCK_GATE))
            assert (await sim.post("/_simulator/clock/advance", json={"seconds": 86400})).is_success
            creating = asyncio.create_task(factories.sandbox(b, headers))
            await asyncio.sleep(0.5)
            assert not creating.done(), "the create waits for the jump"
        finally:
            await jumper.close()  # the jumping replica dies
        created = await creating
        truth = at((await sim.get("/_simulator/clock")).json()["now"])
        assert abs(at(created["created_at"]) - truth) < timedelta(seconds=5)


async def test_an_operation_that_finds_a_jump_marked_with_the_gate_free_takes_the_new_time(
    replicas: Stack,
) -> None:
    """A database restart mid-jump drops the gate's lock while the jump is still to be told
    (here: the test marks a jump, moves the simulator and holds no lock). The next operation
    finds the gate free but the jump marked, and takes the simulator's time first."""
    first, second, simulator = replicas.first, replicas.second, replicas.simulator
    async with (
        httpx.AsyncClient(base_url=first.url, timeout=30) as a,
        httpx.AsyncClient(base_url=second.url, timeout=30) as b,
        httpx.AsyncClient(base_url=simulator.url, timeout=30) as sim,
    ):
        assert (await a.post(ADVANCE, json={"seconds": 5}, headers=factories.ADMIN)).is_success
        headers = await factories.team_with_key(b, "marked-team")
        db = await asyncpg.connect(replicas.database_url.replace("+asyncpg", ""))
        try:
            await db.execute("UPDATE clock_state SET jumping = true WHERE id = 1")
            assert (await sim.post("/_simulator/clock/advance", json={"seconds": 86400})).is_success
            created = await factories.sandbox(b, headers)
            truth = at((await sim.get("/_simulator/clock")).json()["now"])
            assert abs(at(created["created_at"]) - truth) < timedelta(seconds=5)
            assert await db.fetchval("SELECT jumping FROM clock_state WHERE id = 1") is False
        finally:
            await db.close()


async def test_a_stop_of_a_vm_that_hibernated_on_its_own_records_when_it_did(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The upstream answers 404 (not running): it hibernated itself, so the record says so, and
    the interval ends at its last activity plus its timeout, not when Corral asked."""
    headers = await factories.team_with_key(client)
    created = await factories.sandbox(client, headers, hibernation_timeout_seconds=300)
    await reconcile(runtime)  # seen running, with its last activity
    await client.post(ADVANCE, json={"seconds": 86400}, headers=factories.ADMIN)
    response = await client.post(f"/v1/sandboxes/{created['id']}/shutdown", headers=headers)
    assert response.status_code == 200, response.text
    assert (response.json()["state"], response.json()["last_cause"]) == ("hibernated", "upstream")
    [stretch] = (await vm(sim, created["upstream_id"]))["ledger"]["stretches"]
    [interval] = await intervals(runtime, created["id"])
    assert interval.ended_at is not None
    assert abs(interval.ended_at - at(stretch["ended_at"])) < timedelta(seconds=1)


async def test_a_stop_whose_first_answer_was_lost_finds_the_vm_had_hibernated_itself(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The first shutdown's answer is lost, the second says not running: the stop may have
    done it, but the VM's timeout ran out hours before it was sent, so it hibernated itself,
    and its interval ends then, not at the stop."""
    headers = await factories.team_with_key(client)
    created = await factories.sandbox(client, headers, hibernation_timeout_seconds=300)
    await reconcile(runtime)  # seen running, with its last activity
    await client.post(ADVANCE, json={"seconds": 86400}, headers=factories.ADMIN)
    simulator, lost = runtime.simulator, []

    async def first_answer_lost(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/shutdown") and not lost:
            lost.append(scope["path"])
            await answer_empty(send, 502)
            return
        await simulator(scope, receive, send)  # type: ignore[operator]

    async with upstream.through(runtime, first_answer_lost):
        response = await client.post(f"/v1/sandboxes/{created['id']}/shutdown", headers=headers)
    assert lost, "the first shutdown was answered 502"
    assert response.status_code == 200, response.text
    assert (response.json()["state"], response.json()["last_cause"]) == ("hibernated", "upstream")
    [stretch] = (await vm(sim, created["upstream_id"]))["ledger"]["stretches"]
    [interval] = await intervals(runtime, created["id"])
    assert interval.ended_at is not None
    assert abs(interval.ended_at - at(stretch["ended_at"])) < timedelta(seconds=1)


async def answer_empty(send: Any, status: int) -> None:
    """An ASGI answer with an empty body, as a gateway gives when the upstream's was lost."""
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})
