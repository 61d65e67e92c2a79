"""The quota check refuses a start it cannot see the way the start itself does."""

from __future__ import annotations

import httpx

from tests.fixtures import factories


class TestCheckStart:
    async def test_another_teams_sandbox_is_not_found_like_the_start(
        self, client: httpx.AsyncClient
    ) -> None:
        mine = await factories.team_with_key(client, "team-a")
        theirs = await factories.team_with_key(client, "team-b")
        other = (await factories.sandbox(client, theirs))["id"]
        check = await client.post(
            "/v1/quota/check", json={"action": "start", "sandbox_id": other}, headers=mine
        )
        start = await client.post(f"/v1/sandboxes/{other}/start", headers=mine)
        assert check.status_code == start.status_code == 404
        assert check.json()["type"] == start.json()["type"]
        assert check.json()["type"].endswith("/sandbox-not-found")

    async def test_a_team_key_naming_another_team_is_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        mine = await factories.team_with_key(client, "team-a")
        refused = await client.get("/v1/quota", params={"team": "team-b"}, headers=mine)
        assert refused.status_code == 403
        body = refused.json()
        assert body["type"].endswith("/wrong-team")
        assert body["detail"] == "A team key sees its own team's quota only."
