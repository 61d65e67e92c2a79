"""Admission limits, each refusal naming its limit, and the quota and plan views."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.fixtures import factories


async def burst(
    client: httpx.AsyncClient, headers: dict[str, str], n: int, **body: Any
) -> list[httpx.Response]:
    return list(
        await asyncio.gather(
            *(client.post("/v1/sandboxes", json=body, headers=headers) for _ in range(n))
        )
    )


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def refused_limits(responses: list[httpx.Response]) -> set[str]:
    return {r.json()["limit"] for r in responses if r.status_code >= 400}


async def set_plan(client: httpx.AsyncClient, **plan: Any) -> None:
    response = await client.put("/v1/admin/plan", json=plan, headers=factories.ADMIN)
    assert response.status_code == 200, response.text


class TestNestedLimits:
    async def test_each_scope_gets_exactly_what_its_limits_allow(self, client, sim):
        await set_plan(client, plan="build")  # 10 VMs
        team_a = await factories.team_with_key(
            client, "team-a", max_concurrent=3, max_concurrent_per_owner=2
        )
        team_b = await factories.team_with_key(client, "team-b", guaranteed=4)
        team_c = await factories.team_with_key(client, "team-c")

        alice = await burst(client, team_a, 5, owner="alice")
        assert statuses(alice) == {201: 2, 429: 3}
        assert refused_limits(alice) == {"max_concurrent_per_owner"}

        bob = await burst(client, team_a, 5, owner="bob")
        assert statuses(bob) == {201: 1, 429: 4}
        assert refused_limits(bob) == {"max_concurrent"}

        # 3 running; 4 slots are kept for team B's unused guarantee: C gets 10 - 3 - 4.
        others = await burst(client, team_c, 10)
        assert statuses(others) == {201: 3, 429: 7}
        assert refused_limits(others) == {"guaranteed"}

        guaranteed = await burst(client, team_b, 10)
        assert statuses(guaranteed) == {201: 4, 429: 6}
        assert refused_limits(guaranteed) == {"org_plan"}

        running = [
            vm
            for vm in (await sim.get("/_simulator/vms")).json()["vms"]
            if vm["state"] == "running"
        ]
        assert len(running) == 10

    async def test_refusal_bodies_name_limit_scope_current_and_maximum(self, client, sim):
        headers = await factories.team_with_key(client, "team-a", max_concurrent_per_owner=1)
        await factories.sandbox(client, headers, owner="alice")
        refused = await client.post("/v1/sandboxes", json={"owner": "alice"}, headers=headers)
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert int(refused.headers["retry-after"]) >= 1
        body = refused.json()
        assert (body["limit"], body["scope"], body["current"], body["maximum"]) == (
            "max_concurrent_per_owner",
            "owner",
            1,
            1,
        )
        assert "alice" in body["detail"]

    async def test_org_limit_is_the_smaller_of_plan_and_observed(self, client, sim, runtime):
        from sqlalchemy import update

        from app.db import transaction
        from app.models import OrgPlan

        await set_plan(client, plan="enterprise", limit=5)
        async with transaction(runtime.sessions) as session:
            await session.execute(update(OrgPlan).values(observed_limit=2))
        plan = (await client.get("/v1/admin/plan", headers=factories.ADMIN)).json()
        assert (plan["plan_limit"], plan["observed_limit"], plan["effective_limit"]) == (5, 2, 2)
        headers = await factories.team_with_key(client, "team-a")
        assert statuses(await burst(client, headers, 4)) == {201: 2, 429: 2}


class TestTheTeam:
    @pytest.mark.parametrize("deleted", [False, True], ids=["never-existed", "deleted"])
    @pytest.mark.parametrize("start", [True, False])
    async def test_a_create_for_a_team_that_does_not_exist_records_nothing(
        self, client, sim, engine, deleted, start
    ):
        # The reservation is inserted before admission runs; a team that is not there
        # must still answer 404 and leave no row, no meter unit and no VM behind.
        if deleted:
            await factories.team_with_key(client, "gone")
            await client.delete("/v1/admin/teams/gone", headers=factories.ADMIN)
        response = await client.post(
            "/v1/sandboxes", json={"team": "gone", "start": start}, headers=factories.ADMIN
        )
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == "Team 'gone' does not exist."
        async with engine.connect() as conn:
            rows = await conn.scalar(text("SELECT count(*) FROM sandboxes"))
            units = await conn.scalar(text("SELECT count(*) FROM upstream_work"))
            events = await conn.scalar(text("SELECT count(*) FROM sandbox_events"))
        assert (rows, units, events) == (0, 0, 0)
        assert (await sim.get("/_simulator/vms")).json()["vms"] == []


class TestTierAndBurnRate:
    async def test_tier_above_max_tier_is_403(self, client, sim):
        headers = await factories.team_with_key(client, "team-a", max_tier="Small")
        refused = await client.post("/v1/sandboxes", json={"tier": "XLarge"}, headers=headers)
        assert refused.status_code == 403
        assert (refused.json()["limit"], refused.json()["maximum"]) == ("max_tier", "Small")
        small = await factories.sandbox(client, headers, tier="Small")
        resize = await client.patch(
            f"/v1/sandboxes/{small['id']}", json={"tier": "Medium"}, headers=headers
        )
        assert resize.status_code == 403
        assert (await sim.get(f"/_simulator/vms/{small['upstream_id']}")).json()["tier"] == "Small"

    async def test_burn_rate_refuses_an_xlarge_and_admits_a_nano(self, client, sim):
        headers = await factories.team_with_key(client, "team-a", max_credits_per_hour="300")
        for _ in range(2):
            await factories.sandbox(client, headers, tier="Pico")
        refused = await client.post("/v1/sandboxes", json={"tier": "XLarge"}, headers=headers)
        assert refused.status_code == 429
        body = refused.json()
        assert (body["limit"], body["scope"], body["maximum"]) == (
            "max_credits_per_hour",
            "team",
            "300",
        )
        assert body["current"] == "10"
        assert (
            await client.post("/v1/sandboxes", json={"tier": "Nano"}, headers=headers)
        ).status_code == 201

    async def test_resize_up_checks_the_burn_rate(self, client, sim):
        headers = await factories.team_with_key(client, "team-a", max_credits_per_hour="100")
        sandbox = await factories.sandbox(client, headers, tier="Nano")
        assert (
            await client.patch(
                f"/v1/sandboxes/{sandbox['id']}", json={"tier": "Medium"}, headers=headers
            )
        ).status_code == 200
        refused = await client.patch(
            f"/v1/sandboxes/{sandbox['id']}", json={"tier": "Large"}, headers=headers
        )
        assert refused.status_code == 429 and refused.json()["limit"] == "max_credits_per_hour"


class TestBudget:
    async def test_exhausted_budget_is_402(self, client, sim):
        # One started minute of a Nano costs 10/60 credits, more than this budget.
        headers = await factories.team_with_key(client, "team-a", monthly_budget_credits="0.1")
        await factories.sandbox(client, headers, tier="Nano")
        refused = await client.post("/v1/sandboxes", json={}, headers=headers)
        assert refused.status_code == 402
        body = refused.json()
        assert (body["limit"], body["scope"], body["maximum"]) == (
            "monthly_budget",
            "team",
            "0.1",
        )


class TestReservations:
    async def test_a_refused_upstream_start_releases_the_reservation(self, client, sim):
        """Only a start that certainly did not happen (503: turned away) gives the slot back;
        one that may have happened keeps it (tests/sandboxes/test_uncertain_outcomes.py)."""
        await set_plan(client, plan="enterprise", limit=1)
        headers = await factories.team_with_key(client, "team-a")
        await sim.put(
            "/_simulator/config", json={"faults": {"start": {"error_rate": 1.0, "status": 503}}}
        )
        assert (await client.post("/v1/sandboxes", json={}, headers=headers)).status_code == 503
        quota = (await client.get("/v1/quota", headers=headers)).json()
        assert quota["usage"]["live"] == 0 and quota["org"]["live"] == 0
        await sim.put("/_simulator/config", json={"faults": {}})
        assert (await client.post("/v1/sandboxes", json={}, headers=headers)).status_code == 201

    async def test_start_and_restart_are_admitted(self, client, sim):
        headers = await factories.team_with_key(client, "team-a", max_concurrent=1)
        first = await factories.sandbox(client, headers)
        second = await factories.sandbox(client, headers, start=False)
        refused = await client.post(f"/v1/sandboxes/{second['id']}/start", headers=headers)
        assert refused.status_code == 429 and refused.json()["limit"] == "max_concurrent"
        assert (await client.get(f"/v1/sandboxes/{second['id']}", headers=headers)).json()[
            "state"
        ] == "shutdown"
        # Restarting the one running sandbox frees its own slot first.
        assert (
            await client.post(f"/v1/sandboxes/{first['id']}/restart", headers=headers)
        ).status_code == 200


class TestQuotaViews:
    async def test_check_answers_like_the_action_without_doing_it(self, client, sim):
        headers = await factories.team_with_key(client, "team-a", max_concurrent=1)
        ok = await client.post("/v1/quota/check", json={"tier": "Nano"}, headers=headers)
        assert ok.status_code == 200 and ok.json()["allowed"] is True
        await factories.sandbox(client, headers)
        before = (await sim.get("/_simulator/requests")).json()
        check = await client.post("/v1/quota/check", json={}, headers=headers)
        real = await client.post("/v1/sandboxes", json={}, headers=headers)
        assert check.status_code == real.status_code == 429
        strip = lambda body: {k: v for k, v in body.items() if k != "instance"}  # noqa: E731
        assert strip(check.json()) == strip(real.json())
        assert (await sim.get("/_simulator/requests")).json() == before
        listed = (await client.get("/v1/sandboxes", headers=headers)).json()["items"]
        assert len(listed) == 1

    async def test_quota_shows_limits_usage_and_headroom(self, client, sim):
        await set_plan(client, plan="build")
        headers = await factories.team_with_key(
            client, "team-a", max_concurrent=4, max_credits_per_hour="100"
        )
        await factories.sandbox(client, headers, tier="Micro")
        quota = (await client.get("/v1/quota", headers=headers)).json()
        assert quota["limits"]["max_concurrent"] == 4
        assert quota["usage"]["running"] == 1 and quota["usage"]["burn_credits_per_hour"] == "20"
        assert (
            quota["headroom"]["concurrent"] == 3 and quota["headroom"]["credits_per_hour"] == "80"
        )
        assert quota["org"] == {
            "plan": "build",
            "effective_limit": 10,
            "live": 1,
            "reserved_for_guarantees": 0,
            "headroom": 9,
        }

    @pytest.mark.parametrize(
        "body",
        [
            {"plan": "enterprise"},
            {"plan": "build", "limit": 99},
            {"plan": "gold"},
            {"plan": "enterprise", "limit": 0},
        ],
    )
    async def test_bad_plans_are_refused(self, client, body):
        response = await client.put("/v1/admin/plan", json=body, headers=factories.ADMIN)
        assert response.status_code == 422
        assert (await client.get("/v1/admin/plan", headers=factories.ADMIN)).json()[
            "plan"
        ] == "scale"

    async def test_plan_is_admin_only(self, client):
        headers = await factories.team_with_key(client, "team-a")
        assert (
            await client.put("/v1/admin/plan", json={"plan": "build"}, headers=headers)
        ).status_code == 403
