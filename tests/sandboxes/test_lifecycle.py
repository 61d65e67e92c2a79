"""Every lifecycle verb of the native API, through the in-process simulator."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select, text

from app.db import transaction
from app.models import AuditEntry, Sandbox
from app.reconcile.service import reconcile_once
from app.sandboxes import transitions
from app.sandboxes.states import SandboxState
from tests.fixtures import factories, upstream


async def vms(sim: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await sim.get("/_simulator/vms")
    assert response.status_code == 200
    body = response.json()
    items = body["vms"] if isinstance(body, dict) else body
    # The simulator keeps deleted VMs in its ground truth (their billing stays); leave them out.
    return {vm["id"]: vm for vm in items if vm["state"] != "deleted"}


async def events(
    client: httpx.AsyncClient, headers: dict[str, str], sandbox_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/sandboxes/{sandbox_id}/events", headers=headers)
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


async def intervals(runtime: Any, sandbox_id: str) -> list[Any]:
    from app.db import transaction
    from app.usage import ledger

    async with transaction(runtime.sessions) as session:
        return await ledger.intervals_of(session, sandbox_id)


class TestCreate:
    async def test_forks_and_starts_with_operation_tags(self, client, sim, runtime):
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(
            client, headers, title="demo", tier="Micro", owner="alice@corp", tags=["ci"]
        )
        assert created["state"] == "running"
        assert created["bootup_type"] == "FORK"
        assert created["tier"] == "Micro"
        assert created["owner"] == "alice@corp"
        vm = (await vms(sim))[created["upstream_id"]]
        assert vm["state"] == "running"
        assert vm["tier"] == "Micro"
        assert "corral" in vm["tags"]
        assert any(t.startswith("corral-op-") for t in vm["tags"])
        assert "ci" in vm["tags"]
        open_intervals = [i for i in await intervals(runtime, created["id"]) if i.ended_at is None]
        assert len(open_intervals) == 1 and open_intervals[0].tier == "Micro"
        history = await events(client, headers, created["id"])
        assert [(e["from_state"], e["to_state"]) for e in history] == [
            (None, "starting"),
            ("starting", "running"),
        ]
        assert all(e["cause"] == "api" for e in history)

    async def test_the_settled_start_writes_its_price_event_and_audit_row(
        self, client, admin, runtime
    ):
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, tier="Small")
        prices = (await client.get("/v1/admin/prices", headers=admin)).json()
        in_force = prices["current"]
        [interval] = await intervals(runtime, created["id"])
        assert interval.credits_per_hour == Decimal(str(in_force["credits_per_hour"]["Small"]))
        assert interval.price_book_id == in_force["id"]
        assert interval.started_at == datetime.fromisoformat(created["last_started_at"])
        async with transaction(runtime.sessions) as session:
            [entry] = await session.scalars(
                select(AuditEntry).where(
                    AuditEntry.target == created["id"], AuditEntry.action == "sandbox.create"
                )
            )
        assert (entry.team_id, entry.outcome, entry.detail) == (
            "search-ui",
            "ok",
            {"bootup_type": "FORK"},
        )

    async def test_a_reservation_settled_by_the_reconciler_mid_start_is_settled_once(
        self, client, sim, runtime
    ):
        """The start's answer comes back after the reconciler took over the reservation: the
        answer is older news than the record, so nothing is moved on it; the next period sees
        the VM running and records it from its session's start, once."""
        # Every reservation has lapsed at once, so the reconciler takes the row.
        runtime.settings = runtime.settings.model_copy(update={"reservation_ttl_seconds": 0})
        headers = await factories.team_with_key(client)
        at_start, release = asyncio.Event(), asyncio.Event()
        simulator = runtime.simulator

        async def held_start(scope, receive, send):
            if scope["type"] == "http" and scope["path"].endswith("/start"):
                at_start.set()
                await release.wait()
            await simulator(scope, receive, send)

        async with upstream.through(runtime, held_start):
            creating = asyncio.create_task(client.post("/v1/sandboxes", json={}, headers=headers))
            await asyncio.wait_for(at_start.wait(), 10)
            summary = await reconcile_once(runtime, replica="test")
            assert summary.drift == {"unresolved": 1}
            release.set()
            response = await creating

        assert response.status_code == 201, response.text
        created = response.json()
        assert created["state"] == "shutdown", "as the reconciler left it"
        running = [vm for vm in (await vms(sim)).values() if vm["state"] == "running"]
        assert [vm["id"] for vm in running] == [created["upstream_id"]]
        assert await intervals(runtime, created["id"]) == []
        runtime.settings = runtime.settings.model_copy(
            update={"reconcile_sighting_grace_seconds": 0}
        )
        assert (await reconcile_once(runtime, replica="test")).drift == {"woken_upstream": 1}
        [interval] = await intervals(runtime, created["id"])
        assert interval.ended_at is None
        assert interval.started_at.isoformat()[:19] == running[0]["session_started_at"][:19]
        history = [
            (e["from_state"], e["to_state"]) for e in await events(client, headers, created["id"])
        ]
        assert history == [(None, "starting"), ("starting", "shutdown"), ("shutdown", "running")]

    async def test_without_start_forks_only(self, client, sim, runtime):
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, start=False)
        assert created["state"] == "shutdown"
        assert (await vms(sim))[created["upstream_id"]]["state"] != "running"
        assert await intervals(runtime, created["id"]) == []

    async def test_allowed_template_missing_upstream_is_422_and_recorded_failed(self, client, sim):
        headers = await factories.team_with_key(client)
        allowed = await client.put("/v1/admin/fork-templates/nosuch", headers=factories.ADMIN)
        assert allowed.status_code == 201, allowed.text
        response = await client.post("/v1/sandboxes", json={"template": "nosuch"}, headers=headers)
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/problem+json")
        listed = (await client.get("/v1/sandboxes", headers=headers)).json()["items"]
        assert [s["state"] for s in listed] == ["failed"]
        assert all(vm["state"] != "running" for vm in (await vms(sim)).values())


