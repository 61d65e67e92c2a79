"""The input rules every domain shares (`app.inputs`): owners and users are printable, no body
holds a NUL, instants lie in range, and every request body of every route is held to them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, TypeAdapter, ValidationError

from app import inputs
from app.db import transaction
from app.errors import Unprocessable
from app.identity import service as identity_service
from app.main import create_app
from app.operations.clock import ClockAdvance
from app.runtime import Runtime
from app.settings import Settings
from tests.fixtures import factories

ADMIN = factories.ADMIN
# Each prints like "alice" (or nothing) and is not "alice".
DISGUISED = [
    "ali\u200bce",  # zero-width space (Cf)
    "alice\u200d",  # zero-width joiner (Cf)
    "\u2066alice\u2069",  # left-to-right isolate … pop (Cf, bidi)
    "ecila\u202e",  # right-to-left override (Cf, bidi)
    "\ufeffalice",  # byte-order mark (Cf)
    "ali\u00adce",  # soft hyphen (Cf)
    "alice\u2028",  # line separator (Zl)
    "alice\u2029",  # paragraph separator (Zp)
    "alice\x7f",  # DEL (Cc)
    "alice\x85",  # next line, C1 (Cc)
    "al\nice",  # line feed (Cc)
]
OWNER = TypeAdapter(inputs.Owner)


class TestOwner:
    @pytest.mark.parametrize("owner", DISGUISED)
    def test_refuses_control_format_and_separator_characters(self, owner: str) -> None:
        with pytest.raises(ValidationError):
            OWNER.validate_python(owner)
        assert inputs.unprintable(owner) is not None

    @pytest.mark.parametrize(
        "owner",
        ["alice", "alice@corp.example", "Zoë Åström", "山田太郎", "o'brien", "a b", "x" * 200],
    )
    def test_takes_printable_names(self, owner: str) -> None:
        assert OWNER.validate_python(owner) == owner

    def test_names_the_character_it_refuses(self) -> None:
        with pytest.raises(ValidationError) as refused:
            OWNER.validate_python("ali\u200bce")
        (error,) = refused.value.errors()
        assert error["type"] == "unprintable_character" and "U+200B" in error["msg"]


class TestInstant:
    INSTANT = TypeAdapter(inputs.Instant)

    @pytest.mark.parametrize(
        "value",
        [
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-05:00",
            "1899-12-31T23:59:59Z",
            "9000-01-01T00:00:00Z",
        ],
    )
    def test_refuses_instants_out_of_range(self, value: str) -> None:
        with pytest.raises(ValidationError) as refused:
            self.INSTANT.validate_python(value)
        assert refused.value.errors()[0]["type"] == "instant_out_of_range"

    def test_refuses_an_instant_without_offset_and_says_so(self) -> None:
        with pytest.raises(ValidationError) as refused:
            self.INSTANT.validate_python("2026-03-01T09:00:00")
        (error,) = refused.value.errors()
        assert error["type"] == "timezone_aware" and "timezone offset" in error["msg"]

    def test_takes_instants_in_range_with_any_offset(self) -> None:
        plus14 = timezone(timedelta(hours=14))
        assert self.INSTANT.validate_python("1900-01-01T14:00:00+14:00") == datetime(
            1900, 1, 1, 14, tzinfo=plus14
        )
        assert self.INSTANT.validate_python("8999-12-31T23:59:59Z") == datetime(
            8999, 12, 31, 23, 59, 59, tzinfo=UTC
        )


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every model a body annotation names, nested models included."""
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
        for field in annotation.model_fields.values():
            found += _models_in(field.annotation)
    for arg in getattr(annotation, "__args__", ()):
        found += _models_in(arg)
    return found


# Bodies with no text at all, so no NUL can reach Postgres through them.
TEXTLESS = {ClockAdvance}


