"""Tenancy on the /csb facade (DESIGN §15): an owner-bound caller is only its owner's Linux
user, and shell credentials (a start's pitcher, pint and reconnect tokens) reach only a
caller with `sessions:write`, each one recorded like a minted session."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.db import transaction
from app.models import AuditEntry, BrowserSession
from app.runtime import Runtime
from app.sessions.service import session_id_for
from tests.fixtures import factories

SANDBOX_ONLY = ["sandboxes:read", "sandboxes:write"]


def _data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]


async def _records(runtime: Runtime, sandbox_id: str) -> list[BrowserSession]:
    async with transaction(runtime.sessions) as session:
        rows = await session.scalars(
            select(BrowserSession)
            .where(BrowserSession.sandbox_id == sandbox_id)
            .order_by(BrowserSession.id)
        )
        return list(rows)


async def _stored_text(runtime: Runtime) -> str:
    """Every session record and audit row, as text: where a token must never be."""
    async with transaction(runtime.sessions) as session:
        records = list(await session.scalars(select(BrowserSession)))
        audits = list(await session.scalars(select(AuditEntry)))
    return repr([vars(r) for r in records]) + repr([(a.action, a.detail) for a in audits])


@pytest.fixture
def upstream_session_ids(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The session ids Corral asks the upstream for, as sent (the call still goes through)."""
    sent: list[str] = []
    create_session = runtime.upstream.create_session

    async def spy(upstream_id: str, session_id: str, permission: str) -> Any:
        sent.append(session_id)
        return await create_session(upstream_id, session_id, permission)

    monkeypatch.setattr(runtime.upstream, "create_session", spy)
    return sent


class TestOwnerBoundSessions:
    async def test_a_bound_key_cannot_become_another_owners_linux_user(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        upstream_session_ids: list[str],
    ) -> None:
        await factories.team(client, "team-a")
        alice = await factories.key(client, "team-a", owner="alice")
        mine = await factories.sandbox(client, alice)
        bobs_id = session_id_for("team-a", "bob")
        alices_id = session_id_for("team-a", "alice")

        answer = _data(
            await client.post(
                f"/csb/vm/{mine['upstream_id']}/sessions",
                json={"session_id": bobs_id, "permission": "write"},
                headers=alice,
            )
        )
        assert answer["username"] == alices_id
        assert upstream_session_ids == [alices_id]
        [record] = await _records(runtime, mine["id"])
        assert (record.user, record.session_id, record.via) == ("alice", alices_id, "csb")

    async def test_the_owner_header_binds_an_unbound_key_the_same_way(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        upstream_session_ids: list[str],
    ) -> None:
        team = await factories.team_with_key(client, "team-a")
        as_alice = {**team, "X-Corral-Owner": "alice"}
        mine = await factories.sandbox(client, team, owner="alice")
        answer = _data(
            await client.post(
                f"/csb/vm/{mine['upstream_id']}/sessions",
                json={"session_id": session_id_for("team-a", "bob"), "permission": "write"},
                headers=as_alice,
            )
        )
        assert answer["username"] == session_id_for("team-a", "alice")
        assert upstream_session_ids == [session_id_for("team-a", "alice")]

    async def test_an_unbound_key_still_names_the_session_it_wants(
        self, client: httpx.AsyncClient, upstream_session_ids: list[str]
    ) -> None:
        team = await factories.team_with_key(client, "team-a")
        sandbox = await factories.sandbox(client, team)
        answer = _data(
            await client.post(
                f"/csb/vm/{sandbox['upstream_id']}/sessions",
                json={"session_id": "ci-runner", "permission": "read"},
                headers=team,
            )
        )
        assert answer["username"] == "ci-runner" and upstream_session_ids == ["ci-runner"]

    async def test_a_bound_key_cannot_reach_another_owners_sandbox(
        self, client: httpx.AsyncClient, upstream_session_ids: list[str]
    ) -> None:
        team = await factories.team_with_key(client, "team-a")
        alice = await factories.key(client, "team-a", owner="alice")
        bobs = await factories.sandbox(client, team, owner="bob")
        refused = await client.post(
            f"/csb/vm/{bobs['upstream_id']}/sessions",
            json={"session_id": session_id_for("team-a", "bob"), "permission": "write"},
            headers=alice,
        )
        assert refused.status_code == 404
        assert upstream_session_ids == []


