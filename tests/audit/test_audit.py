"""`GET /v1/admin/audit`: the rows mutating calls wrote, filtered and walked page by page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from app.db import transaction
from app.models import AuditEntry
from app.runtime import Runtime
from tests.fixtures import factories

ADMIN = factories.ADMIN


async def audit(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/admin/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def walk(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await audit(client, **params, **({"cursor": cursor} if cursor else {}))
        rows.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


async def seed(client: httpx.AsyncClient) -> dict[str, str]:
    """Two teams, three keys, one revocation: six rows, all by the env admin key."""
    for team in ("team-a", "team-b"):
        await factories.team(client, team)
    a = await factories.key(client, "team-a")
    await factories.key(client, "team-b")
    keys = (await client.get("/v1/admin/teams/team-a/keys", headers=ADMIN)).json()
    extra = await client.post(
        "/v1/admin/teams/team-a/keys",
        json={"name": "ci", "scopes": ["sandboxes:read"]},
        headers={**ADMIN, "X-Request-Id": "req-revoke-setup"},
    )
    revoked = await client.delete(
        f"/v1/admin/keys/{extra.json()['id']}",
        headers={**ADMIN, "X-Request-Id": "req-revoke-1"},
    )
    assert revoked.status_code == 200
    return {**a, "first_key": keys[0]["id"], "revoked_key": extra.json()["id"]}


class TestAuditLog:
    async def test_rows_come_newest_first_with_who_what_and_request_id(
        self, client: httpx.AsyncClient
    ) -> None:
        seeded = await seed(client)
        rows = (await audit(client))["items"]
        assert [r["action"] for r in rows] == [
            "key.revoke",
            "key.create",
            "key.create",
            "key.create",
            "team.create",
            "team.create",
        ]
        newest = rows[0]
        assert newest["actor"] == "env-admin"
        assert newest["team_id"] == "team-a"
        assert newest["target"] == seeded["revoked_key"]
        assert newest["cause"] == "api" and newest["outcome"] == "ok"
        assert newest["request_id"] == "req-revoke-1"
        assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)

    async def test_filters_combine(self, client: httpx.AsyncClient) -> None:
        seeded = await seed(client)
        keys_a = (await audit(client, action="key.create", team="team-a"))["items"]
        assert len(keys_a) == 2 and {r["team_id"] for r in keys_a} == {"team-a"}
        assert [
            r["target"] for r in (await audit(client, target=seeded["revoked_key"]))["items"]
        ] == [
            seeded["revoked_key"],
            seeded["revoked_key"],
        ]
        assert len((await audit(client, actor="env-admin"))["items"]) == 6
        assert (await audit(client, actor="someone-else"))["items"] == []
        assert len((await audit(client, cause="api", outcome="ok"))["items"]) == 6
        assert (await audit(client, outcome="refused"))["items"] == []

    async def test_time_window_is_from_inclusive_to_exclusive(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await seed(client)
        rows = (await audit(client))["items"]
        base = datetime(2026, 1, 1, tzinfo=UTC)
        # Spread the rows one hour apart, oldest first, so the window edges are exact.
        async with transaction(runtime.sessions) as session:
            for hours, row in enumerate(reversed(rows)):
                await session.execute(
                    update(AuditEntry)
                    .where(AuditEntry.id == row["id"])
                    .values(at=base + timedelta(hours=hours))
                )
        window = await audit(
            client,
            **{
                "from": (base + timedelta(hours=1)).isoformat(),
                "to": (base + timedelta(hours=3)).isoformat(),
            },
        )
        assert [r["id"] for r in window["items"]] == [rows[-3]["id"], rows[-2]["id"]]

    async def test_cursor_walk_returns_every_row_exactly_once(
        self, client: httpx.AsyncClient
    ) -> None:
        await seed(client)
        everything = (await audit(client))["items"]
        walked = await walk(client, limit=4)
        assert [r["id"] for r in walked] == [r["id"] for r in everything]
        first = await audit(client, limit=4)
        assert len(first["items"]) == 4 and first["next_cursor"] is not None
        filtered = await walk(client, limit=1, action="key.create")
        assert len(filtered) == 3 and {r["action"] for r in filtered} == {"key.create"}

    async def test_bad_queries_are_refused(self, client: httpx.AsyncClient) -> None:
        for params in (
            {"cursor": "not-a-cursor"},
            {"from": "2026-01-01T00:00:00"},
            {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            {"limit": 0},
            {"limit": 501},
            {"team": "Not A Slug"},
        ):
            response = await client.get("/v1/admin/audit", params=params, headers=ADMIN)
            assert response.status_code in (400, 422), (params, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")

    async def test_only_admin_keys_read_the_audit_log(self, client: httpx.AsyncClient) -> None:
        headers = await factories.team_with_key(client, "team-a")
        assert (await client.get("/v1/admin/audit", headers=headers)).status_code == 403
        assert (await client.get("/v1/admin/audit")).status_code == 401
