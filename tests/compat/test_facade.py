"""The /csb facade over HTTP, without the SDK: envelopes, statuses, error shapes, refusal
headers, paging, scoping to the team. The SDK itself drives the facade in test_sdk.py."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures import factories


def _data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["success"] is True and body["errors"] == []
    return body["data"]


def _errors(response: httpx.Response, status: int) -> list[Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False and isinstance(body["errors"][0], str)
    return list(body["errors"])


async def _create(client: httpx.AsyncClient, headers: dict[str, str], **fork: Any) -> str:
    forked = _data(await client.post("/csb/sandbox/pcz35m/fork", json=fork, headers=headers), 201)
    assert forked["start_response"] is None
    started = _data(await client.post(f"/csb/vm/{forked['id']}/start", json={}, headers=headers))
    assert started["bootup_type"] == "FORK" and started["pitcher_token"]
    return str(forked["id"])


async def test_fork_then_start_is_one_native_sandbox(client: httpx.AsyncClient) -> None:
    headers = await factories.team_with_key(client, "search-ui")
    forked = _data(
        await client.post(
            "/csb/sandbox/pcz35m/fork",
            json={"title": "acc", "privacy": 2, "tags": ["sdk"], "path": "/SDK"},
            headers=headers,
        ),
        201,
    )
    started = _data(
        await client.post(
            f"/csb/vm/{forked['id']}/start",
            json={"tier": "Small", "hibernation_timeout_seconds": 900},
            headers=headers,
        )
    )
    assert started["id"] == forked["id"] and started["bootup_type"] == "FORK"

    native = (await client.get("/v1/sandboxes", headers=headers)).json()["items"]
    assert [(s["upstream_id"], s["state"], s["tier"]) for s in native] == [
        (forked["id"], "running", "Small")
    ]
    assert native[0]["hibernation_timeout_seconds"] == 900 and native[0]["tags"] == ["sdk"]
    events = (await client.get(f"/v1/sandboxes/{native[0]['id']}/events", headers=headers)).json()
    assert [(e["from_state"], e["to_state"]) for e in events] == [
        (None, "starting"),
        ("starting", "shutdown"),
        ("shutdown", "starting"),
        ("starting", "running"),
    ]


async def test_fork_with_start_options_starts_through_admission(
    client: httpx.AsyncClient,
) -> None:
    headers = await factories.team_with_key(client, "search-ui", max_concurrent=1)
    forked = _data(
        await client.post(
            "/csb/sandbox/pcz35m/fork", json={"start_options": {"tier": "Pico"}}, headers=headers
        ),
        201,
    )
    assert forked["start_response"]["bootup_type"] == "FORK"
    refused = await client.post(
        "/csb/sandbox/pcz35m/fork", json={"start_options": {}}, headers=headers
    )
    errors = _errors(refused, 429)
    assert "max_concurrent" in errors[0]
    assert errors[1] == {"limit": "max_concurrent", "scope": "team", "current": 1, "maximum": 1}


async def test_refusal_headers_leave_the_message_to_errors(client: httpx.AsyncClient) -> None:
    """The org has headroom when a team limit refuses, so `x-csb-vms-remaining` is positive
    and the SDK builds its message from errors[0], which names Corral's limit."""
    headers = await factories.team_with_key(client, "search-ui", max_concurrent=1)
    await _create(client, headers)
    forked = _data(await client.post("/csb/sandbox/pcz35m/fork", json={}, headers=headers), 201)
    refused = await client.post(f"/csb/vm/{forked['id']}/start", json={}, headers=headers)
    errors = _errors(refused, 429)
    assert errors[0].startswith("Team search-ui already runs 1 sandboxes.")
    assert "Corral limit max_concurrent (team): 1 in use, maximum 1." in errors[0]
    assert refused.headers["x-csb-vms-used"] == "1"
    assert refused.headers["x-csb-vms-remaining"] == "249"
    assert refused.headers["retry-after"] == "5"


