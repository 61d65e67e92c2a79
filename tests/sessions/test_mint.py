"""Minting per-user sessions: the SDK's JSON, stable session ids, scopes, owner binding,
admitted wake-ups, and the record of who minted what."""

from __future__ import annotations

import re
from typing import Any

import httpx

from app import metrics
from app.sessions.schemas import SandboxSessionOut
from app.sessions.service import session_id_for
from tests.fixtures import factories

SDK_SESSION_KEYS = {
    "sandboxId",
    "sessionId",
    "isPint",
    "bootupType",
    "cluster",
    "pitcherURL",
    "pitcherToken",
    "userWorkspacePath",
    "workspacePath",
    "pitcherVersion",
    "latestPitcherVersion",
    "pitcherManagerVersion",
}


async def _mint(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    sandbox_id: str,
    user: str = "alice@corp",
    permission: str = "write",
) -> httpx.Response:
    return await client.post(
        f"/v1/sandboxes/{sandbox_id}/sessions",
        json={"user": user, "permission": permission},
        headers=headers,
    )


async def _vm(sim: httpx.AsyncClient, upstream_id: str) -> dict[str, Any]:
    response = await sim.get(f"/_simulator/vms/{upstream_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestMint:
    async def test_answers_exactly_the_sdk_sandbox_session(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        response = await _mint(client, headers, sandbox["id"])
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == SDK_SESSION_KEYS
        assert body["sandboxId"] == sandbox["upstream_id"]
        assert body["isPint"] is False
        assert body["bootupType"] == "RUNNING"
        assert body["sessionId"] == session_id_for("search-ui", "alice@corp")
        assert body["pitcherURL"].startswith("wss://")
        assert all(isinstance(body[k], str) and body[k] for k in SDK_SESSION_KEYS - {"isPint"})
        assert response.headers["cache-control"] == "no-store"
        assert body["pitcherToken"] not in repr(SandboxSessionOut.model_validate(body))

    async def test_each_mint_is_a_fresh_upstream_session(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        first = (await _mint(client, headers, sandbox["id"])).json()
        second = (await _mint(client, headers, sandbox["id"])).json()
        assert first["sessionId"] == second["sessionId"]
        assert first["pitcherToken"] != second["pitcherToken"]

    async def test_mints_are_counted_in_the_metrics(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        minted = metrics.SESSIONS_MINTED.labels("api")
        before = minted._value.get()
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        assert (await _mint(client, headers, sandbox["id"])).status_code == 201
        assert (
            await _mint(client, headers, sandbox["id"], permission="sideways")
        ).status_code == 422
        assert minted._value.get() - before == 1

    async def test_session_id_is_stable_per_person_and_distinct_across_teams(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        b = await factories.team_with_key(client, "team-b")
        sandbox_a = await factories.sandbox(client, a)
        sandbox_b = await factories.sandbox(client, b)
        alice_a = (await _mint(client, a, sandbox_a["id"], "alice")).json()["sessionId"]
        again = (await _mint(client, a, sandbox_a["id"], "alice", "read")).json()["sessionId"]
        bob_a = (await _mint(client, a, sandbox_a["id"], "bob")).json()["sessionId"]
        alice_b = (await _mint(client, b, sandbox_b["id"], "alice")).json()["sessionId"]
        assert alice_a == again
        assert len({alice_a, bob_a, alice_b}) == 3
        for sid in (alice_a, bob_a, alice_b):
            assert re.fullmatch(r"[A-Za-z0-9_-]{1,20}", sid), sid

    def test_session_id_shape_for_awkward_users(self) -> None:
        ids = {session_id_for("t", user) for user in ("a", "A", "a b", "é" * 200, "x:y", "")}
        assert len(ids) == 6
        assert all(re.fullmatch(r"[a-z][a-z2-7]{19}", sid) for sid in ids)
        # Not a plain concatenation: ("t", "x:y") and ("t:x", "y") must differ.
        assert session_id_for("t", "x:y") != session_id_for("t:x", "y")

    async def test_wakes_a_hibernated_sandbox(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        stopped = await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
        assert stopped.status_code == 200, stopped.text
        response = await _mint(client, headers, sandbox["id"])
        assert response.status_code == 201, response.text
        assert response.json()["bootupType"] == "RESUME"
        after = (await client.get(f"/v1/sandboxes/{sandbox['id']}", headers=headers)).json()
        assert after["state"] == "running"
        assert (await _vm(sim, sandbox["upstream_id"]))["state"] == "running"

    async def test_wake_up_is_admitted_against_quota(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client, max_concurrent=1)
        first = await factories.sandbox(client, headers)
        await client.post(f"/v1/sandboxes/{first['id']}/hibernate", headers=headers)
        await factories.sandbox(client, headers)
        response = await _mint(client, headers, first["id"])
        assert response.status_code == 429, response.text
        assert "Retry-After" in response.headers
        assert (await _vm(sim, first["upstream_id"]))["state"] == "hibernated"
        listed = await client.get(f"/v1/sandboxes/{first['id']}/sessions", headers=headers)
        assert listed.json()["items"] == []

    async def test_vm_stopped_upstream_unseen_is_resumed(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        # Corral still believes it running; the upstream hibernated it.
        assert (await sim.post(f"/vm/{sandbox['upstream_id']}/hibernate")).status_code == 200
        response = await _mint(client, headers, sandbox["id"])
        assert response.status_code == 201, response.text
        assert response.json()["bootupType"] == "RESUME"

    async def test_deleted_sandbox_gets_no_session(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        await client.delete(f"/v1/sandboxes/{sandbox['id']}", headers=headers)
        response = await _mint(client, headers, sandbox["id"])
        assert response.status_code == 409, response.text


class TestAuthorisation:
    async def test_scope_follows_the_permission_asked(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        writer = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, writer)
        reader = await factories.key(client, "search-ui", scopes=["sessions:read"])
        none = await factories.key(client, "search-ui", scopes=["sandboxes:read"])
        assert (await _mint(client, reader, sandbox["id"], permission="read")).status_code == 201
        refused = await _mint(client, reader, sandbox["id"], permission="write")
        assert refused.status_code == 403
        assert refused.json()["type"].endswith("missing-scope")
        assert (await _mint(client, none, sandbox["id"], permission="read")).status_code == 403
        listed = await client.get(f"/v1/sandboxes/{sandbox['id']}/sessions", headers=none)
        assert listed.status_code == 403

    async def test_owner_bound_key_mints_only_for_its_owner(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        team = await factories.team_with_key(client)
        alices = await factories.sandbox(client, team, owner="alice")
        bobs = await factories.sandbox(client, team, owner="bob")
        alice = await factories.key(client, "search-ui", owner="alice")
        assert (await _mint(client, alice, alices["id"], "alice")).status_code == 201
        as_bob = await _mint(client, alice, alices["id"], "bob")
        assert as_bob.status_code == 403
        assert as_bob.json()["type"].endswith("owner-binding")
        assert (await _mint(client, alice, bobs["id"], "alice")).status_code == 404

    async def test_another_teams_sandbox_is_not_found(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        b = await factories.team_with_key(client, "team-b")
        sandbox = await factories.sandbox(client, a)
        assert (await _mint(client, b, sandbox["id"])).status_code == 404

    async def test_bad_bodies_are_refused(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        url = f"/v1/sandboxes/{sandbox['id']}/sessions"
        for body in (
            {"user": "a", "permission": "admin"},
            {"user": ""},
            {"user": "a" * 201},
            {"user": "a\nb"},
            {"user": "a", "extra": 1},
        ):
            response = await client.post(url, json=body, headers=headers)
            assert response.status_code == 422, body


class TestRecords:
    async def test_every_mint_is_recorded_without_its_token(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        minted = [
            (await _mint(client, headers, sandbox["id"], user, perm)).json()
            for user, perm in (("alice", "write"), ("bob", "read"), ("alice", "read"))
        ]
        response = await client.get(f"/v1/sandboxes/{sandbox['id']}/sessions", headers=headers)
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        assert [(i["user"], i["permission"]) for i in items] == [
            ("alice", "read"),
            ("bob", "read"),
            ("alice", "write"),
        ]
        assert all(i["via"] == "api" and i["bootup_type"] == "RUNNING" for i in items)
        assert all(i["team_id"] == "search-ui" and i["key_id"] for i in items)
        assert [i["session_id"] for i in items] == [m["sessionId"] for m in reversed(minted)]
        for session in minted:
            assert session["pitcherToken"] not in response.text

    async def test_records_page_and_filter_by_user(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        for user in ("a", "b", "a", "c"):
            assert (await _mint(client, headers, sandbox["id"], user)).status_code == 201
        url = f"/v1/sandboxes/{sandbox['id']}/sessions"
        first = (await client.get(url, params={"limit": 3}, headers=headers)).json()
        assert [i["user"] for i in first["items"]] == ["c", "a", "b"]
        rest = await client.get(
            url, params={"limit": 3, "cursor": first["next_cursor"]}, headers=headers
        )
        assert [i["user"] for i in rest.json()["items"]] == ["a"]
        assert rest.json()["next_cursor"] is None
        only_a = (await client.get(url, params={"user": "a"}, headers=headers)).json()
        assert [i["user"] for i in only_a["items"]] == ["a", "a"]
