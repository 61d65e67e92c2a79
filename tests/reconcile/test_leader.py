"""Leader election, the period lock, the loop's back-off, and the admin routes."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.reconcile.leader import Leadership, PeriodBusy, period_lock
from app.reconcile.loop import MAX_BACKOFF_SECONDS, ReconcileLoop, backoff
from app.reconcile.service import reconcile_once
from app.runtime import Runtime
from tests.fixtures import factories
from tests.fixtures.budget import running_states, spend
from tests.reconcile.helpers import configure, runs


class TestLeadership:
    async def test_one_replica_leads_until_it_lets_go(self, engine: AsyncEngine) -> None:
        first, second = Leadership(engine, "a"), Leadership(engine, "b")
        try:
            assert await first.ensure()
            assert not await second.ensure()
            assert await first.ensure(), "a leader keeps its lock"
            await first.release()
            assert await second.ensure()
            assert not await first.ensure()
        finally:
            await first.release()
            await second.release()

    async def test_a_leader_whose_connection_dies_is_replaced(self, engine: AsyncEngine) -> None:
        first, second = Leadership(engine, "a"), Leadership(engine, "b")
        try:
            assert await first.ensure()
            assert first._conn is not None
            # What the death of the leader's process does to its session.
            await first._conn.invalidate()
            assert await second.ensure()
            assert not await first.ensure()
        finally:
            await first.release()
            await second.release()

    async def test_periods_never_overlap(self, runtime: Runtime) -> None:
        async with period_lock(runtime.engine):
            with pytest.raises(PeriodBusy):
                await reconcile_once(runtime, wait_seconds=0.2)
        assert (await reconcile_once(runtime)).outcome == "ok"


class TestBackoff:
    def test_doubles_per_failure_up_to_a_cap(self) -> None:
        assert backoff(15, 0) == 15
        assert [backoff(15, n) for n in (1, 2, 3)] == [30, 60, 120]
        assert backoff(15, 50) == MAX_BACKOFF_SECONDS
        assert backoff(600, 3) == 600, "never shorter than the interval"

    async def test_the_loop_backs_off_while_the_upstream_fails(
        self, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        loop = ReconcileLoop(runtime)
        try:
            await configure(sim, faults={"running": {"error_rate": 1.0}})
            assert await loop.tick(1.0) == 2.0
            assert await loop.tick(1.0) == 4.0
            await configure(sim, faults={})
            assert await loop.tick(1.0) == 1.0
        finally:
            await loop.stop()
        assert [r.outcome for r in await runs(runtime)] == ["failed", "failed", "ok"]


class TestAdminRoutes:
    async def test_a_period_run_by_hand_is_listed_with_its_drift(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        outside = (await sim.post("/_simulator/vms", json={"tier": "Pico"})).json()
        response = await client.post("/v1/admin/reconciliation/run", headers=admin)
        assert response.status_code == 200, response.text
        run = response.json()
        assert (run["outcome"], run["drift"], run["upstream_running"]) == (
            "ok",
            {"unmanaged": 1},
            1,
        )
        assert run["finished_at"] is not None and run["finished_at"] >= run["started_at"]

        listing = await client.get("/v1/admin/reconciliation", headers=admin)
        assert listing.status_code == 200
        body = listing.json()
        assert [r["id"] for r in body["runs"]] == [run["id"]]
        assert body["runs"][0]["drift"] == {"unmanaged": 1}
        [drift] = body["drifts"]
        assert (drift["kind"], drift["upstream_id"], drift["action"]) == (
            "unmanaged",
            outside["id"],
            "adopted",
        )

    async def test_team_keys_and_anonymous_callers_are_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        for method, path in (
            ("GET", "/v1/admin/reconciliation"),
            ("POST", "/v1/admin/reconciliation/run"),
        ):
            assert (await client.request(method, path, headers=headers)).status_code == 403
            assert (await client.request(method, path)).status_code == 401


class TestBudgetJob:
    async def test_the_leaders_period_hibernates_teams_past_their_budget(
        self, runtime: Runtime, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        over = await factories.team_with_key(
            client, "team-over", monthly_budget_credits="2", budget_policy="hibernate"
        )
        sandbox_id = (await factories.sandbox(client, over))["id"]
        await spend(runtime, sandbox_id, "team-over")
        loop = ReconcileLoop(runtime)
        try:
            await loop.tick(1.0)
        finally:
            await loop.stop()
        assert await running_states(runtime, "team-over") == {sandbox_id: ("hibernated", "budget")}
