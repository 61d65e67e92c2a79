"""The admin routes on fork templates: allow, disallow and list, for the organisation and for
one team; idempotent allows, validated ids, audited changes, and the default template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures import factories
from tests.test_layering import _offences

ADMIN = factories.ADMIN
ORG = "/v1/admin/fork-templates"


def team_path(team: str) -> str:
    return f"/v1/admin/teams/{team}/fork-templates"


async def listed(client: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    response = await client.get(path, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


async def audit_rows(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/v1/admin/audit", headers=ADMIN)
    assert response.status_code == 200, response.text
    return [row for row in response.json()["items"] if row["action"].startswith("fork_template.")]


def problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/" + kind), body
    return body


class TestOrganisation:
    async def test_the_default_template_is_listed_out_of_the_box(
        self, client: httpx.AsyncClient
    ) -> None:
        assert await listed(client, ORG) == [
            {
                "upstream_id": "pcz35m",
                "team": None,
                "default": True,
                "allowed_at": None,
                "allowed_by": None,
            }
        ]

    async def test_allow_is_idempotent_and_audited_once(self, client: httpx.AsyncClient) -> None:
        first = await client.put(f"{ORG}/7ngcrf", headers=ADMIN)
        assert first.status_code == 201, first.text
        again = await client.put(f"{ORG}/7ngcrf", headers=ADMIN)
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        assert first.json()["team"] is None and first.json()["default"] is False
        assert first.json()["allowed_by"] == "env-admin"
        assert [e["upstream_id"] for e in await listed(client, ORG)] == ["pcz35m", "7ngcrf"]
        rows = await audit_rows(client)
        assert [(r["action"], r["target"], r["team_id"]) for r in rows] == [
            ("fork_template.allow", "7ngcrf", None)
        ]

    async def test_disallow_removes_it_once_and_is_audited(self, client: httpx.AsyncClient) -> None:
        assert (await client.put(f"{ORG}/7ngcrf", headers=ADMIN)).status_code == 201
        assert (await client.delete(f"{ORG}/7ngcrf", headers=ADMIN)).status_code == 204
        problem(await client.delete(f"{ORG}/7ngcrf", headers=ADMIN), 404, "fork-template-not-found")
        assert [e["upstream_id"] for e in await listed(client, ORG)] == ["pcz35m"]
        assert [r["action"] for r in await audit_rows(client)] == [
            "fork_template.disallow",
            "fork_template.allow",
        ]

    async def test_the_default_template_cannot_be_disallowed_and_allowing_it_stores_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        body = problem(await client.delete(f"{ORG}/pcz35m", headers=ADMIN), 409, "default-template")
        assert "CORRAL_DEFAULT_TEMPLATE" in body["detail"]
        allowed = await client.put(f"{ORG}/pcz35m", headers=ADMIN)
        assert allowed.status_code == 200 and allowed.json()["default"] is True
        assert len(await listed(client, ORG)) == 1
        assert await audit_rows(client) == []

    @pytest.mark.parametrize("bad", ["-x", "a" * 65, "a@b@c", "a.b", "%00", "a%20b"])
    async def test_a_bad_id_is_refused_and_changes_nothing(
        self, client: httpx.AsyncClient, bad: str
    ) -> None:
        response = await client.put(f"{ORG}/{bad}", headers=ADMIN)
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert len(await listed(client, ORG)) == 1
        assert await audit_rows(client) == []

    async def test_a_namespaced_alias_may_be_allowed(self, client: httpx.AsyncClient) -> None:
        response = await client.put(f"{ORG}/acme@golden", headers=ADMIN)
        assert response.status_code == 201, response.text
        assert response.json()["upstream_id"] == "acme@golden"


class TestTeam:
    async def test_a_team_listing_shows_what_the_team_may_fork_and_where_it_is_allowed(
        self, client: httpx.AsyncClient
    ) -> None:
        await factories.team(client, "team-a")
        await factories.team(client, "team-b")
        assert (await client.put(f"{ORG}/orgwide", headers=ADMIN)).status_code == 201
        put = await client.put(f"{team_path('team-a')}/7ngcrf", headers=ADMIN)
        assert put.status_code == 201 and put.json()["team"] == "team-a"
        again = await client.put(f"{team_path('team-a')}/7ngcrf", headers=ADMIN)
        assert again.status_code == 200
        entries = [(e["upstream_id"], e["team"]) for e in await listed(client, team_path("team-a"))]
        assert entries == [("pcz35m", None), ("orgwide", None), ("7ngcrf", "team-a")]
        others = [(e["upstream_id"], e["team"]) for e in await listed(client, team_path("team-b"))]
        assert others == [("pcz35m", None), ("orgwide", None)]
        # The organisation's listing holds no team's rows.
        assert [e["upstream_id"] for e in await listed(client, ORG)] == ["pcz35m", "orgwide"]
        rows = await audit_rows(client)
        assert [(r["action"], r["target"], r["team_id"]) for r in rows] == [
            ("fork_template.allow", "7ngcrf", "team-a"),
            ("fork_template.allow", "orgwide", None),
        ]

    async def test_an_organisation_row_is_not_removed_through_a_team(
        self, client: httpx.AsyncClient
    ) -> None:
        await factories.team(client, "team-a")
        assert (await client.put(f"{ORG}/orgwide", headers=ADMIN)).status_code == 201
        problem(
            await client.delete(f"{team_path('team-a')}/orgwide", headers=ADMIN),
            404,
            "fork-template-not-found",
        )
        assert [e["upstream_id"] for e in await listed(client, ORG)] == ["pcz35m", "orgwide"]
        put = await client.put(f"{team_path('team-a')}/mine", headers=ADMIN)
        assert put.status_code == 201
        removed = await client.delete(f"{team_path('team-a')}/mine", headers=ADMIN)
        assert removed.status_code == 204

    async def test_an_unknown_or_deleted_team_is_404(self, client: httpx.AsyncClient) -> None:
        await factories.team(client, "gone")
        assert (await client.delete("/v1/admin/teams/gone", headers=ADMIN)).status_code == 204
        for team in ("nosuch", "gone"):
            for method in ("GET", "PUT", "DELETE"):
                path = team_path(team) if method == "GET" else f"{team_path(team)}/7ngcrf"
                problem(await client.request(method, path, headers=ADMIN), 404, "not-found")
        assert await audit_rows(client) == []


class TestAccess:
    async def test_team_keys_and_no_key_are_refused(self, client: httpx.AsyncClient) -> None:
        headers = await factories.team_with_key(client, "team-a")
        for method, path in (
            ("GET", ORG),
            ("PUT", f"{ORG}/7ngcrf"),
            ("DELETE", f"{ORG}/7ngcrf"),
            ("GET", team_path("team-a")),
            ("PUT", f"{team_path('team-a')}/7ngcrf"),
            ("DELETE", f"{team_path('team-a')}/7ngcrf"),
        ):
            assert (await client.request(method, path, headers=headers)).status_code == 403
            assert (await client.request(method, path)).status_code == 401
        assert len(await listed(client, ORG)) == 1


def test_the_service_runs_no_query_itself() -> None:
    service = Path(__file__).resolve().parents[2] / "app" / "templates" / "service.py"
    assert _offences(service.read_text()) == []
