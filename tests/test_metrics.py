"""`/metrics`: a known scenario, scraped and parsed, gives the numbers the database holds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import update

from app.db import transaction
from app.main import create_app
from app.metrics import GAUGE_NAMES, REGISTRY
from app.metrics_collector import DatabaseGauges
from app.models import OrgPlan, Sandbox
from app.runtime import Runtime
from app.settings import Settings
from tests.fixtures import factories
from tests.fixtures.metrics import Samples, observed, parse, scrape, value


@pytest.fixture
async def runtime(runtime: Runtime) -> AsyncIterator[Runtime]:
    async for wired in observed(runtime):
        yield wired


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def add_unmanaged(runtime: Runtime) -> None:
    """A VM the reconciler found running upstream that Corral did not start."""
    async with transaction(runtime.sessions) as session:
        session.add(
            Sandbox(
                id=f"sbx_{uuid.uuid4().hex[:12]}",
                upstream_id=f"ext{uuid.uuid4().hex[:6]}",
                team_id="unassigned",
                owner=None,
                template="pcz35m",
                tier="Large",
                hibernation_timeout_seconds=300,
                state="running",
                last_cause="reconcile",
                operation_id=uuid.uuid4().hex,
                managed=False,
            )
        )


class TestScenario:
    async def test_gauges_and_counters_match_the_scenario(
        self, client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        a = await factories.team_with_key(
            client, "team-a", max_concurrent=2, monthly_budget_credits="1000"
        )
        b = await factories.team_with_key(client, "team-b")
        await factories.sandbox(client, a, tier="Nano", owner="alice@corp")
        await factories.sandbox(client, a, tier="Small", owner="bob@corp")
        parked = await factories.sandbox(client, b, tier="Micro")
        hibernated = await client.post(f"/v1/sandboxes/{parked['id']}/hibernate", headers=b)
        assert hibernated.status_code == 200, hibernated.text
        await add_unmanaged(runtime)
        async with transaction(runtime.sessions) as session:
            await session.execute(update(OrgPlan).values(observed_limit=100))

        refused_before = counter(
            "corral_admissions_total",
            action="create",
            outcome="refused",
            limit="max_concurrent",
        )
        refused = await client.post("/v1/sandboxes", json={"tier": "Nano"}, headers=a)
        assert refused.status_code == 429, refused.text
        assert refused.json()["limit"] == "max_concurrent"

        errors_before = counter("corral_upstream_errors_total", operation="fork", status="500")
        await sim.put(
            "/_simulator/config", json={"faults": {"fork": {"error_rate": 1.0, "status": 500}}}
        )
        failed = await client.post("/v1/sandboxes", json={"tier": "Nano"}, headers=b)
        assert failed.status_code in (502, 503), failed.text

        samples = await scrape(client)

        assert value(samples, "corral_sandboxes_running", team="team-a", tier="Nano") == 1
        assert value(samples, "corral_sandboxes_running", team="team-a", tier="Small") == 1
        assert value(samples, "corral_sandboxes_running", team="unassigned", tier="Large") == 1
        # team-b's only sandbox is hibernated: no running series for it at all.
        assert not [
            k for k in samples if k[0] == "corral_sandboxes_running" and ("team", "team-b") in k[1]
        ]
        assert value(samples, "corral_burn_rate_credits_per_hour", team="team-a") == 50
        assert value(samples, "corral_burn_rate_credits_per_hour", team="team-b") == 0
        # Each open interval is billed one started minute so far: (10 + 40) / 60 credits.
        expected = float(Decimal(1000) - Decimal(10) / 60 - Decimal(40) / 60)
        remaining = value(samples, "corral_budget_remaining_credits", team="team-a")
        assert remaining == pytest.approx(expected, abs=1e-3)
        # No budget, no series: "unlimited" is not a number.
        assert value(samples, "corral_budget_remaining_credits", team="team-b") is None
        # min(plan 250, observed 100); live = two of team-a's plus the unmanaged one.
        assert value(samples, "corral_org_plan_limit") == 100
        assert value(samples, "corral_org_plan_headroom") == 97
        assert value(samples, "corral_unmanaged_sandboxes") == 1
        assert value(samples, "corral_upstream_mode", mode="simulator") == 1
        assert value(samples, "corral_upstream_mode", mode="codesandbox") == 0
        assert value(samples, "corral_upstream_circuit_state", state="closed") == 1

        assert (
            value(
                samples,
                "corral_admissions_total",
                action="create",
                outcome="refused",
                limit="max_concurrent",
            )
            == refused_before + 1
        )
        assert (
            value(samples, "corral_upstream_errors_total", operation="fork", status="500")
            == errors_before + 1
        )
        forks = value(samples, "corral_upstream_request_duration_seconds_count", operation="fork")
        assert forks is not None and forks >= 4

    async def test_http_latency_is_labelled_by_route_template(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client, "team-a")
        created = await factories.sandbox(client, headers)
        await client.get(f"/v1/sandboxes/{created['id']}", headers=headers)
        await client.get("/no/such/path/sbx_secret")
        samples = await scrape(client)
        routes = {
            dict(labels)["route"]
            for name, labels in samples
            if name == "corral_http_request_duration_seconds_count"
        }
        assert "/v1/sandboxes/{sandbox_id}" in routes
        assert "unmatched" in routes
        assert not [r for r in routes if created["id"] in r or "sbx_secret" in r]

    async def test_no_sandbox_ids_or_owners_in_any_label(self, client: httpx.AsyncClient) -> None:
        headers = await factories.team_with_key(client, "team-a")
        created = await factories.sandbox(client, headers, owner="carol@corp")
        response = await client.get("/metrics", headers=factories.ADMIN)
        assert created["id"] not in response.text
        assert created["upstream_id"] not in response.text if created.get("upstream_id") else True
        assert "carol@corp" not in response.text

    async def test_every_exported_gauge_is_in_the_exposition(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/metrics", headers=factories.ADMIN)
        names = {family.name for family in text_string_to_metric_families(response.text)}
        assert set(GAUGE_NAMES) <= names


class TestToken:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"metrics_token": SecretStr("scrape-me")})

    async def test_metrics_needs_the_token_when_one_is_set(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        assert runtime.settings.metrics_token is not None
        missing = await client.get("/metrics")
        assert missing.status_code == 401
        assert missing.headers["content-type"].startswith("application/problem+json")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        samples: Samples = await scrape(client, Authorization="Bearer scrape-me")
        assert value(samples, "corral_org_plan_limit") == 250


class TestCache:
    async def test_database_gauges_are_cached_for_their_ttl(self, runtime: Runtime) -> None:
        now = [1000.0]
        gauges = DatabaseGauges(
            runtime.sessions,
            timezone=runtime.settings.budget_timezone,
            ttl_seconds=5,
            clock=lambda: now[0],
        )
        runtime.gauges = gauges
        app = create_app(runtime=runtime)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://corral"
        ) as client:
            assert value(await scrape(client), "corral_org_plan_limit") == 250
            async with transaction(runtime.sessions) as session:
                await session.execute(update(OrgPlan).values(plan_limit=10))
            now[0] += 4.9
            assert value(await scrape(client), "corral_org_plan_limit") == 250
            now[0] += 0.2
            assert value(await scrape(client), "corral_org_plan_limit") == 10


def test_parse_reads_labels() -> None:
    samples = parse('x_total{a="1"} 3.0\n')
    assert value(samples, "x_total", a="1") == 3.0