async def test_org_plan_refusal_reports_no_remaining_vms(client: httpx.AsyncClient) -> None:
    headers = await factories.team_with_key(client, "search-ui")
    plan = await client.put(
        "/v1/admin/plan", json={"plan": "enterprise", "limit": 1}, headers=factories.ADMIN
    )
    assert plan.status_code == 200, plan.text
    await _create(client, headers)
    forked = _data(await client.post("/csb/sandbox/pcz35m/fork", json={}, headers=headers), 201)
    refused = await client.post(f"/csb/vm/{forked['id']}/start", json={}, headers=headers)
    errors = _errors(refused, 429)
    assert "org_plan" in errors[0]
    assert (refused.headers["x-csb-vms-used"], refused.headers["x-csb-vms-remaining"]) == (
        "1",
        "0",
    )


async def test_tier_and_budget_refusals_use_the_upstream_shape(
    client: httpx.AsyncClient,
) -> None:
    headers = await factories.team_with_key(client, "search-ui", max_tier="Nano")
    forked = _data(await client.post("/csb/sandbox/pcz35m/fork", json={}, headers=headers), 201)
    errors = _errors(
        await client.post(f"/csb/vm/{forked['id']}/start", json={"tier": "Large"}, headers=headers),
        403,
    )
    assert "max_tier" in errors[0]
    budget = await client.patch(
        "/v1/admin/teams/search-ui",
        json={"monthly_budget_credits": "0"},
        headers=factories.ADMIN,
    )
    assert budget.status_code == 200, budget.text
    errors = _errors(
        await client.post(f"/csb/vm/{forked['id']}/start", json={}, headers=headers), 402
    )
    assert "monthly_budget" in errors[0]


async def test_stopping_a_stopped_vm_answers_success(client: httpx.AsyncClient) -> None:
    headers = await factories.team_with_key(client, "search-ui")
    vm = await _create(client, headers)
    assert _data(await client.post(f"/csb/vm/{vm}/hibernate", headers=headers)) == {}
    # Upstream would say 404 here; the facade keeps the SDK's restart working.
    assert _data(await client.post(f"/csb/vm/{vm}/hibernate", headers=headers)) == {}
    assert _data(await client.post(f"/csb/vm/{vm}/shutdown", headers=headers)) == {}
    native = (await client.get("/v1/sandboxes", headers=headers)).json()["items"]
    assert native[0]["state"] == "hibernated"
    restarted = _data(await client.post(f"/csb/vm/{vm}/start", json={}, headers=headers))
    assert restarted["bootup_type"] == "RESUME"
    assert _data(await client.delete(f"/csb/vm/{vm}", headers=headers)) == {}
    _errors(await client.post(f"/csb/vm/{vm}/hibernate", headers=headers), 404)
    _errors(await client.get(f"/csb/sandbox/{vm}", headers=headers), 404)


async def test_list_pages_clamp_to_fifty_and_filter(client: httpx.AsyncClient) -> None:
    headers = await factories.team_with_key(client, "search-ui")
    other = await factories.team_with_key(client, "team-b")
    for n in range(53):
        tags = ["even"] if n % 2 == 0 else []
        await factories.sandbox(client, headers, start=False, tags=tags)
    await factories.sandbox(client, other, start=False)
    first = _data(await client.get("/csb/sandbox?page=1&page_size=200", headers=headers))
    assert len(first["sandboxes"]) == 50
    assert first["pagination"] == {"total_records": 53, "current_page": 1, "next_page": 2}
    second = _data(await client.get("/csb/sandbox?page=2&page_size=200", headers=headers))
    assert len(second["sandboxes"]) == 3 and second["pagination"]["next_page"] is None
    ids = {s["id"] for s in first["sandboxes"] + second["sandboxes"]}
    assert len(ids) == 53
    even = _data(await client.get("/csb/sandbox?tags=even&page_size=50", headers=headers))
    assert even["pagination"]["total_records"] == 27
    running = _data(await client.get("/csb/sandbox?status=running", headers=headers))
    assert running["pagination"]["total_records"] == 0
    # A page past the end has no rows to carry the count: it is counted on its own.
    past = _data(await client.get("/csb/sandbox?page=3&page_size=50", headers=headers))
    assert past["sandboxes"] == []
    assert past["pagination"] == {"total_records": 53, "current_page": 3, "next_page": None}
    sample = first["sandboxes"][0]
    assert set(sample) == {
        "id",
        "title",
        "description",
        "privacy",
        "is_frozen",
        "tags",
        "settings",
        "created_at",
        "updated_at",
    }


