"""The team `unassigned` holds adopted VMs only: no key can be issued for it (DESIGN §15,
issue 14 finding 8)."""

from __future__ import annotations

import httpx
from sqlalchemy import insert

from app.identity import keys
from app.identity import service as identity_service
from app.models import ApiKey
from app.reconcile import unmanaged
from app.runtime import Runtime
from tests.fixtures import factories

ADMIN = factories.ADMIN


class TestNoKeysForUnassigned:
    async def test_issuing_a_key_for_unassigned_is_409_and_issues_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            "/v1/admin/teams/unassigned/keys",
            json={"name": "sneaky", "scopes": ["sandboxes:read", "sandboxes:write"]},
            headers=ADMIN,
        )
        assert response.status_code == 409, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["type"].endswith("/reserved-team")
        assert "adopted" in problem["detail"]
        assert (await client.get("/v1/admin/teams/unassigned/keys", headers=ADMIN)).json() == []
        audit = await client.get("/v1/admin/audit", params={"action": "key.create"}, headers=ADMIN)
        assert audit.json()["items"] == []

    async def test_a_key_made_for_it_before_cannot_be_rotated(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        new = keys.generate()
        async with runtime.engine.begin() as conn:
            await conn.execute(
                insert(ApiKey).values(
                    id=new.key_id,
                    team_id="unassigned",
                    name="old",
                    secret_sha256=new.digest,
                    scopes=["sandboxes:read"],
                    is_admin=False,
                )
            )
        response = await client.post(f"/v1/admin/keys/{new.key_id}/rotate", json={}, headers=ADMIN)
        assert response.status_code == 409, response.text
        listed = (await client.get("/v1/admin/teams/unassigned/keys", headers=ADMIN)).json()
        assert [k["id"] for k in listed] == [new.key_id]

    async def test_other_teams_still_get_keys(self, client: httpx.AsyncClient) -> None:
        await factories.team(client, "search-ui")
        await factories.key(client, "search-ui")

    def test_the_reconciler_adopts_into_the_same_team(self) -> None:
        assert unmanaged.UNASSIGNED_TEAM == identity_service.UNASSIGNED_TEAM
