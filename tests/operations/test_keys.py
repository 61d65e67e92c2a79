"""Key lifecycle as operations sees it: revocation and expiry bite on the very next request
(no key cache exists), last_used_at moves, and one key can be read back by id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from app.db import transaction
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

    async def test_a_key_past_its_expiry_is_refused(
        self, client: httpx.AsyncClient, runtime: Runtime
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