async def test_running_vms_and_meta_info_are_the_callers(client: httpx.AsyncClient) -> None:
    headers = await factories.team_with_key(client, "search-ui", max_concurrent=3)
    other = await factories.team_with_key(client, "team-b")
    mine = await _create(client, headers)
    await _create(client, other)
    running = _data(await client.get("/csb/vm/running", headers=headers))
    assert running["concurrent_vm_count"] == 1 and running["concurrent_vm_limit"] == 3
    (vm,) = running["vms"]
    assert vm["id"] == mine and vm["credit_basis"] == "10"
    assert vm["specs"] == {"cpu": 2, "memory": 4, "storage": 20}
    assert isinstance(vm["session_started_at"], int)

    meta = await client.get("/csb/meta/info", headers=headers)
    assert meta.status_code == 200
    body = meta.json()
    assert "data" not in body and body["auth"]["team"] == "search-ui"
    assert body["rate_limits"]["concurrent_vms"] == {"limit": 3, "remaining": 2}
    anonymous = (await client.get("/csb/meta/info")).json()
    assert set(anonymous) == {"api"}


async def test_running_vms_state_the_orgs_limit_for_a_team_without_a_cap(
    client: httpx.AsyncClient,
) -> None:
    headers = await factories.team_with_key(client, "uncapped")
    await _create(client, headers)
    running = _data(await client.get("/csb/vm/running", headers=headers))
    assert running["concurrent_vm_limit"] == 250  # the seeded plan's
    plan = {"plan": "enterprise", "limit": 7}
    assert (await client.put("/v1/admin/plan", json=plan, headers=factories.ADMIN)).is_success
    running = _data(await client.get("/csb/vm/running", headers=headers))
    assert running["concurrent_vm_count"] == 1 and running["concurrent_vm_limit"] == 7


async def test_running_vms_are_the_owners_newest_first_and_none_still_state_the_limit(
    client: httpx.AsyncClient,
) -> None:
    headers = await factories.team_with_key(client, "listing", max_concurrent=5)
    alice = {**headers, "X-Corral-Owner": "alice"}
    bob = {**headers, "X-Corral-Owner": "bob"}
    empty = _data(await client.get("/csb/vm/running", headers=alice))
    assert empty == {"concurrent_vm_count": 0, "concurrent_vm_limit": 5, "vms": []}
    first, second = await _create(client, alice), await _create(client, alice)
    theirs = await _create(client, bob)
    await client.post(f"/csb/vm/{second}/hibernate", headers=alice)
    _data(await client.post(f"/csb/vm/{second}/start", json={}, headers=alice))  # newest now
    running = _data(await client.get("/csb/vm/running", headers=alice))
    assert [vm["id"] for vm in running["vms"]] == [second, first]
    assert running["concurrent_vm_count"] == 2
    team = _data(await client.get("/csb/vm/running", headers=headers))
    assert [vm["id"] for vm in team["vms"]] == [second, theirs, first]
    await client.post(f"/csb/vm/{theirs}/hibernate", headers=bob)
    assert _data(await client.get("/csb/vm/running", headers=bob))["vms"] == []


async def test_owner_header_scopes_what_the_key_sees(client: httpx.AsyncClient) -> None:
    headers = await factories.team_with_key(client, "search-ui")
    alice = {**headers, "X-Corral-Owner": "alice"}
    bob = {**headers, "X-Corral-Owner": "bob"}
    vm = await _create(client, alice)
    native = (await client.get("/v1/sandboxes", headers=headers)).json()["items"]
    assert native[0]["owner"] == "alice"
    _errors(await client.get(f"/csb/sandbox/{vm}", headers=bob), 404)
    assert _data(await client.get("/csb/sandbox", headers=bob))["sandboxes"] == []
    bound = await factories.key(client, "search-ui", owner="carol")
    _errors(await client.get("/csb/sandbox", headers={**bound, "X-Corral-Owner": "alice"}), 403)


