"""Input that once answered 500 (issue 14, finding 6): each is now a clear 4xx problem body,
and nothing changes in the database or upstream."""

from __future__ import annotations

import base64
import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fixtures import factories

ADMIN = factories.ADMIN


def assert_problem(response: httpx.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code and body["detail"]
    return body


def cursor_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def upstream_calls(sim: httpx.AsyncClient) -> dict[str, int]:
    response = await sim.get("/_simulator/requests")
    assert response.status_code == 200
    counts: dict[str, int] = response.json()
    return counts


class TestSandboxListCursor:
    @pytest.mark.parametrize(
        "raw",
        [
            "0001-01-01T00:00:00+14:00|x",
            "9999-12-31T23:59:59-14:00|sbx_000000000000",
            "2026-01-01T00:00:00|sbx_000000000000",  # no offset: not one this API issued
            "2026-01-01T00:00:00+00:00|\x00",
            "2026-01-01T00:00:00+00:00|not-a-sandbox-id",
            "no separator",
        ],
    )
    async def test_a_cursor_this_api_did_not_issue_is_400(
        self, client: httpx.AsyncClient, raw: str
    ) -> None:
        headers = await factories.team_with_key(client)
        response = await client.get(
            "/v1/sandboxes", params={"cursor": cursor_of(raw)}, headers=headers
        )
        assert assert_problem(response, 400)["type"].endswith("/invalid-cursor")

    async def test_an_issued_cursor_still_pages(self, client: httpx.AsyncClient) -> None:
        headers = await factories.team_with_key(client)
        for _ in range(3):
            await factories.sandbox(client, headers, start=False)
        first = (await client.get("/v1/sandboxes", params={"limit": 2}, headers=headers)).json()
        rest = await client.get(
            "/v1/sandboxes", params={"limit": 2, "cursor": first["next_cursor"]}, headers=headers
        )
        assert rest.status_code == 200 and len(rest.json()["items"]) == 1


class TestUsageWindow:
    @pytest.mark.parametrize(
        "params",
        [
            {"from": "9999-12-05"},
            {"from": "0001-01-01T00:00:00+05:00"},
            {"from": "0001-01-01"},
            {"to": "9999-12-31T23:59:59-05:00"},
            {"from": "9999-12-31T00:00:00+00:00", "to": "9999-12-31T12:00:00+00:00"},
            {"from": "1800-01-01T00:00:00Z", "to": "1800-02-01T00:00:00Z"},
        ],
    )
    async def test_dates_out_of_range_are_422(
        self, client: httpx.AsyncClient, params: dict[str, str]
    ) -> None:
        headers = await factories.team_with_key(client)
        for fmt in ("json", "csv"):
            response = await client.get(
                "/v1/usage", params={**params, "format": fmt}, headers=headers
            )
            body = assert_problem(response, 422)
            assert body["type"].endswith("/date-out-of-range"), body


class TestNulBytes:
    """Postgres text cannot hold NUL: a body with one is refused before it reaches it."""

    @pytest.mark.parametrize(
        "body",
        [{"title": "a\x00b"}, {"owner": "alice\x00"}, {"tags": ["ok", "t\x00"]}],
    )
    async def test_a_create_with_nul_is_422_and_changes_nothing(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        headers = await factories.team_with_key(client)
        before = await upstream_calls(sim)
        response = await client.post("/v1/sandboxes", json=body, headers=headers)
        problem = assert_problem(response, 422)
        (field,) = body
        assert ["body", field] in [e["loc"] for e in problem["errors"]], problem
        assert await upstream_calls(sim) == before
        assert (await client.get("/v1/sandboxes", headers=headers)).json()["items"] == []

    async def test_a_patched_title_with_nul_is_422(self, client: httpx.AsyncClient) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers, start=False, title="kept")
        response = await client.patch(
            f"/v1/sandboxes/{sandbox['id']}", json={"title": "\x00"}, headers=headers
        )
        assert_problem(response, 422)
        got = await client.get(f"/v1/sandboxes/{sandbox['id']}", headers=headers)
        assert got.json()["title"] == "kept"

    async def test_a_team_name_with_nul_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/admin/teams", json={"id": "nul-team", "name": "a\x00"}, headers=ADMIN
        )
        assert_problem(response, 422)
        assert (await client.get("/v1/admin/teams/nul-team", headers=ADMIN)).status_code == 404
        await factories.team(client, "named")
        patched = await client.patch("/v1/admin/teams/named", json={"name": "\x00"}, headers=ADMIN)
        assert_problem(patched, 422)
        assert (await client.get("/v1/admin/teams/named", headers=ADMIN)).json()["name"] == "named"

    @pytest.mark.parametrize("field", ["name", "owner"])
    async def test_a_key_name_or_owner_with_nul_is_422(
        self, client: httpx.AsyncClient, field: str
    ) -> None:
        await factories.team(client, "search-ui")
        response = await client.post(
            "/v1/admin/teams/search-ui/keys",
            json={"name": "ci", "scopes": ["sandboxes:read"], field: "ci\x00"},
            headers=ADMIN,
        )
        assert_problem(response, 422)
        assert (await client.get("/v1/admin/teams/search-ui/keys", headers=ADMIN)).json() == []

    @pytest.mark.parametrize(
        ("path", "params"),
        [
            ("/v1/sandboxes", {"owner": "a\x00"}),
            ("/v1/sandboxes", {"tag": "a\x00"}),
            ("/v1/admin/audit", {"action": "a\x00"}),
            ("/v1/admin/audit", {"actor": "\x00"}),
            ("/v1/admin/reconciliation", {"kind": "\x00"}),
        ],
    )
    async def test_a_query_parameter_with_nul_is_400(
        self, client: httpx.AsyncClient, path: str, params: dict[str, str]
    ) -> None:
        headers = await factories.team_with_key(client)
        caller = ADMIN if path.startswith("/v1/admin") else headers
        response = await client.get(path, params=params, headers=caller)
        assert assert_problem(response, 400)["type"].endswith("/nul-character")

    async def test_the_facade_refuses_nul_in_its_own_shape(self, client: httpx.AsyncClient) -> None:
        headers = await factories.team_with_key(client)
        response = await client.get("/csb/sandbox", params={"tags": "a\x00"}, headers=headers)
        assert response.status_code == 400
        assert response.json()["success"] is False and response.json()["errors"][0]

    async def test_a_facade_fork_title_with_nul_is_422(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        before = await upstream_calls(sim)
        response = await client.post(
            "/csb/sandbox/pcz35m/fork", json={"title": "a\x00"}, headers=headers
        )
        assert response.status_code == 422, response.text
        assert response.json()["success"] is False
        assert await upstream_calls(sim) == before


class TestAuditParameters:
    async def test_a_huge_cursor_is_400(self, client: httpx.AsyncClient) -> None:
        for raw in (f"audit:{2**70}", f"audit:-{2**70}", "audit:-1", "audit:\x00"):
            response = await client.get(
                "/v1/admin/audit", params={"cursor": cursor_of(raw)}, headers=ADMIN
            )
            assert assert_problem(response, 400)["type"].endswith("/invalid-cursor"), raw

    @pytest.mark.parametrize(
        "params",
        [
            {"from": "0001-01-01T00:00:00+05:00"},
            {"to": "0001-01-01T00:00:00+05:00"},
            {"from": "9999-12-31T23:59:59-05:00"},
            {"from": "1000-01-01T00:00:00Z"},
        ],
    )
    async def test_instants_out_of_range_are_422(
        self, client: httpx.AsyncClient, params: dict[str, str]
    ) -> None:
        response = await client.get("/v1/admin/audit", params=params, headers=ADMIN)
        problem = assert_problem(response, 422)
        assert any(e["type"] == "instant_out_of_range" for e in problem["errors"]), problem

    async def test_a_naive_instant_is_still_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            "/v1/admin/audit", params={"from": "2026-01-01T00:00:00"}, headers=ADMIN
        )
        assert_problem(response, (400, 422))