class TestStartCredentials:
    async def test_a_start_without_sessions_write_is_refused_before_anything_changes(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        full = await factories.team_with_key(client, "team-a")
        narrow = await factories.key(client, "team-a", scopes=SANDBOX_ONLY)
        stopped = await factories.sandbox(client, full, start=False, tier="Nano")

        refused = await client.post(
            f"/csb/vm/{stopped['upstream_id']}/start", json={"tier": "Small"}, headers=narrow
        )
        assert refused.status_code == 403, refused.text
        assert refused.json() == {
            "success": False,
            "errors": ["This key lacks the 'sessions:write' scope."],
        }
        after = (await client.get(f"/v1/sandboxes/{stopped['id']}", headers=full)).json()
        assert (after["state"], after["tier"]) == ("shutdown", "Nano")
        vm = (await sim.get(f"/_simulator/vms/{stopped['upstream_id']}")).json()
        assert vm["state"] != "running"
        assert await _records(runtime, stopped["id"]) == []

    async def test_a_fork_with_start_options_without_sessions_write_forks_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        full = await factories.team_with_key(client, "team-a")
        narrow = await factories.key(client, "team-a", scopes=SANDBOX_ONLY)
        refused = await client.post(
            "/csb/sandbox/pcz35m/fork", json={"start_options": {}}, headers=narrow
        )
        assert refused.status_code == 403, refused.text
        assert "sessions:write" in refused.json()["errors"][0]
        assert (await client.get("/v1/sandboxes", headers=full)).json()["items"] == []
        # Without start options a fork hands out no credentials: sandboxes:write is enough.
        forked = await client.post("/csb/sandbox/pcz35m/fork", json={}, headers=narrow)
        assert forked.status_code == 201, forked.text
        assert forked.json()["data"]["start_response"] is None

    async def test_every_start_answer_is_recorded_without_its_tokens(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await factories.team(client, "team-a")
        alice = await factories.key(client, "team-a", owner="alice")
        forked = _data(
            await client.post(
                "/csb/sandbox/pcz35m/fork", json={"start_options": {}}, headers=alice
            ),
            201,
        )
        first = forked["start_response"]
        again = _data(await client.post(f"/csb/vm/{forked['id']}/start", json={}, headers=alice))
        assert first["pitcher_token"] and again["pitcher_token"]
        assert (first["bootup_type"], again["bootup_type"]) == ("FORK", "RUNNING")

        [sandbox] = (await client.get("/v1/sandboxes", headers=alice)).json()["items"]
        records = await _records(runtime, sandbox["id"])
        assert [
            (r.user, r.session_id, r.permission, r.via, r.bootup_type, r.team_id) for r in records
        ] == [
            ("alice", "", "write", "csb-start", "FORK", "team-a"),
            ("alice", "", "write", "csb-start", "RUNNING", "team-a"),
        ]
        listed = await client.get(f"/v1/sandboxes/{sandbox['id']}/sessions", headers=alice)
        assert [s["via"] for s in listed.json()["items"]] == ["csb-start", "csb-start"]
        stored = await _stored_text(runtime)
        for answer in (first, again):
            for name in ("pitcher_token", "reconnect_token", "pint_token"):
                if answer.get(name):
                    assert answer[name] not in stored
        audit = await client.get(
            "/v1/admin/audit", params={"action": "session.mint"}, headers=factories.ADMIN
        )
        details = [row["detail"] for row in audit.json()["items"]]
        assert [(d["via"], "pitcher" in d["credentials"]) for d in details] == [
            ("csb-start", True),
            ("csb-start", True),
        ]