class TestVerbs:
    async def test_full_lifecycle(self, client, sim, runtime):
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers, tier="Nano")
        sid, uid = sandbox["id"], sandbox["upstream_id"]

        hibernated = await client.post(f"/v1/sandboxes/{sid}/hibernate", headers=headers)
        assert hibernated.status_code == 200 and hibernated.json()["state"] == "hibernated"
        assert (await vms(sim))[uid]["state"] == "hibernated"

        started = await client.post(f"/v1/sandboxes/{sid}/start", headers=headers)
        assert started.status_code == 200
        assert started.json()["state"] == "running" and started.json()["bootup_type"] == "RESUME"

        resized = await client.patch(
            f"/v1/sandboxes/{sid}", json={"tier": "Small"}, headers=headers
        )
        assert resized.status_code == 200 and resized.json()["tier"] == "Small"
        assert (await vms(sim))[uid]["tier"] == "Small"

        restarted = await client.post(f"/v1/sandboxes/{sid}/restart", headers=headers)
        assert restarted.status_code == 200
        assert restarted.json()["bootup_type"] == "CLEAN" and restarted.json()["state"] == "running"

        shut = await client.post(f"/v1/sandboxes/{sid}/shutdown", headers=headers)
        assert shut.status_code == 200 and shut.json()["state"] == "shutdown"

        deleted = await client.delete(f"/v1/sandboxes/{sid}", headers=headers)
        assert deleted.status_code == 200 and deleted.json()["state"] == "deleted"
        assert uid not in await vms(sim)

        kept = await client.get(f"/v1/sandboxes/{sid}", headers=headers)
        assert kept.status_code == 200 and kept.json()["state"] == "deleted"

        ledger = await intervals(runtime, sid)
        # create (Nano) | resume (Nano) → resize splits → Small | restart (Small)
        assert [i.tier for i in ledger] == ["Nano", "Nano", "Small", "Small"]
        assert all(i.ended_at is not None for i in ledger)
        transitions = [(e["from_state"], e["to_state"]) for e in await events(client, headers, sid)]
        assert transitions[-1] == ("shutdown", "deleted")
        assert ("running", "hibernated") in transitions

    async def test_delete_of_running_sandbox_shuts_it_down_first(self, client, sim, runtime):
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        deleted = await client.delete(f"/v1/sandboxes/{sandbox['id']}", headers=headers)
        assert deleted.status_code == 200 and deleted.json()["state"] == "deleted"
        assert all(i.ended_at is not None for i in await intervals(runtime, sandbox["id"]))

    async def test_delete_of_a_sandbox_woken_unseen_records_the_minutes_it_ran(
        self, client, sim, runtime
    ):
        """Woken by traffic since the last poll, it runs upstream while Corral has it stopped:
        the delete finds it running and books the stretch (the upstream bills it), from no
        earlier than Corral recorded the stop."""
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        sid, uid = created["id"], created["upstream_id"]
        assert (await client.post(f"/v1/sandboxes/{sid}/hibernate", headers=headers)).is_success
        assert (await sim.post(f"/_simulator/vms/{uid}/wake")).status_code == 200
        deleted = await client.delete(f"/v1/sandboxes/{sid}", headers=headers)
        assert deleted.status_code == 200 and deleted.json()["state"] == "deleted"
        first, woken = await intervals(runtime, sid)
        assert woken.ended_at is not None and woken.started_at >= first.ended_at
        history = [(e["from_state"], e["to_state"]) for e in await events(client, headers, sid)]
        assert history[-3:] == [
            ("hibernated", "running"),
            ("running", "shutdown"),
            ("shutdown", "deleted"),
        ]

    async def test_delete_of_a_sandbox_woken_unseen_books_the_tier_it_ran_at(
        self, client, sim, runtime
    ):
        """Resized while stopped here, then woken by traffic: the VM ran at its old tier, so
        the stretch the delete finds is booked at that tier, not at the pending one."""
        headers, sid, _ = await _resized_while_stopped_then_woken(client, sim)
        assert (await client.delete(f"/v1/sandboxes/{sid}", headers=headers)).is_success
        first, woken = await intervals(runtime, sid)
        assert (first.tier, woken.tier) == ("Nano", "Nano")

    async def test_a_start_that_finds_it_woken_records_the_tier_it_runs_at(
        self, client, sim, runtime
    ):
        """Woken by traffic unseen, the VM runs at its old tier: the tier change made while it
        was stopped here applies when Corral boots it, which this start did not."""
        headers, sid, uid = await _resized_while_stopped_then_woken(client, sim)
        started = await client.post(f"/v1/sandboxes/{sid}/start", headers=headers)
        assert started.status_code == 200 and started.json()["bootup_type"] == "RUNNING"
        assert (await vms(sim))[uid]["tier"] == "Nano"
        assert started.json()["tier"] == "Nano"
        *_, running = await intervals(runtime, sid)
        assert running.tier == "Nano" and running.ended_at is None

    async def test_a_start_waits_while_a_delete_checks_the_vm_is_not_running(
        self, client, sim, runtime
    ):
        """The delete's shutdown would stop what the start boots: the start is refused (409)
        until the delete is done."""
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        sid = created["id"]
        assert (await client.post(f"/v1/sandboxes/{sid}/hibernate", headers=headers)).is_success
        at_shutdown, release = asyncio.Event(), asyncio.Event()
        simulator = runtime.simulator

        async def held_shutdown(scope, receive, send):
            if scope["type"] == "http" and scope["path"].endswith("/shutdown"):
                at_shutdown.set()
                await release.wait()
            await simulator(scope, receive, send)

        async with upstream.through(runtime, held_shutdown):
            deleting = asyncio.create_task(client.delete(f"/v1/sandboxes/{sid}", headers=headers))
            await asyncio.wait_for(at_shutdown.wait(), 10)
            refused = await client.post(f"/v1/sandboxes/{sid}/start", headers=headers)
            assert refused.status_code == 409, refused.text
            release.set()
            deleted = await deleting
        assert deleted.status_code == 200 and deleted.json()["state"] == "deleted"
        assert len(await intervals(runtime, sid)) == 1

    async def test_a_start_that_boots_a_vm_stopped_meanwhile_books_the_tier_it_sent(
        self, client, sim, runtime
    ):
        """A start of a running sandbox is in flight while a resize and a hibernate of it
        settle: the start boots the hibernated VM at the tier it sent, not the resized one."""
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, tier="Micro")
        sid, uid = created["id"], created["upstream_id"]
        at_start, release = asyncio.Event(), asyncio.Event()
        simulator = runtime.simulator

        async def held_start(scope, receive, send):
            if scope["type"] == "http" and scope["path"].endswith("/start"):
                at_start.set()
                await release.wait()
            await simulator(scope, receive, send)

        # Only the start is held: the resize and the hibernate pass through to the simulator.
        async with upstream.through(runtime, held_start):
            starting = asyncio.create_task(
                client.post(f"/v1/sandboxes/{sid}/start", headers=headers)
            )
            await asyncio.wait_for(at_start.wait(), 10)
            resized = await client.patch(
                f"/v1/sandboxes/{sid}", json={"tier": "Small"}, headers=headers
            )
            assert resized.status_code == 200 and resized.json()["tier"] == "Small"
            stopped = await client.post(f"/v1/sandboxes/{sid}/hibernate", headers=headers)
            assert stopped.status_code == 200
            release.set()
            started = await starting
        assert started.status_code == 200 and started.json()["bootup_type"] == "RESUME"
        assert (await vms(sim))[uid]["tier"] == "Micro"
        *_, running = await intervals(runtime, sid)
        assert running.tier == "Micro" and running.ended_at is None

    async def test_a_start_settled_while_a_delete_checks_the_vm_keeps_the_delete_s_turn(
        self, client, sim, runtime
    ):
        """A start of a running sandbox is in flight while a shutdown settles; a delete then
        finds it stopped and asks the VM to shut down in case it was woken. The start boots
        it (CLEAN) and settles it running: the delete's turn still holds (a restart is
        refused), and the delete's shutdown ends the run the start recorded, never before it
        began. Corral bills what the upstream bills."""
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        sid, uid = created["id"], created["upstream_id"]
        at_start, start_released = asyncio.Event(), asyncio.Event()
        at_check, check_released = asyncio.Event(), asyncio.Event()
        shutdowns = 0
        simulator = runtime.simulator

        async def held(scope, receive, send):
            nonlocal shutdowns
            path = scope["path"] if scope["type"] == "http" else ""
            if path.endswith("/start"):
                at_start.set()
                await start_released.wait()
            if path.endswith("/shutdown"):
                shutdowns += 1
                if shutdowns == 2:  # the delete's check; the first shutdown passes
                    at_check.set()
                    await check_released.wait()
            await simulator(scope, receive, send)

        async with upstream.through(runtime, held):
            starting = asyncio.create_task(
                client.post(f"/v1/sandboxes/{sid}/start", headers=headers)
            )
            await asyncio.wait_for(at_start.wait(), 10)
            stopped = await client.post(f"/v1/sandboxes/{sid}/shutdown", headers=headers)
            assert stopped.status_code == 200 and stopped.json()["state"] == "shutdown"
            deleting = asyncio.create_task(client.delete(f"/v1/sandboxes/{sid}", headers=headers))
            await asyncio.wait_for(at_check.wait(), 10)
            start_released.set()
            started = await starting
            assert started.status_code == 200 and started.json()["bootup_type"] == "CLEAN"
            assert started.json()["state"] == "running"
            refused = await client.post(f"/v1/sandboxes/{sid}/restart", headers=headers)
            assert refused.status_code == 409, refused.text
            check_released.set()
            deleted = await deleting
        assert deleted.status_code == 200 and deleted.json()["state"] == "deleted"
        ran = await intervals(runtime, sid)
        assert len(ran) == 2
        assert all(i.ended_at is not None and i.ended_at > i.started_at for i in ran)
        truth = (await sim.get(f"/_simulator/vms/{uid}")).json()
        assert len(truth["ledger"]["stretches"]) == 2
        body = (await client.get(f"/v1/sandboxes/{sid}", headers=headers)).json()
        assert body["accrued"]["billed_minutes"] == truth["billed_minutes"]

    async def test_delete_of_a_stopped_sandbox_books_nothing_more(self, client, sim, runtime):
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        sid = created["id"]
        assert (await client.post(f"/v1/sandboxes/{sid}/hibernate", headers=headers)).is_success
        assert (await client.delete(f"/v1/sandboxes/{sid}", headers=headers)).is_success
        assert len(await intervals(runtime, sid)) == 1

    async def test_hibernating_a_stopped_sandbox_is_answered_cleanly(self, client, sim):
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        sid = sandbox["id"]
        assert (
            await client.post(f"/v1/sandboxes/{sid}/shutdown", headers=headers)
        ).status_code == 200
        for verb in ("hibernate", "shutdown"):
            again = await client.post(f"/v1/sandboxes/{sid}/{verb}", headers=headers)
            assert again.status_code == 200
            assert again.json()["state"] == "shutdown"

    async def test_sandbox_that_hibernated_upstream_is_recorded_when_hibernated(
        self, client, sim, runtime
    ):
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers, hibernation_timeout_seconds=60)
        await sim.post("/_simulator/clock/advance", json={"seconds": 120})
        response = await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
        assert response.status_code == 200
        assert response.json()["state"] == "hibernated"
        assert response.json()["last_cause"] == "upstream"

    async def test_start_of_running_sandbox_that_stopped_upstream_reopens_interval(
        self, client, sim, runtime
    ):
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers, hibernation_timeout_seconds=60)
        await sim.post("/_simulator/clock/advance", json={"seconds": 120})
        response = await client.post(f"/v1/sandboxes/{sandbox['id']}/start", headers=headers)
        assert response.status_code == 200
        assert response.json()["bootup_type"] == "RESUME"
        ledger = await intervals(runtime, sandbox["id"])
        assert len(ledger) == 2 and ledger[0].ended_at is not None and ledger[1].ended_at is None

    async def test_fork_of_a_sandbox(self, client, sim):
        headers = await factories.team_with_key(client)
        source = await factories.sandbox(client, headers, owner="bob")
        response = await client.post(
            f"/v1/sandboxes/{source['id']}/fork", json={"title": "copy"}, headers=headers
        )
        assert response.status_code == 201
        forked = response.json()
        assert forked["template"] == source["upstream_id"]
        assert forked["owner"] == "bob" and forked["state"] == "running"
        assert forked["upstream_id"] != source["upstream_id"]

    async def test_hibernation_timeout_change_applies_upstream(self, client, sim):
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        response = await client.patch(
            f"/v1/sandboxes/{sandbox['id']}",
            json={"hibernation_timeout_seconds": 900, "title": "t2"},
            headers=headers,
        )
        assert response.status_code == 200
        assert (
            response.json()["hibernation_timeout_seconds"] == 900
            and response.json()["title"] == "t2"
        )
        assert (await vms(sim))[sandbox["upstream_id"]]["hibernation_timeout_seconds"] == 900

    async def test_a_stopped_sandboxs_resize_yields_to_a_start_reserved_meanwhile(
        self, client, sim, runtime
    ):
        """A tier written to a stopped sandbox is what its next start is sent. A start that
        reserved the sandbox after the change read it was sent the old tier: the change is
        refused (409), not written over a VM starting at another tier."""
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, tier="Nano", start=False)
        sandbox_id = created["id"]
        async with transaction(runtime.sessions) as session:
            row = await session.get(Sandbox, sandbox_id, with_for_update=True)
            assert row is not None
            patching = asyncio.create_task(
                client.patch(f"/v1/sandboxes/{sandbox_id}", json={"tier": "Micro"}, headers=headers)
            )
            await _until_a_query_waits_for_a_lock(runtime)
            # As a start's reservation does, while the change waits for the row.
            await transitions.move(session, row, SandboxState.STARTING, cause="api", actor="t")
        response = await patching
        assert response.status_code == 409 and response.json()["type"].endswith("/sandbox-busy")
        async with transaction(runtime.sessions) as session:
            row = await session.get(Sandbox, sandbox_id)
            assert row is not None and (row.state, row.tier) == ("starting", "Nano")

    async def test_a_stopped_sandboxs_resize_is_what_its_next_start_is_sent(self, client, sim):
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, tier="Nano", start=False)
        sandbox_id = created["id"]
        patched = await client.patch(
            f"/v1/sandboxes/{sandbox_id}", json={"tier": "Micro"}, headers=headers
        )
        assert patched.status_code == 200 and patched.json()["tier"] == "Micro"
        started = await client.post(f"/v1/sandboxes/{sandbox_id}/start", headers=headers)
        assert started.status_code == 200 and started.json()["tier"] == "Micro"
        assert (await vms(sim))[created["upstream_id"]]["tier"] == "Micro"


