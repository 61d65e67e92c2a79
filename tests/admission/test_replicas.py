"""Race-freedom across real replicas: two `corral serve` processes share one database and one
standalone simulator, and a burst of creates is admitted exactly up to the org limit."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import create_engine, migrate
from tests import processes
from tests.conftest import ADMIN_KEY, RESET_SEED
from tests.database import recreate

SIM_KEY = "replica-simulator-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
async def shared_database() -> str:
    url = await recreate(f"corral_replicas_{os.getpid()}")
    engine = create_engine(url, pool_size=1)
    await migrate(engine)
    await engine.dispose()
    return url


@pytest.fixture(scope="module")
def replicas(
    shared_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[processes.Process, list[processes.Process]]]:
    logs = tmp_path_factory.mktemp("replicas")
    with processes.simulator(SIM_KEY, logs) as sim:
        common = {
            "database_url": shared_database,
            "upstream_url": sim.url,
            "upstream_key": SIM_KEY,
            "admin_key": ADMIN_KEY,
            "log_dir": logs,
        }
        with processes.corral(**common) as first, processes.corral(**common) as second:
            yield sim, [first, second]


async def reset(database_url: str, sim: httpx.AsyncClient) -> None:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        for statement in RESET_SEED:
            await conn.execute(text(statement))
    await engine.dispose()
    assert (await sim.post("/_simulator/reset")).status_code == 200


@pytest.mark.parametrize("run", range(10))
async def test_burst_of_creates_is_admitted_exactly_to_the_org_limit(
    replicas, shared_database, run: int
) -> None:
    sim_process, corrals = replicas
    async with httpx.AsyncClient(
        base_url=sim_process.url, headers={"Authorization": f"Bearer {SIM_KEY}"}
    ) as sim:
        await reset(shared_database, sim)
        await sim.put("/_simulator/config", json={"latency_ms": 50, "concurrent_vm_limit": 10})
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            base = corrals[0].url
            assert (
                await http.put(f"{base}/v1/admin/plan", json={"plan": "build"}, headers=ADMIN)
            ).status_code == 200
            assert (
                await http.post(
                    f"{base}/v1/admin/teams", json={"id": "burst", "name": "b"}, headers=ADMIN
                )
            ).status_code == 201
            issued = await http.post(
                f"{base}/v1/admin/teams/burst/keys",
                json={"name": "k", "scopes": ["sandboxes:read", "sandboxes:write"]},
                headers=ADMIN,
            )
            headers = {"Authorization": f"Bearer {issued.json()['key']}"}

            async def create(i: int) -> httpx.Response:
                replica = corrals[i % 2].url
                return await http.post(
                    f"{replica}/v1/sandboxes", json={"title": f"b{i}"}, headers=headers
                )

            responses = await asyncio.gather(*(create(i) for i in range(100)))
        statuses = Counter(r.status_code for r in responses)
        assert statuses == {201: 10, 429: 90}, {s: n for s, n in statuses.items()}
        refusal = next(r for r in responses if r.status_code == 429)
        assert refusal.json()["limit"] == "org_plan" and refusal.json()["scope"] == "org"
        assert int(refusal.headers["retry-after"]) >= 1
        assert (await sim.get("/_simulator/requests")).json()["fork"] == 10
        running = [
            vm
            for vm in (await sim.get("/_simulator/vms")).json()["vms"]
            if vm["state"] == "running"
        ]
        assert len(running) == 10
