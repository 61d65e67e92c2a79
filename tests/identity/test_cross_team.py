"""A team key never reaches another team's resources, on any route with a path parameter.

The table below names every such route; a new route that is missing from it fails
`test_every_parameterised_route_is_covered`, so nobody can add one without deciding its check."""

from __future__ import annotations

from typing import Any

import httpx

from app.main import create_app
from tests.fixtures import factories

# (method, path template) → (json body or None, expected status for another team's key)
CROSS_TEAM: dict[tuple[str, str], tuple[dict[str, Any] | None, int]] = {
    ("GET", "/v1/sandboxes/{sandbox_id}"): (None, 404),
    ("PATCH", "/v1/sandboxes/{sandbox_id}"): ({"title": "x"}, 404),
    ("DELETE", "/v1/sandboxes/{sandbox_id}"): (None, 404),
    ("POST", "/v1/sandboxes/{sandbox_id}/start"): (None, 404),
    ("POST", "/v1/sandboxes/{sandbox_id}/hibernate"): (None, 404),
    ("POST", "/v1/sandboxes/{sandbox_id}/shutdown"): (None, 404),
    ("POST", "/v1/sandboxes/{sandbox_id}/restart"): (None, 404),
    ("POST", "/v1/sandboxes/{sandbox_id}/fork"): ({}, 404),
    ("GET", "/v1/sandboxes/{sandbox_id}/events"): (None, 404),
    ("POST", "/v1/sandboxes/{sandbox_id}/sessions"): ({"user": "x", "permission": "read"}, 404),
    ("GET", "/v1/sandboxes/{sandbox_id}/sessions"): (None, 404),
    ("POST", "/v1/sandboxes/{sandbox_id}/browser-tokens"): ({"user": "x"}, 404),
    ("GET", "/v1/sandboxes/{sandbox_id}/cost"): (None, 404),
    # The SDK facade names sandboxes by their upstream id, and answers in the upstream's shape.
    # A fork source outside the rule is refused the same whether or not it exists (403).
    ("POST", "/csb/sandbox/{upstream_id}/fork"): ({}, 403),
    ("GET", "/csb/sandbox/{upstream_id}"): (None, 404),
    ("POST", "/csb/vm/{upstream_id}/start"): ({}, 404),
    ("POST", "/csb/vm/{upstream_id}/hibernate"): (None, 404),
    ("POST", "/csb/vm/{upstream_id}/shutdown"): (None, 404),
    ("DELETE", "/csb/vm/{upstream_id}"): (None, 404),
    ("PUT", "/csb/vm/{upstream_id}/specs"): ({"tier": "Small"}, 404),
    ("POST", "/csb/vm/{upstream_id}/update_specs"): ({"tier": "Small"}, 404),
    ("PUT", "/csb/vm/{upstream_id}/hibernation_timeout"): ({"hibernation_timeout_seconds": 9}, 404),
    ("POST", "/csb/vm/{upstream_id}/sessions"): ({"session_id": "x", "permission": "read"}, 404),
    ("POST", "/csb/sandbox/{upstream_id}/tokens"): ({}, 404),
    ("GET", "/csb/sandbox/{upstream_id}/tokens"): (None, 404),
    ("PATCH", "/csb/sandbox/{upstream_id}/tokens/{token_id}"): ({"expires_at": None}, 404),
    ("DELETE", "/csb/sandbox/{upstream_id}/tokens"): (None, 404),
    # Admin routes refuse team keys outright, whatever the team.
    ("GET", "/v1/admin/teams/{team}"): (None, 403),
    ("PATCH", "/v1/admin/teams/{team}"): ({"name": "x"}, 403),
    ("DELETE", "/v1/admin/teams/{team}"): (None, 403),
    ("POST", "/v1/admin/teams/{team}/keys"): ({"name": "x", "scopes": ["sandboxes:read"]}, 403),
    ("GET", "/v1/admin/teams/{team}/keys"): (None, 403),
    ("POST", "/v1/admin/keys/{key_id}/rotate"): ({}, 403),
    ("GET", "/v1/admin/keys/{key_id}"): (None, 403),
    ("DELETE", "/v1/admin/keys/{key_id}"): (None, 403),
    ("PUT", "/v1/admin/fork-templates/{upstream_id}"): (None, 403),
    ("DELETE", "/v1/admin/fork-templates/{upstream_id}"): (None, 403),
    ("GET", "/v1/admin/teams/{team}/fork-templates"): (None, 403),
    ("PUT", "/v1/admin/teams/{team}/fork-templates/{upstream_id}"): (None, 403),
    ("DELETE", "/v1/admin/teams/{team}/fork-templates/{upstream_id}"): (None, 403),
    ("GET", "/v1/admin/webhooks/{webhook_id}"): (None, 403),
    ("PATCH", "/v1/admin/webhooks/{webhook_id}"): ({"description": "x"}, 403),
    ("DELETE", "/v1/admin/webhooks/{webhook_id}"): (None, 403),
    ("POST", "/v1/admin/webhooks/{webhook_id}/rotate-secret"): (None, 403),
    ("GET", "/v1/admin/webhooks/{webhook_id}/deliveries"): (None, 403),
    ("POST", "/v1/admin/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): (None, 403),
}


def parameterised_routes() -> set[tuple[str, str]]:
    """Every (method, path) with a path parameter, from the app's own OpenAPI description
    (which lists every API route; the dashboard's HTML pages are outside it, and
    tests/dashboard checks their scoping)."""
    paths = create_app().openapi()["paths"]
    return {
        (method.upper(), path)
        for path, operations in paths.items()
        if "{" in path
        for method in operations
    }


def test_every_parameterised_route_is_covered() -> None:
    assert parameterised_routes() == set(CROSS_TEAM)


async def test_other_teams_resources_are_invisible(
    client: httpx.AsyncClient, sim: httpx.AsyncClient
) -> None:
    owner_headers = await factories.team_with_key(client, "team-a")
    other_headers = await factories.team_with_key(client, "team-b")
    sandbox = await factories.sandbox(client, owner_headers)
    keys = (await client.get("/v1/admin/teams/team-a/keys", headers=factories.ADMIN)).json()
    values = {
        "sandbox_id": sandbox["id"],
        "upstream_id": sandbox["upstream_id"],
        "token_id": "prv_x",
        "team": "team-a",
        "key_id": keys[0]["id"],
        "webhook_id": "whep_x",
        "delivery_id": "1",
    }
    for (method, template), (body, expected) in CROSS_TEAM.items():
        path = template.format(**values)
        response = await client.request(method, path, json=body, headers=other_headers)
        assert response.status_code == expected, (method, template, response.text)
        if template.startswith("/csb/") and expected == 404:
            assert response.json() == {"success": False, "errors": ["Sandbox not found"]}
            continue
        if template.startswith("/csb/"):
            assert response.json()["errors"][0].startswith(f"{sandbox['upstream_id']!r} is not")
            continue
        assert response.headers["content-type"].startswith("application/problem+json")
        if expected == 404:
            assert sandbox["id"] not in response.text or "does not exist" in response.text
    # And nothing changed for the owner.
    still = await client.get(f"/v1/sandboxes/{sandbox['id']}", headers=owner_headers)
    assert still.status_code == 200 and still.json()["state"] == "running"
    assert still.json()["title"] is None


async def test_other_teams_sandboxes_are_not_listed(
    client: httpx.AsyncClient, sim: httpx.AsyncClient
) -> None:
    a = await factories.team_with_key(client, "team-a")
    b = await factories.team_with_key(client, "team-b")
    await factories.sandbox(client, a)
    listed = (await client.get("/v1/sandboxes", headers=b)).json()
    assert listed["items"] == []
    # ?team= is an admin filter; a team key cannot widen its view with it.
    widened = (await client.get("/v1/sandboxes", params={"team": "team-a"}, headers=b)).json()
    assert widened["items"] == []


async def test_owner_bound_key_sees_only_its_owner(
    client: httpx.AsyncClient, sim: httpx.AsyncClient
) -> None:
    team = await factories.team_with_key(client, "team-a")
    alice = await factories.key(client, "team-a", owner="alice")
    bobs = await factories.sandbox(client, team, owner="bob")
    assert (await client.get(f"/v1/sandboxes/{bobs['id']}", headers=alice)).status_code == 404
    refused = await client.post("/v1/sandboxes", json={"owner": "bob"}, headers=alice)
    assert refused.status_code == 403
    mine = await factories.sandbox(client, alice)
    assert mine["owner"] == "alice"
    assert [
        s["id"] for s in (await client.get("/v1/sandboxes", headers=alice)).json()["items"]
    ] == [mine["id"]]