async def _until_a_query_waits_for_a_lock(runtime: Any) -> None:
    for _ in range(500):
        async with runtime.engine.connect() as conn:
            waiting = await conn.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("nothing came to wait for the row")


class TestDatedByTheAttemptThatDidIt:
    """A call retried after a first attempt that did nothing did its work when the retry was
    sent: the ledger's start and end follow the upstream's, not the first attempt's."""

    @staticmethod
    def _first_attempt_slow_and_refused(runtime, verb: str, delay: float):
        simulator = runtime.simulator
        seen = 0

        async def app(scope, receive, send):
            nonlocal seen
            path = scope["path"] if scope["type"] == "http" else ""
            if path.endswith(f"/{verb}"):
                seen += 1
                if seen == 1:
                    await asyncio.sleep(delay)
                    await send({"type": "http.response.start", "status": 503, "headers": []})
                    await send({"type": "http.response.body", "body": b""})
                    return
            await simulator(scope, receive, send)

        return app

    @staticmethod
    async def _stretches(sim, uid: str) -> list[dict[str, Any]]:
        return (await sim.get(f"/_simulator/vms/{uid}")).json()["ledger"]["stretches"]

    async def test_a_stop_done_on_its_retry_ends_the_run_when_the_retry_was_sent(
        self, client, sim, runtime
    ):
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        sid, uid = created["id"], created["upstream_id"]
        wrapper = self._first_attempt_slow_and_refused(runtime, "hibernate", 0.5)
        async with upstream.through(runtime, wrapper):
            stopped = await client.post(f"/v1/sandboxes/{sid}/hibernate", headers=headers)
        assert stopped.status_code == 200 and stopped.json()["state"] == "hibernated"
        (ran,) = await intervals(runtime, sid)
        (truth,) = await self._stretches(sim, uid)
        upstream_end = datetime.fromisoformat(truth["ended_at"])
        assert abs((ran.ended_at - upstream_end).total_seconds()) < 0.2, (ran, truth)

    async def test_a_start_that_boots_on_its_retry_runs_from_when_the_retry_was_sent(
        self, client, sim, runtime
    ):
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        sid, uid = created["id"], created["upstream_id"]
        assert (await client.post(f"/v1/sandboxes/{sid}/hibernate", headers=headers)).is_success
        wrapper = self._first_attempt_slow_and_refused(runtime, "start", 0.5)
        async with upstream.through(runtime, wrapper):
            started = await client.post(f"/v1/sandboxes/{sid}/start", headers=headers)
        assert started.status_code == 200 and started.json()["bootup_type"] == "RESUME"
        _, ran = await intervals(runtime, sid)
        _, truth = await self._stretches(sim, uid)
        upstream_start = datetime.fromisoformat(truth["started_at"])
        assert abs((ran.started_at - upstream_start).total_seconds()) < 0.2, (ran, truth)


