"""The database may go away (DESIGN §11): while it is down every request answers 503
problem+json with Retry-After, never 500, and once it is back the pool serves again without a
process restart; the reconcile leader takes its lock again. On a private Postgres cluster that
the test restarts (the shared server is never touched)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest

from app import db
from app.db import async_url, create_engine, migrate
from app.main import create_app
from app.reconcile.leader import Leadership
from app.runtime import Runtime
from app.settings import Settings
from app.upstream.simulator import create_simulator_app
from tests.conftest import ADMIN_KEY, SIMULATOR_KEY, simulated_runtime
from tests.fixtures import factories
from tests.pgcluster import Cluster, cluster


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    with cluster() as running:
        yield running


@pytest.fixture
async def served(pg: Cluster) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    url = async_url(pg.url)
    engine = create_engine(url, pool_size=2)
    await migrate(engine)
    settings = Settings(
        database_url=url, admin_key=ADMIN_KEY, upstream="simulator", reconcile_enabled=False
    )
    simulator = create_simulator_app(api_key=SIMULATOR_KEY)
    async with simulated_runtime(settings, engine, simulator) as runtime:
        app = create_app(runtime=runtime)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://corral"
        ) as client:
            yield client, runtime
    await engine.dispose()


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["type"].endswith("/database-unavailable")


async def test_requests_answer_503_while_the_database_is_down_and_work_after(
    pg: Cluster, served: tuple[httpx.AsyncClient, Runtime]
) -> None:
    client, _ = served
    headers = await factories.team_with_key(client, "restart-team")
    created = await factories.sandbox(client, headers)
    assert (await client.get("/v1/sandboxes", headers=headers)).status_code == 200

    pg.stop("fast")
    try:
        assert_unavailable(await client.get("/v1/sandboxes", headers=headers))
        assert_unavailable(await client.get(f"/v1/sandboxes/{created['id']}", headers=headers))
        assert_unavailable(
            await client.post(
                "/v1/admin/teams", json={"id": "other", "name": "o"}, headers=factories.ADMIN
            )
        )
        assert (await client.get("/healthz")).status_code == 200
    finally:
        pg.start()

    # The pooled connections died with the server; the pool replaces them by itself.
    listed = await client.get("/v1/sandboxes", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [item["id"] for item in listed.json()["items"]] == [created["id"]]
    again = await client.post(f"/v1/sandboxes/{created['id']}/hibernate", headers=headers)
    assert again.status_code == 200, again.text


async def test_the_first_request_after_an_unseen_restart_works(
    pg: Cluster, served: tuple[httpx.AsyncClient, Runtime]
) -> None:
    """No request met the database while it was down: every pooled connection is dead, and
    each is found so at checkout and replaced, so no request answers 503 for it."""
    client, _ = served
    headers = await factories.team_with_key(client, "unseen-restart-team")
    created = await factories.sandbox(client, headers)
    # Two requests at once hold both pooled connections, so both are pooled when it stops.
    both = [client.get(f"/v1/sandboxes/{created['id']}", headers=headers) for _ in range(2)]
    assert all(r.status_code == 200 for r in await asyncio.gather(*both))
    pg.stop("fast")
    pg.start()
    after = [client.get(f"/v1/sandboxes/{created['id']}", headers=headers) for _ in range(2)]
    assert [r.status_code for r in await asyncio.gather(*after)] == [200, 200]


async def _kill_corral_connections(pg: Cluster) -> int:
    """Terminates every connection Corral holds on the cluster (not the caller's own)."""
    killer = await asyncpg.connect(pg.url)
    try:
        killed: int = await killer.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'corral' AND pid <> pg_backend_pid()"
        )
    finally:
        await killer.close()
    return killed


async def test_a_connection_that_sat_idle_is_tested_and_a_dead_one_replaced(
    pg: Cluster, served: tuple[httpx.AsyncClient, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection idle longer than `PING_AFTER_IDLE_SECONDS` (here: any) is tried at
    checkout: one killed while it sat idle costs no request a 503."""
    client, _ = served
    headers = await factories.team_with_key(client, "idle-team")
    created = await factories.sandbox(client, headers)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert await _kill_corral_connections(pg) >= 1
    after = await client.get(f"/v1/sandboxes/{created['id']}", headers=headers)
    assert after.status_code == 200, after.text


async def test_a_connection_used_moments_ago_goes_out_untested(
    pg: Cluster, served: tuple[httpx.AsyncClient, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side of that trade: a connection back in the pool for less than the threshold
    (here: all of them) is not tried, so one killed in that window fails the next request,
    with a 503 and no record written; the failure discards every pooled connection opened
    before it, and the request after it works."""
    client, _ = served
    headers = await factories.team_with_key(client, "recent-team")
    created = await factories.sandbox(client, headers)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    assert await _kill_corral_connections(pg) >= 1
    refused = await client.post(
        "/v1/sandboxes", json={"tier": "Pico", "owner": "a@corp"}, headers=headers
    )
    assert_unavailable(refused)
    listed = await client.get("/v1/sandboxes", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [item["id"] for item in listed.json()["items"]] == [created["id"]]


async def test_the_reconcile_leader_takes_its_lock_again_after_a_restart(
    pg: Cluster, served: tuple[httpx.AsyncClient, Runtime]
) -> None:
    _, runtime = served
    leader = Leadership(runtime.engine, "a")
    other = Leadership(runtime.engine, "b")
    try:
        assert await leader.ensure()
        assert not await other.ensure()
        pg.stop("fast")
        pg.start()
        # The lock went with the old session. The leader notices, takes it again, and the
        # other replica still cannot: never two leaders.
        assert await leader.ensure()
        assert leader.is_leader
        assert not await other.ensure()
    finally:
        await leader.release()
        await other.release()
