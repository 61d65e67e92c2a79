"""Calls that may have been applied upstream are never taken as not applied (DESIGN §11): the
slot stays taken, the ledger is not closed on a guess, and the truth is looked up at once or
left to the reconciler. Driven through the in-process simulator's fault injection."""

from __future__ import annotations

from typing import Any

import httpx

from app.clock import now
from app.db import transaction
from app.models import Sandbox
from app.reconcile.service import reconcile_once
from app.runtime import Runtime
from app.sandboxes import lifecycle
from tests.fixtures import factories
from tests.sandboxes.test_lifecycle import events, intervals, vms


async def faults(sim: httpx.AsyncClient, **per_operation: dict[str, Any]) -> None:
    response = await sim.put("/_simulator/config", json={"faults": per_operation})
    assert response.status_code == 200, response.text


async def row(runtime: Runtime, sandbox_id: str) -> Sandbox:
    async with transaction(runtime.sessions) as session:
        found = await session.get(Sandbox, sandbox_id)
        assert found is not None
        return found


def without_grace(runtime: Runtime) -> None:
    """The reconciler trusts an absence from `/vm/running` at once (the simulator's listing is
    never stale unless told to be)."""
    runtime.settings = runtime.settings.model_copy(update={"reconcile_sighting_grace_seconds": 0})