class TestList:
    async def test_filters_and_cursor_pagination(self, client, sim):
        headers = await factories.team_with_key(client)
        await sim.put("/_simulator/config", json={"concurrent_vm_limit": 100})
        made = [
            await factories.sandbox(client, headers, owner="alice" if i % 2 else "bob", start=False)
            for i in range(5)
        ]
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/sandboxes", params=params, headers=headers)).json()
            seen += [s["id"] for s in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(s["id"] for s in made) and len(seen) == 5
        alice = (
            await client.get("/v1/sandboxes", params={"owner": "alice"}, headers=headers)
        ).json()["items"]
        assert len(alice) == 2 and {s["owner"] for s in alice} == {"alice"}
        running = (
            await client.get("/v1/sandboxes", params={"state": "running"}, headers=headers)
        ).json()["items"]
        assert running == []

    async def test_get_shows_running_cost(self, client, sim):
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        body = (await client.get(f"/v1/sandboxes/{sandbox['id']}", headers=headers)).json()
        assert body["accrued"]["billed_minutes"] == 1
        assert body["accrued"]["credits"] not in (None, "0")


class TestAdminView:
    async def test_admins_list_every_team_or_one(self, client, sim):
        a = await factories.team_with_key(client, "team-a")
        b = await factories.team_with_key(client, "team-b")
        made_a = await factories.sandbox(client, a, start=False)
        made_b = await factories.sandbox(client, b, start=False)
        everything = (await client.get("/v1/sandboxes", headers=factories.ADMIN)).json()["items"]
        assert {s["id"] for s in everything} == {made_a["id"], made_b["id"]}
        only_b = await client.get(
            "/v1/sandboxes", params={"team": "team-b"}, headers=factories.ADMIN
        )
        assert [s["id"] for s in only_b.json()["items"]] == [made_b["id"]]

    async def test_admins_create_for_a_named_team_only(self, client, sim):
        await factories.team(client, "team-a")
        unnamed = await client.post("/v1/sandboxes", json={"start": False}, headers=factories.ADMIN)
        assert unnamed.status_code == 422
        named = await client.post(
            "/v1/sandboxes", json={"start": False, "team": "team-a"}, headers=factories.ADMIN
        )
        assert named.status_code == 201 and named.json()["team"] == "team-a"


async def _resized_while_stopped_then_woken(client, sim) -> tuple[dict[str, str], str, str]:
    """A Nano sandbox, hibernated, resized to Micro here (pending its next start), then woken
    by traffic upstream at Nano: its key's headers, its id and its upstream id."""
    headers = await factories.team_with_key(client)
    created = await factories.sandbox(client, headers, tier="Nano")
    sid, uid = created["id"], created["upstream_id"]
    assert (await client.post(f"/v1/sandboxes/{sid}/hibernate", headers=headers)).is_success
    patched = await client.patch(f"/v1/sandboxes/{sid}", json={"tier": "Micro"}, headers=headers)
    assert patched.json()["tier"] == "Micro"
    assert (await sim.post(f"/_simulator/vms/{uid}/wake")).status_code == 200
    return headers, sid, uid
