"""The per-user mint rate limit: N sessions per window per (team, user), 429 + Retry-After,
held across replicas because the count and the insert run under one Postgres lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from app.db import create_engine, session_factory
from app.main import create_app
from app.models import BrowserSession
from app.runtime import Runtime
from tests.fixtures import factories

LIMIT = 3
WINDOW = 60


@pytest.fixture
def settings(settings: Any) -> Any:
    return settings.model_copy(
        update={"session_rate_limit": LIMIT, "session_rate_window_seconds": WINDOW}
    )


async def _mint(
    client: httpx.AsyncClient, headers: dict[str, str], sandbox_id: str, user: str = "alice"
) -> httpx.Response:
    return await client.post(
        f"/v1/sandboxes/{sandbox_id}/sessions", json={"user": user}, headers=headers
    )


@pytest.fixture
async def replica(runtime: Runtime, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A second Corral on the same database, with its own engine and connection pool."""
    engine = create_engine(database_url)
    other = Runtime(
        settings=runtime.settings,
        engine=engine,
        sessions=session_factory(engine),
        upstream=runtime.upstream,
        simulator=runtime.simulator,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime=other)), base_url="http://b"
    ) as client:
        yield client
    await engine.dispose()


class TestSessionRateLimit:
    async def test_limit_per_user_with_retry_after(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        for _ in range(LIMIT):
            assert (await _mint(client, headers, sandbox["id"])).status_code == 201
        refused = await _mint(client, headers, sandbox["id"])
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= WINDOW
        assert refused.json()["type"].endswith("session-rate-limited")
        # Another person, and the same name in another team, have their own budgets.
        assert (await _mint(client, headers, sandbox["id"], "bob")).status_code == 201
        other = await factories.team_with_key(client, "other")
        other_sandbox = await factories.sandbox(client, other)
        assert (await _mint(client, other, other_sandbox["id"])).status_code == 201
        listed = await client.get(f"/v1/sandboxes/{sandbox['id']}/sessions", headers=headers)
        assert len(listed.json()["items"]) == LIMIT + 1

    async def test_window_slides(
        self, client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        for _ in range(LIMIT):
            assert (await _mint(client, headers, sandbox["id"])).status_code == 201
        assert (await _mint(client, headers, sandbox["id"])).status_code == 429
        # Age the oldest mint out of the window (instead of waiting a minute).
        async with runtime.sessions() as session, session.begin():
            oldest = await session.scalar(select(func.min(BrowserSession.id)))
            await session.execute(
                update(BrowserSession)
                .where(BrowserSession.id == oldest)
                .values(minted_at=BrowserSession.minted_at - timedelta(seconds=WINDOW))
            )
        assert (await _mint(client, headers, sandbox["id"])).status_code == 201

    async def test_failed_mints_give_their_slot_back(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client, max_concurrent=1)
        sandbox = await factories.sandbox(client, headers)
        await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
        await factories.sandbox(client, headers)
        for _ in range(LIMIT + 2):
            # Refused by admission (the team is full), not by the rate limit.
            refused = await _mint(client, headers, sandbox["id"])
            assert refused.status_code == 429
            assert not refused.json()["type"].endswith("session-rate-limited")

    async def test_limit_holds_across_replicas_under_concurrency(
        self,
        client: httpx.AsyncClient,
        replica: httpx.AsyncClient,
        sim: httpx.AsyncClient,
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        attempts = [
            _mint(client if i % 2 else replica, headers, sandbox["id"]) for i in range(LIMIT * 4)
        ]
        statuses = sorted(r.status_code for r in await asyncio.gather(*attempts))
        assert statuses == [201] * LIMIT + [429] * (LIMIT * 3)
