"""Bad input gets a clear problem body, changes nothing, and never reaches the upstream."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures import factories


async def upstream_calls(sim: httpx.AsyncClient) -> dict[str, int]:
    response = await sim.get("/_simulator/requests")
    assert response.status_code == 200
    counts: dict[str, int] = response.json()
    return counts


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"].startswith("https://")


async def test_unknown_sandbox_is_404(client, sim):
    headers = await factories.team_with_key(client)
    assert_problem(await client.get("/v1/sandboxes/sbx_000000000000", headers=headers), 404)
    assert_problem(await client.post("/v1/sandboxes/sbx_000000000000/start", headers=headers), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/sandboxes/../admin/teams",
        "/v1/sandboxes/..%2F..%2Fvm%2Frunning/start",
        "/v1/sandboxes/%2e%2e/start",
        "/v1/sandboxes/sbx_abc%2F..%2Fx/hibernate",
        "/v1/sandboxes/pcz35m/start",
        "/v1/sandboxes/sbx_ABCDEFGHIJKL/shutdown",
    ],
)
async def test_ids_that_must_not_reach_an_upstream_url(client, sim, path):
    headers = await factories.team_with_key(client)
    before = await upstream_calls(sim)
    response = await client.post(path, headers=headers)
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await upstream_calls(sim) == before


@pytest.mark.parametrize(
    "body",
    [
        {"tier": "Huge"},
        {"tier": "nano"},
        {"hibernation_timeout_seconds": 0},
        {"hibernation_timeout_seconds": 86401},
        {"hibernation_timeout_seconds": "soon"},
        {"template": "../vm/running"},
        {"template": "%2e%2e"},
        {"template": "a/b"},
        {"colour": "blue"},
        {"tags": ["corral-op-forged"]},
        {"tags": ["has space"]},
        {"title": "x" * 256},
        {"privacy": 7},
    ],
)
async def test_bad_create_bodies_change_nothing(client, sim, body):
    headers = await factories.team_with_key(client)
    before = await upstream_calls(sim)
    response = await client.post("/v1/sandboxes", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await upstream_calls(sim) == before
    assert (await client.get("/v1/sandboxes", headers=headers)).json()["items"] == []


async def test_validation_problem_lists_the_fields(client):
    headers = await factories.team_with_key(client)
    response = await client.post(
        "/v1/sandboxes", json={"tier": "Huge", "extra": 1}, headers=headers
    )
    assert_problem(response, 422)
    locations = {tuple(e["loc"]) for e in response.json()["errors"]}
    assert ("body", "tier") in locations and ("body", "extra") in locations


async def test_oversized_body_is_413(client, sim):
    headers = await factories.team_with_key(client)
    before = await upstream_calls(sim)
    response = await client.post(
        "/v1/sandboxes",
        content=b'{"title": "' + b"x" * 70_000 + b'"}',
        headers={**headers, "content-type": "application/json"},
    )
    assert_problem(response, 413)
    assert await upstream_calls(sim) == before


async def test_malformed_json_is_422(client):
    headers = await factories.team_with_key(client)
    response = await client.post(
        "/v1/sandboxes",
        content=b"{not json",
        headers={**headers, "content-type": "application/json"},
    )
    assert_problem(response, 422)


async def test_bad_patch_values(client, sim):
    headers = await factories.team_with_key(client)
    sandbox = await factories.sandbox(client, headers)
    for body in ({"tier": "Giant"}, {"hibernation_timeout_seconds": -5}, {"state": "running"}):
        response = await client.patch(f"/v1/sandboxes/{sandbox['id']}", json=body, headers=headers)
        assert_problem(response, 422)
    unchanged = (await client.get(f"/v1/sandboxes/{sandbox['id']}", headers=headers)).json()
    assert unchanged["tier"] == sandbox["tier"]
    assert unchanged["hibernation_timeout_seconds"] == sandbox["hibernation_timeout_seconds"]


async def test_verbs_in_the_wrong_state_are_409(client, sim):
    headers = await factories.team_with_key(client)
    sandbox = await factories.sandbox(client, headers)
    sid = sandbox["id"]
    assert (await client.delete(f"/v1/sandboxes/{sid}", headers=headers)).status_code == 200
    before = await upstream_calls(sim)
    for verb in ("start", "restart"):
        assert_problem(await client.post(f"/v1/sandboxes/{sid}/{verb}", headers=headers), 409)
    assert_problem(await client.post(f"/v1/sandboxes/{sid}/fork", json={}, headers=headers), 409)
    assert_problem(
        await client.patch(f"/v1/sandboxes/{sid}", json={"tier": "Small"}, headers=headers), 409
    )
    for verb in ("hibernate", "shutdown"):
        assert_problem(await client.post(f"/v1/sandboxes/{sid}/{verb}", headers=headers), 409)
    assert await upstream_calls(sim) == before


async def test_bad_list_parameters(client):
    headers = await factories.team_with_key(client)
    for params in (
        {"limit": 0},
        {"limit": 10_000},
        {"state": "flying"},
        {"tier": "Huge"},
        {"cursor": "!!!"},
    ):
        response = await client.get("/v1/sandboxes", params=params, headers=headers)
        assert 400 <= response.status_code < 500, params
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_unknown_route_is_a_problem(client):
    assert_problem(await client.get("/v1/nothing-here"), 404)


async def test_an_unexpected_failure_is_a_problem_body_not_a_trace(runtime):
    """The database going away mid-request answers 500 problem+json, with no internals."""
    from app.main import create_app

    app = create_app(runtime=runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://corral") as http:
        headers = await factories.team_with_key(http)
        original = runtime.sessions

        def broken() -> None:
            raise RuntimeError("database went away: postgresql://secret@host")

        runtime.sessions = broken
        try:
            response = await http.get("/v1/sandboxes", headers=headers)
        finally:
            runtime.sessions = original
    assert_problem(response, 500)
    assert "secret" not in response.text and "RuntimeError" not in response.text