async def test_errors_are_never_problem_json(client: httpx.AsyncClient) -> None:
    headers = await factories.team_with_key(client, "search-ui")
    _errors(await client.get("/csb/sandbox"), 401)
    _errors(await client.get("/csb/sandbox", headers={"Authorization": "Bearer nope"}), 401)
    _errors(await client.get("/csb/no/such/route", headers=headers), 404)
    _errors(await client.put("/csb/vm/abc/specs", json={"tier": "Huge"}, headers=headers), 422)
    _errors(await client.post("/csb/sandbox/pcz35m/fork", json={"x": 1}, headers=headers), 422)
    admin = await client.get("/csb/sandbox", headers=factories.ADMIN)
    assert "team key" in _errors(admin, 403)[0]
    reader = await factories.key(client, "search-ui", scopes=["sandboxes:read"])
    _errors(await client.post("/csb/sandbox/pcz35m/fork", json={}, headers=reader), 403)


async def test_sessions_and_preview_tokens_for_own_sandboxes(
    client: httpx.AsyncClient,
) -> None:
    headers = await factories.team_with_key(client, "search-ui")
    vm = await _create(client, headers)
    await client.post(f"/csb/vm/{vm}/hibernate", headers=headers)
    session = _data(
        await client.post(
            f"/csb/vm/{vm}/sessions",
            json={"session_id": "alice", "permission": "read"},
            headers=headers,
        )
    )
    assert session["username"] == "alice" and session["pitcher_token"]
    assert session["permissions"] == {"read": True, "write": False}
    native = (await client.get("/v1/sandboxes", headers=headers)).json()["items"]
    assert native[0]["state"] == "running"  # the session woke it, through admission

    created = _data(await client.post(f"/csb/sandbox/{vm}/tokens", json={}, headers=headers), 201)
    token_id = created["token"]["token_id"]
    assert created["sandbox_id"] == vm and created["token"]["token"]
    listed = _data(await client.get(f"/csb/sandbox/{vm}/tokens", headers=headers), 201)
    assert [t["token_id"] for t in listed["tokens"]] == [token_id]
    assert "token" not in listed["tokens"][0]
    updated = _data(
        await client.patch(
            f"/csb/sandbox/{vm}/tokens/{token_id}",
            json={"expires_at": "2030-01-01T00:00:00Z"},
            headers=headers,
        ),
        201,
    )
    assert updated["token"]["expires_at"].startswith("2030-01-01")
    assert _data(await client.delete(f"/csb/sandbox/{vm}/tokens", headers=headers)) == {}

    audit = await client.get("/v1/admin/audit?team=search-ui", headers=factories.ADMIN)
    if audit.status_code == 200:
        assert created["token"]["token"] not in audit.text


async def test_upstream_failure_is_a_bad_gateway_in_the_upstream_shape(
    client: httpx.AsyncClient, sim: httpx.AsyncClient
) -> None:
    headers = await factories.team_with_key(client, "search-ui")
    forked = _data(await client.post("/csb/sandbox/pcz35m/fork", json={}, headers=headers), 201)
    config = await sim.put(
        "/_simulator/config", json={"faults": {"start": {"error_rate": 1.0, "status": 500}}}
    )
    assert config.status_code == 200, config.text
    failed = await client.post(f"/csb/vm/{forked['id']}/start", json={}, headers=headers)
    assert "start" in _errors(failed, 502)[0]
    assert "retry-after" in failed.headers
    # A 500 may come after the start happened: the slot stays taken (`unknown`) until the
    # reconciler knows, never stuck `starting` and never released on a guess.
    native = (await client.get("/v1/sandboxes", headers=headers)).json()["items"]
    assert native[0]["state"] == "unknown"


async def test_an_oversized_body_is_refused_in_the_upstream_shape(
    client: httpx.AsyncClient,
) -> None:
    headers = await factories.team_with_key(client)
    response = await client.post(
        "/csb/sandbox/pcz35m/fork",
        content=b'{"title": "' + b"x" * 70_000 + b'"}',
        headers={**headers, "content-type": "application/json"},
    )
    assert "exceeds" in _errors(response, 413)[0]
    assert (await client.get("/v1/sandboxes", headers=headers)).json()["items"] == []
