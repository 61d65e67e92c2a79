"""Browser tokens: issued by a team key for one (user, sandbox, permission), traded by a page
for fresh sessions; everything forged, expired, misdirected or orphaned is refused."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.models import BrowserSession
from app.runtime import Runtime
from app.sessions import tokens
from tests.fixtures import factories

ALLOWED = "http://127.0.0.1:4001"


@pytest.fixture
def settings(settings: Any) -> Any:
    return settings.model_copy(update={"browser_origins": [ALLOWED]})


async def _issue(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    sandbox_id: str,
    *,
    user: str = "alice",
    permission: str = "write",
    ttl_seconds: int = 300,
) -> httpx.Response:
    return await client.post(
        f"/v1/sandboxes/{sandbox_id}/browser-tokens",
        json={"user": user, "permission": permission, "ttl_seconds": ttl_seconds},
        headers=headers,
    )


async def _trade(
    client: httpx.AsyncClient, token: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    return await client.post(
        "/v1/browser/session", json=body, headers={"Authorization": f"Bearer {token}"}
    )


async def _setup(client: httpx.AsyncClient) -> tuple[dict[str, str], dict[str, Any], str]:
    headers = await factories.team_with_key(client)
    sandbox = await factories.sandbox(client, headers)
    issued = await _issue(client, headers, sandbox["id"])
    assert issued.status_code == 201, issued.text
    return headers, sandbox, issued.json()["token"]


def _segments(token: str) -> list[Any]:
    head, body, _ = token.split(".")
    return [json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in (head, body)]


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TestIssue:
    async def test_token_is_bound_to_team_user_sandbox_permission_and_key(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        before = datetime.now(UTC)
        response = await _issue(client, headers, sandbox["id"], permission="read", ttl_seconds=60)
        assert response.status_code == 201, response.text
        body = response.json()
        header, claims = _segments(body["token"])
        assert header == {"alg": "HS256", "kid": header["kid"], "typ": "JWT"}
        assert isinstance(header["kid"], str) and header["kid"]
        assert claims["team"] == "search-ui"
        assert claims["sub"] == "alice"
        assert claims["sbx"] == sandbox["id"]
        assert claims["perm"] == "read"
        # Keys look like crl_<id>_<secret>: the token names the issuing key's id, not its secret.
        assert headers["Authorization"].startswith(f"Bearer crl_{claims['key']}_")
        assert claims["exp"] - claims["iat"] == 60
        expires = datetime.fromisoformat(body["expires_at"])
        assert before + timedelta(seconds=59) <= expires <= before + timedelta(seconds=62)

    async def test_ttl_is_at_most_fifteen_minutes(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        assert (await _issue(client, headers, sandbox["id"], ttl_seconds=901)).status_code == 422
        assert (await _issue(client, headers, sandbox["id"], ttl_seconds=0)).status_code == 422
        assert (await _issue(client, headers, sandbox["id"], ttl_seconds=900)).status_code == 201

    async def test_issuing_follows_scope_owner_binding_and_team(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers, owner="alice")
        reader = await factories.key(client, "search-ui", scopes=["sessions:read"])
        alice = await factories.key(client, "search-ui", owner="alice")
        other = await factories.team_with_key(client, "other")
        assert (await _issue(client, reader, sandbox["id"], permission="write")).status_code == 403
        assert (await _issue(client, reader, sandbox["id"], permission="read")).status_code == 201
        assert (await _issue(client, alice, sandbox["id"], user="bob")).status_code == 403
        assert (await _issue(client, alice, sandbox["id"], user="alice")).status_code == 201
        assert (await _issue(client, other, sandbox["id"])).status_code == 404
        admin = await _issue(client, factories.ADMIN, sandbox["id"])
        assert admin.status_code == 403


class TestTrade:
    async def test_token_buys_a_fresh_session_and_wakes_the_vm(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers, sandbox, token = await _setup(client)
        await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
        first = await _trade(client, token, {"sandbox_id": sandbox["upstream_id"]})
        assert first.status_code == 200, first.text
        assert first.json()["bootupType"] == "RESUME"
        assert first.json()["sandboxId"] == sandbox["upstream_id"]
        assert first.headers["cache-control"] == "no-store"
        second = await _trade(client, token)
        assert second.status_code == 200
        assert second.json()["bootupType"] == "RUNNING"
        assert second.json()["pitcherToken"] != first.json()["pitcherToken"]
        assert second.json()["sessionId"] == first.json()["sessionId"]
        listed = await client.get(f"/v1/sandboxes/{sandbox['id']}/sessions", headers=headers)
        assert [i["via"] for i in listed.json()["items"]] == ["browser", "browser"]

    async def test_expired_token_is_refused(
        self, client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        _, _, token = await _setup(client)
        key = await tokens.signing_key(runtime)
        claims = await tokens.verify(runtime, token, at=datetime.now(UTC))
        past = int((datetime.now(UTC) - timedelta(seconds=1)).timestamp())
        expired = tokens.encode(replace(claims, iat=past - 60, exp=past), key)
        response = await _trade(client, expired)
        assert response.status_code == 401
        assert "expired" in response.json()["detail"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    async def test_token_for_another_sandbox_is_refused(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers, _, token = await _setup(client)
        other = await factories.sandbox(client, headers)
        for hint in (other["id"], other["upstream_id"]):
            response = await _trade(client, token, {"sandbox_id": hint})
            assert response.status_code == 403, response.text
            assert response.json()["type"].endswith("token-sandbox-mismatch")

    async def test_tampered_signature_and_claims_are_refused(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers, _, token = await _setup(client)
        other = await factories.sandbox(client, headers)
        head, body, signature = token.split(".")
        flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
        _, claims = _segments(token)
        moved = _b64({**claims, "sbx": other["id"]})
        for forged in (
            f"{head}.{body}.{flipped}",
            f"{head}.{moved}.{signature}",
            f"{head}.{body}.",
            f"{head}.{body}",
            "not-a-token",
        ):
            response = await _trade(client, forged)
            assert response.status_code == 401, forged

    async def test_alg_none_is_refused(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        _, _, token = await _setup(client)
        _, claims = _segments(token)
        for header in ({"alg": "none", "typ": "JWT"}, {"alg": "None"}, {"alg": "HS512"}):
            for signature in ("", token.split(".")[2]):
                forged = f"{_b64(header)}.{_b64(claims)}.{signature}"
                response = await _trade(client, forged)
                assert response.status_code == 401, header
                assert response.json()["type"].endswith("invalid-browser-token")

    async def test_token_of_a_revoked_key_is_refused(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        _, _, token = await _setup(client)
        kid = _segments(token)[1]["key"]
        assert (await _trade(client, token)).status_code == 200
        revoked = await client.delete(f"/v1/admin/keys/{kid}", headers=factories.ADMIN)
        assert revoked.status_code in (200, 204), revoked.text
        response = await _trade(client, token)
        assert response.status_code == 401
        assert "revoked" in response.json()["detail"]

    async def test_an_api_key_is_not_a_browser_token(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers, _, _ = await _setup(client)
        response = await client.post("/v1/browser/session", headers=headers)
        assert response.status_code == 401
        assert (await client.post("/v1/browser/session")).status_code == 401

    async def test_refused_trades_mint_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        _, _, token = await _setup(client)
        await _trade(client, token + "x")
        await _trade(client, token, {"sandbox_id": "sbx_000000000000"})
        async with runtime.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(BrowserSession)) == 0


class TestCORS:
    async def test_allowed_origin_may_call_the_browser_route(
        self, client: httpx.AsyncClient
    ) -> None:
        preflight = await client.options(
            "/v1/browser/session",
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ALLOWED
        assert "access-control-allow-credentials" not in preflight.headers
        refused = await client.post("/v1/browser/session", headers={"Origin": ALLOWED})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == ALLOWED

    async def test_other_origins_and_other_routes_get_no_cors(
        self, client: httpx.AsyncClient
    ) -> None:
        preflight = await client.options(
            "/v1/browser/session",
            headers={"Origin": "http://127.0.0.1:4002", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 400
        assert "access-control-allow-origin" not in preflight.headers
        api = await client.options(
            "/v1/sandboxes",
            headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in api.headers
        plain = await client.get("/healthz", headers={"Origin": ALLOWED})
        assert "access-control-allow-origin" not in plain.headers

    def test_wildcards_and_paths_are_not_origins(self, settings: Any) -> None:
        from pydantic import ValidationError

        for bad in (["*"], ["https://*.corp"], ["https://app.corp/page"], ["app.corp"]):
            with pytest.raises(ValidationError):
                settings.model_validate({**settings.model_dump(), "browser_origins": bad})
