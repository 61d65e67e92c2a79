"""`POST /v1/quota/check` resolves its `sandbox_id` by the one visibility rule of every route
(`app.sandboxes.access`, DESIGN §15): another owner's sandbox is answered like a missing one."""

from __future__ import annotations

import httpx

from tests.fixtures import factories


async def check(
    client: httpx.AsyncClient, headers: dict[str, str], sandbox_id: str
) -> httpx.Response:
    return await client.post(
        "/v1/quota/check", json={"action": "start", "sandbox_id": sandbox_id}, headers=headers
    )


class TestStartCheck:
    async def test_an_owner_bound_key_gets_404_for_another_owners_sandbox(
        self, client: httpx.AsyncClient
    ) -> None:
        team_key = await factories.team_with_key(client, "team-a")
        alice = await factories.key(client, "team-a", owner="alice")
        bobs = await factories.sandbox(client, team_key, owner="bob", tier="Small", start=False)

        refused = await check(client, alice, bobs["id"])
        assert refused.status_code == 404, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "bob" not in refused.text and "Small" not in refused.text
        # Exactly what every other route answers for that sandbox.
        read = await client.get(f"/v1/sandboxes/{bobs['id']}", headers=alice)
        assert read.status_code == 404
        assert {k: v for k, v in refused.json().items() if k != "instance"} == {
            k: v for k, v in read.json().items() if k != "instance"
        }

    async def test_an_owner_bound_key_checks_its_own_sandbox(
        self, client: httpx.AsyncClient
    ) -> None:
        await factories.team(client, "team-a")
        alice = await factories.key(client, "team-a", owner="alice")
        own = await factories.sandbox(client, alice, tier="Small", start=False)
        allowed = await check(client, alice, own["id"])
        assert allowed.status_code == 200, allowed.text
        assert allowed.json() == {
            "allowed": True,
            "team": "team-a",
            "tier": "Small",
            "owner": "alice",
        }

    async def test_another_teams_sandbox_is_404_for_a_team_key_and_for_an_admin_naming_the_team(
        self, client: httpx.AsyncClient
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        b = await factories.team_with_key(client, "team-b")
        theirs = await factories.sandbox(client, a, start=False)
        assert (await check(client, b, theirs["id"])).status_code == 404
        admin_check = await client.post(
            "/v1/quota/check",
            json={"action": "start", "sandbox_id": theirs["id"], "team": "team-b"},
            headers=factories.ADMIN,
        )
        assert admin_check.status_code == 404
        admin_own = await client.post(
            "/v1/quota/check",
            json={"action": "start", "sandbox_id": theirs["id"], "team": "team-a"},
            headers=factories.ADMIN,
        )
        assert admin_own.status_code == 200, admin_own.text


class TestCreateCheck:
    async def test_an_owner_bound_key_naming_another_owner_is_refused_as_the_create_is(
        self, client: httpx.AsyncClient
    ) -> None:
        await factories.team(client, "team-a")
        alice = await factories.key(client, "team-a", owner="alice")
        body = {"action": "create", "owner": "bob"}
        checked = await client.post("/v1/quota/check", json=body, headers=alice)
        created = await client.post("/v1/sandboxes", json={"owner": "bob"}, headers=alice)
        assert checked.status_code == created.status_code == 403, checked.text
        assert checked.json()["type"] == created.json()["type"]
