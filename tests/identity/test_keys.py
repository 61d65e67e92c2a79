"""API keys: shape, hashing, scopes, revocation, and the admin routes that manage them."""

from __future__ import annotations

import hashlib

import httpx
from sqlalchemy import select

from app.db import transaction
from app.models import ApiKey
from tests.fixtures import factories


async def test_key_is_shown_once_and_stored_hashed(client: httpx.AsyncClient, runtime) -> None:
    await factories.team(client, "team-a")
    response = await client.post(
        "/v1/admin/teams/team-a/keys",
        json={"name": "ci", "scopes": ["sandboxes:read"]},
        headers=factories.ADMIN,
    )
    assert response.status_code == 201
    token = response.json()["key"]
    prefix, key_id, secret = token.split("_", 2)
    assert prefix == "crl" and key_id == response.json()["id"]
    async with transaction(runtime.sessions) as session:
        row = (await session.scalars(select(ApiKey).where(ApiKey.id == key_id))).one()
    assert row.secret_sha256 == hashlib.sha256(secret.encode()).digest()
    listed = (await client.get("/v1/admin/teams/team-a/keys", headers=factories.ADMIN)).json()
    assert listed[0]["id"] == key_id and "key" not in listed[0]
    assert secret not in str(listed)


async def test_missing_wrong_and_revoked_keys_are_refused(client: httpx.AsyncClient) -> None:
    headers = await factories.team_with_key(client, "team-a")
    assert (await client.get("/v1/sandboxes")).status_code == 401
    assert (
        await client.get("/v1/sandboxes", headers={"Authorization": "Bearer nope"})
    ).status_code == 401
    token = headers["Authorization"].split()[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert (
        await client.get("/v1/sandboxes", headers={"Authorization": f"Bearer {tampered}"})
    ).status_code == 401
    assert (await client.get("/v1/sandboxes", headers=headers)).status_code == 200
    key_id = token.split("_")[1]
    assert (
        await client.delete(f"/v1/admin/keys/{key_id}", headers=factories.ADMIN)
    ).status_code == 200
    refused = await client.get("/v1/sandboxes", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")


async def test_scopes_are_enforced(client: httpx.AsyncClient) -> None:
    await factories.team(client, "team-a")
    reader = await factories.key(client, "team-a", scopes=["sandboxes:read"])
    assert (await client.get("/v1/sandboxes", headers=reader)).status_code == 200
    refused = await client.post("/v1/sandboxes", json={}, headers=reader)
    assert refused.status_code == 403
    assert "sandboxes:write" in refused.json()["detail"]


async def test_admin_routes_refuse_team_keys_and_anonymous(client: httpx.AsyncClient) -> None:
    headers = await factories.team_with_key(client, "team-a")
    assert (await client.get("/v1/admin/teams", headers=headers)).status_code == 403
    assert (await client.get("/v1/admin/teams")).status_code == 401


async def test_team_keys_cannot_hold_admin_scope_or_unknown_scopes(
    client: httpx.AsyncClient,
) -> None:
    await factories.team(client, "team-a")
    for scopes in (["admin"], ["sandboxes:fly"]):
        response = await client.post(
            "/v1/admin/teams/team-a/keys",
            json={"name": "x", "scopes": scopes},
            headers=factories.ADMIN,
        )
        assert response.status_code == 422


async def test_team_ids_are_slugs_and_unique(client: httpx.AsyncClient) -> None:
    for bad in ("Search UI", "-lead", "a/b", "x" * 64):
        response = await client.post(
            "/v1/admin/teams", json={"id": bad, "name": "n"}, headers=factories.ADMIN
        )
        assert response.status_code == 422, bad
    await factories.team(client, "search-ui")
    again = await client.post(
        "/v1/admin/teams", json={"id": "search-ui", "name": "n"}, headers=factories.ADMIN
    )
    assert again.status_code == 409
    assert [
        t["id"] for t in (await client.get("/v1/admin/teams", headers=factories.ADMIN)).json()
    ] == ["search-ui", "unassigned"]


async def test_rotation_keeps_the_old_key_for_the_overlap(client: httpx.AsyncClient) -> None:
    headers = await factories.team_with_key(client, "team-a")
    key_id = headers["Authorization"].split("_")[1]
    rotated = await client.post(
        f"/v1/admin/keys/{key_id}/rotate", json={"overlap_seconds": 60}, headers=factories.ADMIN
    )
    assert rotated.status_code == 201
    new_headers = {"Authorization": f"Bearer {rotated.json()['key']}"}
    assert (await client.get("/v1/sandboxes", headers=new_headers)).status_code == 200
    assert (await client.get("/v1/sandboxes", headers=headers)).status_code == 200
    immediate = await client.post(
        f"/v1/admin/keys/{rotated.json()['id']}/rotate",
        json={"overlap_seconds": 0},
        headers=factories.ADMIN,
    )
    assert immediate.status_code == 201
    assert (await client.get("/v1/sandboxes", headers=new_headers)).status_code == 401


async def test_deleting_a_team_with_sandboxes_is_refused(client: httpx.AsyncClient, sim) -> None:
    headers = await factories.team_with_key(client, "team-a")
    sandbox = await factories.sandbox(client, headers)
    assert (
        await client.delete("/v1/admin/teams/team-a", headers=factories.ADMIN)
    ).status_code == 409
    await client.delete(f"/v1/sandboxes/{sandbox['id']}", headers=headers)
    assert (
        await client.delete("/v1/admin/teams/team-a", headers=factories.ADMIN)
    ).status_code == 204
    assert (await client.get("/v1/sandboxes", headers=headers)).status_code == 401