class TestKeyExpiry:
    @pytest.mark.parametrize(
        ("expires_at", "error"),
        [
            ("2099-01-01T00:00:00", "timezone_aware"),
            ("9999-12-31T23:59:59-05:00", "instant_out_of_range"),
            ("0001-01-01T00:00:00+05:00", "instant_out_of_range"),
        ],
    )
    async def test_an_expiry_without_timezone_or_out_of_range_is_422(
        self, client: httpx.AsyncClient, expires_at: str, error: str
    ) -> None:
        await factories.team(client, "search-ui")
        response = await client.post(
            "/v1/admin/teams/search-ui/keys",
            json={"name": "ci", "scopes": ["sandboxes:read"], "expires_at": expires_at},
            headers=ADMIN,
        )
        problem = assert_problem(response, 422)
        errors = {e["type"]: e for e in problem["errors"]}
        assert error in errors, problem
        assert errors[error]["loc"] == ["body", "expires_at"]
        if error == "timezone_aware":
            assert "timezone" in errors[error]["msg"]
        assert (await client.get("/v1/admin/teams/search-ui/keys", headers=ADMIN)).json() == []


class TestOtherInstants:
    @pytest.mark.parametrize(
        "effective_from", ["9999-12-31T23:59:59-05:00", "9500-01-01T00:00:00Z"]
    )
    async def test_a_price_version_out_of_range_is_422(
        self, client: httpx.AsyncClient, effective_from: str
    ) -> None:
        before = (await client.get("/v1/admin/prices", headers=ADMIN)).json()
        body = {
            "effective_from": effective_from,
            "credits_per_hour": dict.fromkeys(before["current"]["credits_per_hour"], "1"),
            "credit_usd": "0.01",
        }
        response = await client.put("/v1/admin/prices", json=body, headers=ADMIN)
        assert_problem(response, 422)
        after = (await client.get("/v1/admin/prices", headers=ADMIN)).json()
        assert after["versions"] == before["versions"]

    async def test_a_session_cursor_beyond_bigint_is_4xx(self, client: httpx.AsyncClient) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers, start=False)
        response = await client.get(
            f"/v1/sandboxes/{sandbox['id']}/sessions",
            params={"cursor": str(2**70)},
            headers=headers,
        )
        assert_problem(response, 422)