class TestStart:
    async def test_a_start_whose_answer_was_lost_is_found_running_at_once(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        await client.post(f"/v1/sandboxes/{created['id']}/hibernate", headers=headers)
        await faults(sim, start={"lose_response_rate": 1.0})
        response = await client.post(f"/v1/sandboxes/{created['id']}/start", headers=headers)
        assert response.status_code == 502, response.text
        upstream = (await vms(sim))[created["upstream_id"]]
        assert upstream["state"] == "running"
        after = await row(runtime, created["id"])
        assert after.state == "running"
        # Billed from the upstream's own session start, one open interval.
        open_ = [i for i in await intervals(runtime, created["id"]) if i.ended_at is None]
        assert len(open_) == 1
        assert open_[0].started_at.isoformat().startswith(upstream["session_started_at"][:19])

    async def test_an_uncertain_start_keeps_its_slot_until_the_reconciler_knows(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client, max_concurrent=1)
        # A 500 may come after the upstream acted: maybe applied. The simulator did not start it.
        await faults(sim, start={"error_rate": 1.0, "status": 500})
        response = await client.post("/v1/sandboxes", json={}, headers=headers)
        assert response.status_code == 502
        [item] = (await client.get("/v1/sandboxes", headers=headers)).json()["items"]
        assert item["state"] == "unknown"
        assert item["upstream_id"] in await vms(sim), "the fork is kept: it may be running"
        await faults(sim)
        # The team's one slot is still taken.
        refused = await client.post("/v1/sandboxes", json={}, headers=headers)
        assert refused.status_code == 429, refused.text
        assert refused.json()["limit"] == "max_concurrent"

        without_grace(runtime)
        await reconcile_once(runtime, replica="test")
        settled = await row(runtime, item["id"])
        # Never started upstream: it is the fork, shut down, and the slot is free again.
        assert (settled.state, settled.last_cause) == ("shutdown", "reconciler")
        assert await intervals(runtime, item["id"]) == []
        again = await client.post("/v1/sandboxes", json={}, headers=headers)
        assert again.status_code == 201, again.text

    async def test_a_refused_creates_fork_is_deleted_once_the_upstream_allows(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        await faults(
            sim,
            start={"error_rate": 1.0, "status": 503},
            delete={"error_rate": 1.0, "status": 503},
        )
        response = await client.post("/v1/sandboxes", json={}, headers=headers)
        assert response.status_code == 503
        [item] = (await client.get("/v1/sandboxes", headers=headers)).json()["items"]
        assert item["state"] == "failed"
        assert item["upstream_id"] in await vms(sim), "the delete was refused"
        assert (await row(runtime, item["id"])).deleted_at is None

        await reconcile_once(runtime, replica="test")
        assert item["upstream_id"] in await vms(sim), "still refused: stays on the list"
        await faults(sim)
        await reconcile_once(runtime, replica="test")
        assert item["upstream_id"] not in await vms(sim)
        assert (await row(runtime, item["id"])).deleted_at is not None


class TestStop:
    async def test_a_lost_hibernate_answer_is_confirmed_by_asking_again(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        # Seeded so that the first hibernate does the work and loses its answer (the client's
        # retries then meet the upstream's 404, a VM not running).
        await faults(sim, hibernate={"lose_response_rate": 1.0})
        response = await client.post(f"/v1/sandboxes/{created['id']}/hibernate", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "hibernated"
        assert (await vms(sim))[created["upstream_id"]]["state"] == "hibernated"
        assert all(i.ended_at is not None for i in await intervals(runtime, created["id"]))
        # Recorded as this call's work (the retry's 404 is the VM it had stopped), not as the
        # upstream's own.
        assert (await row(runtime, created["id"])).last_cause == "api"

    async def test_stops_on_one_sandbox_take_turns(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        # A shutdown in flight (its intent written, its answer not yet back).
        await lifecycle.note_intent(runtime, await row(runtime, created["id"]), "shutdown", now())
        busy = await client.post(f"/v1/sandboxes/{created['id']}/hibernate", headers=headers)
        assert busy.status_code == 409, busy.text
        assert busy.json()["type"].endswith("/sandbox-busy")
        assert busy.headers["retry-after"] == "1"
        assert (await vms(sim))[created["upstream_id"]]["state"] == "running", "nothing sent"
        await lifecycle.drop_intent(runtime, created["id"], "shutdown")
        done = await client.post(f"/v1/sandboxes/{created['id']}/hibernate", headers=headers)
        assert done.status_code == 200, done.text
        assert (await row(runtime, created["id"])).pending_intent is None

    async def test_an_unconfirmed_stop_leaves_the_interval_open_until_the_upstream_tells(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        await faults(sim, shutdown={"error_rate": 1.0, "status": 500})
        response = await client.post(f"/v1/sandboxes/{created['id']}/shutdown", headers=headers)
        assert response.status_code == 502
        after = await row(runtime, created["id"])
        assert after.state == "unknown"
        assert [i.ended_at for i in await intervals(runtime, created["id"])] == [None]
        moves = [(e["from_state"], e["to_state"]) for e in await events(client, headers, after.id)]
        assert moves[-1] == ("running", "unknown")

        # The VM is still listed running: the stop did not happen.
        await faults(sim)
        without_grace(runtime)
        await reconcile_once(runtime, replica="test")
        settled = await row(runtime, created["id"])
        assert settled.state == "running"
        assert [i.ended_at for i in await intervals(runtime, created["id"])] == [None]

    async def test_an_unconfirmed_stop_that_happened_closes_at_the_time_asked(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        await faults(sim, shutdown={"error_rate": 1.0, "status": 500})
        await client.post(f"/v1/sandboxes/{created['id']}/shutdown", headers=headers)
        asked_at = (await row(runtime, created["id"])).state_changed_at
        await faults(sim)
        # It stops upstream after all (as the lost call would have done).
        assert (await sim.post(f"/vm/{created['upstream_id']}/shutdown")).status_code == 200
        without_grace(runtime)
        await reconcile_once(runtime, replica="test")
        settled = await row(runtime, created["id"])
        assert (settled.state, settled.last_cause) == ("shutdown", "reconciler")
        [interval] = await intervals(runtime, created["id"])
        assert interval.ended_at == asked_at


class TestDelete:
    async def test_a_lost_delete_answer_is_confirmed_by_looking_the_sandbox_up(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, start=False)
        await faults(sim, delete={"lose_response_rate": 1.0})
        response = await client.delete(f"/v1/sandboxes/{created['id']}", headers=headers)
        assert response.status_code == 200, response.text
        assert (await row(runtime, created["id"])).state == "deleted"
        assert created["upstream_id"] not in await vms(sim)

    async def test_an_unconfirmed_delete_converges_through_the_reconciler(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, start=False)
        await faults(sim, delete={"lose_response_rate": 1.0}, get={"error_rate": 1.0})
        response = await client.delete(f"/v1/sandboxes/{created['id']}", headers=headers)
        assert response.status_code == 502
        assert (await row(runtime, created["id"])).state == "unknown"
        await faults(sim)
        without_grace(runtime)
        await reconcile_once(runtime, replica="test")
        settled = await row(runtime, created["id"])
        assert (settled.state, settled.last_cause) == ("deleted", "reconciler")


async def test_a_start_waits_for_a_delete_in_flight(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = await factories.team_with_key(client)
    created = await factories.sandbox(client, headers, start=False)
    await lifecycle.note_intent(runtime, await row(runtime, created["id"]), "deleted", now())
    busy = await client.post(f"/v1/sandboxes/{created['id']}/start", headers=headers)
    assert busy.status_code == 409, busy.text
    assert busy.json()["type"].endswith("/sandbox-busy")
    assert (await row(runtime, created["id"])).pending_intent == "deleted", "left as it was"
    assert (await vms(sim))[created["upstream_id"]]["state"] != "running"