class TestEveryRequestBody:
    def test_every_body_of_every_route_refuses_nul(self, settings: Settings) -> None:
        app = create_app(settings)
        bodies: set[type[BaseModel]] = set()
        for context in iter_route_contexts(app.routes):
            route = context.original_route
            if isinstance(route, APIRoute):
                for param in route.dependant.body_params:
                    bodies.update(_models_in(param.field_info.annotation))
        assert len(bodies) > 10
        unguarded = {b for b in bodies if not issubclass(b, inputs.RequestBody)} - TEXTLESS
        assert unguarded == set()
        for body in TEXTLESS:
            assert '"string"' not in str(body.model_json_schema())

    def test_nul_is_refused_in_nested_lists_and_mappings(self) -> None:
        class Body(inputs.RequestBody):
            tags: list[str] = []
            labels: dict[str, str] = {}

        for data in (
            {"tags": ["a", "b\x00"]},
            {"labels": {"k\x00": "v"}},
            {"labels": {"k": "\x00"}},
        ):
            with pytest.raises(ValidationError) as refused:
                Body.model_validate(data)
            assert refused.value.errors()[0]["type"] == "nul_character"
        assert Body.model_validate({"tags": ["a"], "labels": {"k": "v"}}).tags == ["a"]


async def _refused(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    assert (
        any(
            e.get("type") in ("unprintable_character", "string_pattern_mismatch")
            for e in response.json().get("errors", [])
        )
        or "characters" in response.text
    ), response.text


class TestOwnersByRequest:
    @pytest.mark.parametrize("owner", DISGUISED[:4])
    async def test_a_key_owner_must_be_printable(
        self, client: httpx.AsyncClient, owner: str
    ) -> None:
        await factories.team(client, "search-ui")
        response = await client.post(
            "/v1/admin/teams/search-ui/keys",
            json={"name": "ci", "scopes": ["sandboxes:read"], "owner": owner},
            headers=ADMIN,
        )
        await _refused(response)
        assert (await client.get("/v1/admin/teams/search-ui/keys", headers=ADMIN)).json() == []

    @pytest.mark.parametrize("owner", DISGUISED[:4])
    async def test_a_sandbox_owner_must_be_printable(
        self, client: httpx.AsyncClient, owner: str
    ) -> None:
        headers = await factories.team_with_key(client)
        await _refused(await client.post("/v1/sandboxes", json={"owner": owner}, headers=headers))
        source = await factories.sandbox(client, headers, start=False)
        forked = await client.post(
            f"/v1/sandboxes/{source['id']}/fork", json={"owner": owner}, headers=headers
        )
        await _refused(forked)
        checked = await client.post(
            "/v1/quota/check", json={"action": "create", "owner": owner}, headers=headers
        )
        await _refused(checked)
        assert len((await client.get("/v1/sandboxes", headers=headers)).json()["items"]) == 1

    @pytest.mark.parametrize("owner", DISGUISED[:4])
    async def test_the_facade_owner_header_must_be_printable(
        self, client: httpx.AsyncClient, owner: str
    ) -> None:
        headers = await factories.team_with_key(client)
        response = await client.get(
            # As a client sends it: UTF-8 bytes (which Starlette reads as Latin-1).
            "/csb/sandbox",
            headers=[*headers.items(), ("X-Corral-Owner", owner.encode())],
        )
        assert response.status_code == 422, response.text
        assert response.json()["success"] is False

    @pytest.mark.parametrize("user", DISGUISED[:4])
    async def test_a_session_user_must_be_printable(
        self, client: httpx.AsyncClient, user: str
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers, start=False)
        for path in ("sessions", "browser-tokens"):
            response = await client.post(
                f"/v1/sandboxes/{sandbox['id']}/{path}",
                json={"user": user, "permission": "read"},
                headers=headers,
            )
            await _refused(response)
        listed = await client.get(f"/v1/sandboxes/{sandbox['id']}/sessions", headers=headers)
        assert listed.json()["items"] == []

    async def test_a_key_issued_outside_http_holds_the_same_rule(self, runtime: Runtime) -> None:
        """`corral admin create-key --owner` reaches the identity service without a schema."""
        async with transaction(runtime.sessions) as session:
            await identity_service.create_team(session, team_id="cli-team", name="cli")
        with pytest.raises(Unprocessable) as refused:
            async with transaction(runtime.sessions) as session:
                await identity_service.issue_key(
                    session,
                    team_id="cli-team",
                    name="ci",
                    scopes=["sandboxes:read"],
                    owner="ali\u200bce",
                )
        assert refused.value.kind == "invalid-owner" and "U+200B" in refused.value.detail