class TestTeamLimits:
    @pytest.mark.parametrize(
        "body",
        [
            {"monthly_budget_credits": "1e-100000"},
            {"max_credits_per_hour": "0.00001"},
            {"budget_soft_threshold": "0.12345"},
        ],
    )
    async def test_more_decimal_places_than_stored_is_422(
        self, client: httpx.AsyncClient, body: dict[str, str]
    ) -> None:
        before = await factories.team(client, "limits")
        response = await client.patch("/v1/admin/teams/limits", json=body, headers=ADMIN)
        assert_problem(response, 422)
        assert (await client.get("/v1/admin/teams/limits", headers=ADMIN)).json() == before


class TestFacadeInstants:
    @pytest.mark.parametrize(
        "expires_at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]
    )
    async def test_a_preview_token_expiry_out_of_range_is_422(
        self, client: httpx.AsyncClient, expires_at: str
    ) -> None:
        headers = await factories.team_with_key(client)
        upstream_id = (await factories.sandbox(client, headers))["upstream_id"]
        path = f"/csb/sandbox/{upstream_id}/tokens"
        created = await client.post(path, json={"expires_at": expires_at}, headers=headers)
        assert created.status_code == 422, created.text
        assert "Instants must lie" in created.json()["errors"][0]
        assert (await client.get(path, headers=headers)).json()["data"]["tokens"] == []


class TestSqlErrors:
    async def test_a_failed_statement_never_shows_its_parameters(self, engine: AsyncEngine) -> None:
        """What a request bound to a statement (client text, digests) stays out of the log."""
        with pytest.raises(DBAPIError) as failed:
            async with engine.connect() as conn:
                await conn.execute(
                    text("SELECT 1 / CAST(:zero AS integer) WHERE CAST(:mark AS text) <> ''"),
                    {"zero": 0, "mark": "secret-marker"},
                )
        assert "division by zero" in str(failed.value)
        assert "secret-marker" not in str(failed.value)


class TestChunkedBodyLimit:
    @staticmethod
    def chunks(size: int) -> Any:
        async def body() -> Any:
            yield b'{"title": "'
            sent = 0
            while sent < size:
                yield b"x" * 8192
                sent += 8192
            yield b'"}'

        return body()

    async def test_the_facade_fork_answers_413_in_the_upstream_shape(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        headers = await factories.team_with_key(client)
        before = await upstream_calls(sim)
        response = await client.post(
            "/csb/sandbox/pcz35m/fork",
            content=self.chunks(200_000),
            headers={**headers, "content-type": "application/json"},
        )
        assert response.status_code == 413, response.text
        body = response.json()
        assert body["success"] is False and "exceeds" in body["errors"][0]
        assert await upstream_calls(sim) == before
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    async def test_the_native_create_answers_413(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        response = await client.post(
            "/v1/sandboxes",
            content=self.chunks(200_000),
            headers={**headers, "content-type": "application/json"},
        )
        assert_problem(response, 413)
