"""Key lifecycle as operations sees it: revocation through a replica bites on its very next
request, and on every other replica once its key cache entry lapses (at most
`app.identity.cache.TTL_SECONDS`, which must stay within the 5 s the design allows); expiry
likewise; last_used_at moves; one key can be read back by id.

The cache's clock is moved forward instead of sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.db import transaction
from app.identity import cache
from app.identity.cache import KeyCache
from app.main import create_app
from app.models import ApiKey
from app.runtime import Runtime
from tests.fixtures import factories

ADMIN = factories.ADMIN


async def issue(client: httpx.AsyncClient, team: str, **body: Any) -> dict[str, Any]:
    response = await client.post(
        f"/v1/admin/teams/{team}/keys",
        json={"name": "backend", "scopes": ["sandboxes:read"], **body},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


def bearer(issued: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {issued['key']}"}


@pytest.fixture
def advance_cache_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    offset = [0.0]
    real = cache.time.monotonic
    monkeypatch.setattr(cache.time, "monotonic", lambda: real() + offset[0])

    def advance(seconds: float) -> None:
        offset[0] += seconds

    return advance


@pytest.fixture
async def other_replica(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A second replica: same database, its own key cache."""
    app = create_app(runtime=replace(runtime, keys=KeyCache(), browser_token_keys=None))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://replica-b"
    ) as http:
        yield http


def test_the_key_cache_lives_within_the_revocation_bound() -> None:
    assert 0 < cache.TTL_SECONDS <= 5


class TestRevocation:
    async def test_a_revoked_key_is_refused_on_the_next_request(
        self, client: httpx.AsyncClient
    ) -> None:
        await factories.team(client, "team-a")
        issued = await issue(client, "team-a")
        assert (await client.get("/v1/sandboxes", headers=bearer(issued))).status_code == 200
        revoked = await client.delete(f"/v1/admin/keys/{issued['id']}", headers=ADMIN)
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        refused = await client.get("/v1/sandboxes", headers=bearer(issued))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"

    async def test_a_revoked_key_is_refused_by_other_replicas_once_their_cache_lapses(
        self,
        client: httpx.AsyncClient,
        other_replica: httpx.AsyncClient,
        advance_cache_clock: Callable[[float], None],
    ) -> None:
        await factories.team(client, "team-a")
        issued = await issue(client, "team-a")
        assert (await other_replica.get("/v1/sandboxes", headers=bearer(issued))).status_code == 200
        revoked = await client.delete(f"/v1/admin/keys/{issued['id']}", headers=ADMIN)
        assert revoked.status_code == 200
        assert (await client.get("/v1/sandboxes", headers=bearer(issued))).status_code == 401
        advance_cache_clock(cache.TTL_SECONDS + 0.01)
        refused = await other_replica.get("/v1/sandboxes", headers=bearer(issued))
        assert refused.status_code == 401

    async def test_a_key_past_its_expiry_is_refused(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        advance_cache_clock: Callable[[float], None],
    ) -> None:
        await factories.team(client, "team-a")
        issued = await issue(
            client, "team-a", expires_at=(datetime.now(UTC) + timedelta(days=1)).isoformat()
        )
        assert (await client.get("/v1/sandboxes", headers=bearer(issued))).status_code == 200
        async with transaction(runtime.sessions) as session:
            await session.execute(
                update(ApiKey)
                .where(ApiKey.id == issued["id"])
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        # Changed in the database behind the API's back: seen once the cache entry lapses.
        advance_cache_clock(cache.TTL_SECONDS + 0.01)
        assert (await client.get("/v1/sandboxes", headers=bearer(issued))).status_code == 401

    async def test_an_expiry_in_the_past_cannot_be_issued(self, client: httpx.AsyncClient) -> None:
        await factories.team(client, "team-a")
        response = await client.post(
            "/v1/admin/teams/team-a/keys",
            json={
                "name": "late",
                "scopes": ["sandboxes:read"],
                "expires_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            },
            headers=ADMIN,
        )
        assert response.status_code == 422

    async def test_rotation_without_overlap_retires_the_old_key_at_once(
        self, client: httpx.AsyncClient
    ) -> None:
        await factories.team(client, "team-a")
        old = await issue(client, "team-a")
        rotated = await client.post(
            f"/v1/admin/keys/{old['id']}/rotate", json={"overlap_seconds": 0}, headers=ADMIN
        )
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()
        assert new["rotated_from"] == old["id"]
        assert new["scopes"] == old["scopes"]
        assert (await client.get("/v1/sandboxes", headers=bearer(old))).status_code == 401
        assert (await client.get("/v1/sandboxes", headers=bearer(new))).status_code == 200


class TestKeyRecord:
    async def test_last_used_at_is_set_by_use(self, client: httpx.AsyncClient) -> None:
        await factories.team(client, "team-a")
        issued = await issue(client, "team-a", owner="alice@corp")
        before = (await client.get(f"/v1/admin/keys/{issued['id']}", headers=ADMIN)).json()
        assert before["last_used_at"] is None
        assert before["owner"] == "alice@corp"
        started = datetime.now(UTC) - timedelta(seconds=1)
        assert (await client.get("/v1/sandboxes", headers=bearer(issued))).status_code == 200
        after = (await client.get(f"/v1/admin/keys/{issued['id']}", headers=ADMIN)).json()
        assert after["last_used_at"] is not None
        assert datetime.fromisoformat(after["last_used_at"]) >= started

    async def test_a_key_is_read_back_without_its_secret(self, client: httpx.AsyncClient) -> None:
        await factories.team(client, "team-a")
        issued = await issue(client, "team-a")
        response = await client.get(f"/v1/admin/keys/{issued['id']}", headers=ADMIN)
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == issued["id"] and body["team_id"] == "team-a"
        assert "key" not in body
        assert issued["key"].split("_", 2)[2] not in response.text

    async def test_unknown_key_is_404_and_team_keys_are_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client, "team-a")
        assert (await client.get("/v1/admin/keys/nosuchkey", headers=ADMIN)).status_code == 404
        assert (await client.get("/v1/admin/keys/nosuchkey", headers=headers)).status_code == 403
        assert (await client.get("/v1/admin/keys/nosuchkey")).status_code == 401
