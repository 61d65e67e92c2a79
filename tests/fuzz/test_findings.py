"""What the fuzzing found, one test each (in process, on the shared test database)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from tests.fixtures import factories
from tests.fixtures.factories import ADMIN


class TestOpenApiDocumentsErrors:
    def test_every_operation_documents_its_errors_in_their_shape(self, settings: Settings) -> None:
        document: dict[str, Any] = create_app(settings).openapi()
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                responses = operation["responses"]
                assert {"4XX", "502", "503"} <= responses.keys(), (method, path)
                media = (
                    "application/json" if path.startswith("/csb/") else "application/problem+json"
                )
                schema = "UpstreamError" if path.startswith("/csb/") else "Problem"
                assert responses["4XX"]["content"][media]["schema"]["$ref"].endswith(schema)
                assert "422" not in responses, (method, path)
        assert "HTTPValidationError" not in document["components"]["schemas"]


class TestTeamPatch:
    @pytest.mark.parametrize("field", ["budget_policy", "guaranteed"])
    async def test_null_for_a_field_that_always_has_a_value_is_a_422(
        self, client: httpx.AsyncClient, field: str
    ) -> None:
        await factories.team(client, "nulls")
        response = await client.patch("/v1/admin/teams/nulls", json={field: None}, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/null-not-allowed")
        team = (await client.get("/v1/admin/teams/nulls", headers=ADMIN)).json()
        assert (team["budget_policy"], team["guaranteed"]) == ("block", 0)

    async def test_null_for_a_limit_still_makes_it_unlimited(
        self, client: httpx.AsyncClient
    ) -> None:
        await factories.team(client, "limits", max_concurrent=3)
        response = await client.patch(
            "/v1/admin/teams/limits", json={"max_concurrent": None}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        assert response.json()["max_concurrent"] is None


class TestInstantsAreIsoDateTimes:
    @pytest.mark.parametrize("value", ["0.5", "1700000000", "-1"])
    async def test_a_number_is_not_an_instant_in_a_query(
        self, client: httpx.AsyncClient, value: str
    ) -> None:
        response = await client.get("/v1/admin/audit", params={"to": value}, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["type"] == "datetime_format"

    async def test_a_number_is_not_an_instant_in_a_body(self, client: httpx.AsyncClient) -> None:
        await factories.team(client, "expiry")
        response = await client.post(
            "/v1/admin/teams/expiry/keys",
            json={"name": "k", "scopes": ["sandboxes:read"], "expires_at": 4102444800},
            headers=ADMIN,
        )
        assert response.status_code == 422, response.text

    async def test_an_iso_instant_with_an_offset_is_taken(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            "/v1/admin/audit", params={"to": "2026-03-01T10:00:00+01:00"}, headers=ADMIN
        )
        assert response.status_code == 200, response.text


class TestBooleansAreNotNumbers:
    async def test_clock_advance_refuses_true_seconds(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/admin/clock/advance", json={"seconds": True}, headers=ADMIN
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["type"] == "bool_not_allowed"

    async def test_a_create_refuses_a_boolean_timeout(self, client: httpx.AsyncClient) -> None:
        headers = await factories.team_with_key(client, "bools")
        response = await client.post(
            "/v1/sandboxes", json={"hibernation_timeout_seconds": True}, headers=headers
        )
        assert response.status_code == 422, response.text
        listed = (await client.get("/v1/sandboxes", headers=headers)).json()["items"]
        assert listed == []

    async def test_boolean_fields_still_take_booleans(self, client: httpx.AsyncClient) -> None:
        headers = await factories.team_with_key(client, "bools-ok")
        created = await factories.sandbox(client, headers, start=False, automatic_wakeup=False)
        assert created["automatic_wakeup"] is False
