"""Signing in to the dashboard, the session cookie, CSRF, security headers, and what a team key
may see and do."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.cookies import SimpleCookie
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select

from app.dashboard import cookies
from app.main import create_app
from app.models import AuditEntry
from app.runtime import Runtime
from app.sessions.signing_keys import Root
from tests.conftest import ADMIN_KEY
from tests.dashboard import (
    bearer,
    csrf_of,
    figures,
    parse,
    post_forms,
    sign_in,
    signed_in,
    table,
)
from tests.fixtures import factories

PAGES = [
    "/dashboard",
    "/dashboard?window=30d",
    "/dashboard/teams",
    "/dashboard/teams/search-ui",
    "/dashboard/sandboxes",
    "/dashboard/usage",
    "/dashboard/usage.csv",
    "/dashboard/reconciliation",
    "/dashboard/audit",
    "/dashboard/prices",
    "/dashboard/webhooks",
]
NOT_ACCEPTED = "That key was not accepted: it is malformed, unknown, revoked or expired."


def set_cookies(response: httpx.Response) -> dict[str, dict[str, Any]]:
    """Each Set-Cookie of a response: name → its value and attributes (lower-cased)."""
    found: dict[str, dict[str, Any]] = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name, morsel in jar.items():
            attributes = {k: v for k, v in morsel.items() if v not in ("", False)}
            flags = {part.strip().lower() for part in header.split(";")[1:]}
            found[name] = {
                "value": morsel.value,
                **attributes,
                "secure": "secure" in flags,
                "httponly": "httponly" in flags,
            }
    return found


def claims_of(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload)


async def audit_rows(runtime: Runtime) -> int:
    async with runtime.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


class TestSignIn:
    async def test_the_form_has_a_labelled_key_field_and_a_token(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/dashboard/login")
        assert response.status_code == 200
        page = parse(response.text)
        form = page.by_id("login-form")
        assert form.attrs["method"] == "post" and form.attrs["action"] == "/dashboard/login"
        field = page.by_id("api-key")
        assert field.attrs["name"] == "api_key" and field.attrs["type"] == "password"
        assert page.find("label", for_="api-key").text == "API key"
        assert form.find("input", name="csrf_token").attrs["value"]
        login = set_cookies(response)[cookies.LOGIN_COOKIE]
        assert login["httponly"] and login["samesite"].lower() == "strict"
        assert login["path"] == "/dashboard"

    @pytest.mark.parametrize("path", PAGES)
    async def test_every_page_sends_a_stranger_to_the_sign_in_page(
        self, client: httpx.AsyncClient, path: str
    ) -> None:
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard/login"

    async def test_the_live_figures_answer_a_stranger_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/dashboard/live/overview")
        assert response.status_code == 401
        assert response.json() == {"error": "signed out"}

    async def test_an_admin_key_gets_a_signed_session_that_never_holds_the_key(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await sign_in(client, ADMIN_KEY)
        assert response.status_code == 303 and response.headers["location"] == "/dashboard"
        cookie = set_cookies(response)[cookies.COOKIE]
        assert cookie["httponly"] and not cookie["secure"]
        assert cookie["samesite"].lower() == "strict"
        assert cookie["path"] == "/dashboard"
        assert cookie["max-age"] == str(8 * 3600)
        assert ADMIN_KEY not in cookie["value"]
        header, claims = claims_of(cookie["value"])
        assert header["alg"] == "HS256" and header["kid"]
        assert claims["sub"] == "env-admin"
        assert claims["exp"] - claims["iat"] == 8 * 3600
        assert len(claims["csrf"]) >= 24
        assert ADMIN_KEY not in json.dumps(claims)
        # The pre-session cookie has done its work.
        assert set_cookies(response)[cookies.LOGIN_COOKIE]["max-age"] == "0"
        overview = await client.get("/dashboard")
        assert overview.status_code == 200
        assert ADMIN_KEY not in overview.text

    async def test_a_team_key_signs_in_without_its_secret_reaching_a_page(
        self, client: httpx.AsyncClient
    ) -> None:
        key = bearer(await factories.team_with_key(client, "search-ui"))
        response = await sign_in(client, key)
        assert response.status_code == 303
        cookie = set_cookies(response)[cookies.COOKIE]["value"]
        _, claims = claims_of(cookie)
        key_id, secret = key.split("_")[1], key.split("_", 2)[2]
        assert claims["sub"] == key_id
        assert secret not in cookie
        for path in ("/dashboard", "/dashboard/teams/search-ui", "/dashboard/usage"):
            assert secret not in (await client.get(path)).text

    async def test_over_https_the_cookie_is_secure(self, runtime: Runtime) -> None:
        app = create_app(runtime=runtime)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://corral"
        ) as https:
            response = await sign_in(https, ADMIN_KEY)
        assert response.status_code == 303
        assert set_cookies(response)[cookies.COOKIE]["secure"]

    async def test_the_session_lasts_the_configured_hours(
        self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CORRAL_DASHBOARD_SESSION_HOURS", "2")
        app = create_app(runtime=runtime)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://corral"
        ) as http:
            response = await sign_in(http, ADMIN_KEY)
        cookie = set_cookies(response)[cookies.COOKIE]
        assert cookie["max-age"] == "7200"
        _, claims = claims_of(cookie["value"])
        assert claims["exp"] - claims["iat"] == 7200

    @pytest.mark.parametrize("kind", ["malformed", "unknown", "wrong-secret", "revoked", "expired"])
    async def test_a_refused_key_gets_one_401_that_tells_nothing(
        self, client: httpx.AsyncClient, admin: dict[str, str], sim: httpx.AsyncClient, kind: str
    ) -> None:
        await factories.team(client, "search-ui")
        made = await client.post(
            "/v1/admin/teams/search-ui/keys",
            json={"name": "k", "scopes": ["sandboxes:read", "usage:read"]},
            headers=admin,
        )
        issued = made.json()
        if kind == "revoked":
            await client.delete(f"/v1/admin/keys/{issued['id']}", headers=admin)
        if kind == "expired":
            expiring = await client.post(
                "/v1/admin/teams/search-ui/keys",
                json={
                    "name": "soon",
                    "scopes": ["sandboxes:read", "usage:read"],
                    "expires_at": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
                },
                headers=admin,
            )
            issued = expiring.json()
            await client.post("/v1/admin/clock/advance", json={"seconds": 600}, headers=admin)
        key = {
            "malformed": "not a key",
            "unknown": "crl_zzzzzzzzzzzz_" + "s" * 43,
            "wrong-secret": f"crl_{issued['id']}_" + "s" * 43,
            "revoked": issued["key"],
            "expired": issued["key"],
        }[kind]
        response = await sign_in(client, key)
        assert response.status_code == 401
        page = parse(response.text)
        assert page.by_id("login-error").text == NOT_ACCEPTED
        assert cookies.COOKIE not in set_cookies(response)
        assert key not in response.text
        # A fresh form to try again.
        assert page.by_id("api-key").attrs["name"] == "api_key"

    async def test_a_team_key_without_the_read_scopes_is_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        await factories.team(client, "search-ui")
        key = bearer(await factories.key(client, "search-ui", scopes=["sandboxes:read"]))
        response = await sign_in(client, key)
        assert response.status_code == 403
        assert "usage:read" in parse(response.text).by_id("login-error").text
        assert cookies.COOKIE not in set_cookies(response)

    async def test_a_sign_in_without_its_token_is_refused(self, client: httpx.AsyncClient) -> None:
        await client.get("/dashboard/login")
        for data in ({"api_key": ADMIN_KEY}, {"api_key": ADMIN_KEY, "csrf_token": "forged"}):
            response = await client.post("/dashboard/login", data=data)
            assert response.status_code == 403
            assert cookies.COOKIE not in set_cookies(response)

    async def test_a_sign_in_token_works_only_with_its_own_cookie(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = csrf_of((await client.get("/dashboard/login")).text)
        # Another browser's form (another nonce) replaces the cookie.
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runtime=runtime)),
            base_url="http://corral",
        ) as other:
            other_nonce = (await other.get("/dashboard/login")).cookies[cookies.LOGIN_COOKIE]
        client.cookies.set(cookies.LOGIN_COOKIE, other_nonce, path="/dashboard")
        response = await client.post(
            "/dashboard/login", data={"api_key": ADMIN_KEY, "csrf_token": token}
        )
        assert response.status_code == 403

    async def test_a_signed_in_visitor_of_the_form_goes_to_the_overview(
        self, client: httpx.AsyncClient
    ) -> None:
        await signed_in(client, ADMIN_KEY)
        response = await client.get("/dashboard/login")
        assert response.status_code == 303 and response.headers["location"] == "/dashboard"


class TestSession:
    async def test_a_revoked_key_is_signed_out_at_its_next_request(
        self, client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        key = bearer(await factories.team_with_key(client, "search-ui"))
        await signed_in(client, key)
        key_id = key.split("_")[1]
        assert (await client.delete(f"/v1/admin/keys/{key_id}", headers=admin)).status_code == 200
        response = await client.get("/dashboard")
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard/login"
        assert set_cookies(response)[cookies.COOKIE]["max-age"] == "0"

    async def test_a_key_that_expires_ends_its_session(
        self, client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        await factories.team(client, "search-ui")
        issued = await client.post(
            "/v1/admin/teams/search-ui/keys",
            json={
                "name": "soon",
                "scopes": ["sandboxes:read", "usage:read"],
                "expires_at": (datetime.now(UTC) + timedelta(minutes=30)).isoformat(),
            },
            headers=admin,
        )
        await signed_in(client, issued.json()["key"])
        await client.post("/v1/admin/clock/advance", json={"seconds": 3600}, headers=admin)
        assert (await client.get("/dashboard")).status_code == 303

    async def test_a_deleted_team_signs_its_keys_out(
        self, client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        key = bearer(await factories.team_with_key(client, "search-ui"))
        await signed_in(client, key)
        assert (await client.delete("/v1/admin/teams/search-ui", headers=admin)).status_code == 204
        assert (await client.get("/dashboard/teams/search-ui")).status_code == 303

    async def test_a_tampered_cookie_is_no_session(self, client: httpx.AsyncClient) -> None:
        response = await sign_in(client, ADMIN_KEY)
        token = set_cookies(response)[cookies.COOKIE]["value"]
        _, claims = claims_of(token)
        forged_claims = {**claims, "sub": "someone-else"}
        body = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode()
        forged = ".".join([token.split(".")[0], body, token.split(".")[2]])
        client.cookies.set(cookies.COOKIE, forged, path="/dashboard")
        assert (await client.get("/dashboard")).status_code == 303

    async def test_a_cookie_signed_by_another_root_or_algorithm_is_no_session(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await sign_in(client, ADMIN_KEY)
        _, claims = claims_of(set_cookies(response)[cookies.COOKIE]["value"])
        stranger = cookies.session_key(Root("admin-key", b"another root secret " * 3))
        by_stranger = jwt.encode(
            claims, stranger.secret, algorithm="HS256", headers={"kid": stranger.kid}
        )
        unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": stranger.kid})  # type: ignore[arg-type]
        for token in (by_stranger, unsigned):
            client.cookies.set(cookies.COOKIE, token, path="/dashboard")
            assert (await client.get("/dashboard")).status_code == 303

    async def test_signing_out_ends_the_session(self, client: httpx.AsyncClient) -> None:
        csrf = await signed_in(client, ADMIN_KEY)
        response = await client.post("/dashboard/logout", data={"csrf_token": csrf})
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard/login"
        assert set_cookies(response)[cookies.COOKIE]["max-age"] == "0"
        assert (await client.get("/dashboard")).status_code == 303

    async def test_signing_out_needs_the_token(self, client: httpx.AsyncClient) -> None:
        await signed_in(client, ADMIN_KEY)
        response = await client.post("/dashboard/logout", data={"csrf_token": "nope"})
        assert response.status_code == 403
        assert cookies.COOKIE not in set_cookies(response)
        assert (await client.get("/dashboard")).status_code == 200


class TestCSRF:
    async def test_a_change_without_the_right_token_is_403_and_changes_nothing(
        self, client: httpx.AsyncClient, admin: dict[str, str], runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client, "search-ui", max_concurrent=3)
        sandbox = await factories.sandbox(client, headers, owner="alice@corp")
        key_id = bearer(headers).split("_")[1]
        csrf = await signed_in(client, ADMIN_KEY)
        before = await audit_rows(runtime)
        posts = [
            ("/dashboard/teams/search-ui/limits", {"max_concurrent": "9", "guaranteed": "0"}),
            ("/dashboard/teams/search-ui/keys", {"name": "x", "scopes": "sandboxes:read"}),
            (f"/dashboard/teams/search-ui/keys/{key_id}/revoke", {}),
            (f"/dashboard/teams/search-ui/keys/{key_id}/rotate", {"overlap_seconds": "0"}),
            (f"/dashboard/sandboxes/{sandbox['id']}/hibernate", {}),
            (f"/dashboard/sandboxes/{sandbox['id']}/delete", {}),
            ("/dashboard/prices/plan", {"plan": "build"}),
        ]
        for path, data in posts:
            for token in (None, "wrong", csrf[:-2] + "xx"):
                sent = data if token is None else {**data, "csrf_token": token}
                response = await client.post(path, data=sent)
                assert response.status_code == 403, (path, token, response.text)
                assert parse(response.text).find("h1").text == "Form expired"
        # A JSON body (no form) carries no token either.
        response = await client.post("/dashboard/prices/plan", json={"csrf_token": csrf})
        assert response.status_code == 403
        assert await audit_rows(runtime) == before
        team = (await client.get("/v1/admin/teams/search-ui", headers=admin)).json()
        assert team["max_concurrent"] == 3
        assert (await client.get(f"/v1/admin/keys/{key_id}", headers=admin)).json()[
            "revoked_at"
        ] is None
        assert (await client.get(f"/v1/sandboxes/{sandbox['id']}", headers=headers)).json()[
            "state"
        ] == "running"
        assert (await client.get("/v1/admin/plan", headers=admin)).json()["plan"] == "scale"

    async def test_every_form_carries_the_session_token(self, client: httpx.AsyncClient) -> None:
        headers = await factories.team_with_key(client, "search-ui")
        sandbox = await factories.sandbox(client, headers)
        csrf = await signed_in(client, ADMIN_KEY)
        for path in (
            "/dashboard",
            "/dashboard/teams/search-ui",
            f"/dashboard/sandboxes/{sandbox['id']}/confirm?action=delete",
            "/dashboard/prices",
        ):
            page = parse((await client.get(path)).text)
            forms = post_forms(page)
            assert forms, path
            for form in forms:
                assert form.find("input", name="csrf_token").attrs["value"] == csrf, path


class TestHeaders:
    async def test_pages_forbid_framing_inline_code_and_caching(
        self, client: httpx.AsyncClient
    ) -> None:
        await factories.team_with_key(client, "search-ui")
        await signed_in(client, ADMIN_KEY)
        for path in [p for p in PAGES if not p.endswith(".csv")] + ["/dashboard/login"]:
            response = await client.get(path)
            assert response.status_code in (200, 303), path
            csp = response.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "script-src 'self'" in csp and "style-src 'self'" in csp
            assert "unsafe-inline" not in csp
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["cache-control"] == "no-store"
            if response.status_code != 200:
                continue
            page = parse(response.text)
            # No inline script or style: every script is a file of Corral's.
            for script in page.find_all("script"):
                assert script.attrs["src"].startswith("/dashboard/static/"), path
                assert not script.text, path
            assert not page.find_all("style"), path
            assert not [n for n in page.walk() if "style" in n.attrs], path
            for link in page.find_all("link"):
                assert link.attrs["href"].startswith("/dashboard/static/"), path

    async def test_static_files_are_served_by_corral_and_may_be_cached(
        self, client: httpx.AsyncClient
    ) -> None:
        for name, kind in (
            ("dashboard.js", "javascript"),
            ("dashboard.css", "text/css"),
            ("vendor/uPlot.iife.min.js", "javascript"),
            ("vendor/uPlot.min.css", "text/css"),
        ):
            response = await client.get(f"/dashboard/static/{name}")
            assert response.status_code == 200, name
            assert kind in response.headers["content-type"]
            assert response.headers["cache-control"] == "public, max-age=86400"
            assert response.headers["x-content-type-options"] == "nosniff"

    async def test_the_dashboard_is_not_in_the_api_document(
        self, client: httpx.AsyncClient
    ) -> None:
        document = (await client.get("/openapi.json")).json()
        assert not [path for path in document["paths"] if path.startswith("/dashboard")]


class TestTeamKey:
    async def test_sees_its_own_team_read_only(
        self, client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        mine = await factories.team_with_key(client, "search-ui", max_concurrent=4)
        theirs = await factories.team_with_key(client, "billing")
        own = await factories.sandbox(client, mine, owner="alice@corp")
        await factories.sandbox(client, theirs, owner="bob@corp")
        await signed_in(client, bearer(mine))
        ok = [
            "/dashboard",
            "/dashboard/teams",
            "/dashboard/teams/search-ui",
            "/dashboard/sandboxes",
            f"/dashboard/sandboxes/{own['id']}",
            "/dashboard/usage?group_by=team",
        ]
        for path in ok:
            response = await client.get(path)
            assert response.status_code == 200, path
            page = parse(response.text)
            # No form that changes anything: signing out is the only POST.
            actions = [form.attrs["action"] for form in post_forms(page)]
            assert actions == ["/dashboard/logout"], (path, actions)
            assert "billing" not in response.text, path
        assert table(parse((await client.get("/dashboard/teams")).text), "teams-table")[0][0] == (
            "search-ui"
        )
        listed = table(parse((await client.get("/dashboard/sandboxes")).text), "sandboxes-table")
        assert [row[0] for row in listed] == [own["id"]]
        nav = parse((await client.get("/dashboard")).text).find("nav", aria_label="Main")
        assert [a.text for a in nav.find_all("a")] == ["Overview", "Team", "Sandboxes", "Usage"]

    async def test_other_teams_pages_are_404_and_admin_pages_403(
        self, client: httpx.AsyncClient
    ) -> None:
        mine = await factories.team_with_key(client, "search-ui")
        theirs = await factories.team_with_key(client, "billing")
        other = await factories.sandbox(client, theirs)
        await signed_in(client, bearer(mine))
        for path in (
            "/dashboard/teams/billing",
            "/dashboard/teams/no-such-team",
            f"/dashboard/sandboxes/{other['id']}",
        ):
            assert (await client.get(path)).status_code == 404, path
        for path in (
            "/dashboard/reconciliation",
            "/dashboard/audit",
            "/dashboard/prices",
            "/dashboard/webhooks",
            f"/dashboard/sandboxes/{other['id']}/confirm?action=hibernate",
        ):
            assert (await client.get(path)).status_code == 403, path
        # The usage of another team is refused as the API refuses it.
        assert (await client.get("/dashboard/usage.csv?team=billing")).status_code == 403

    async def test_every_post_is_403_and_changes_nothing(
        self, client: httpx.AsyncClient, admin: dict[str, str], runtime: Runtime
    ) -> None:
        mine = await factories.team_with_key(client, "search-ui", max_concurrent=4)
        own = await factories.sandbox(client, mine)
        key_id = bearer(mine).split("_")[1]
        csrf = await signed_in(client, bearer(mine))
        before = await audit_rows(runtime)
        for path, data in (
            ("/dashboard/teams/search-ui/limits", {"max_concurrent": "40", "guaranteed": "0"}),
            ("/dashboard/teams/search-ui/keys", {"name": "mine", "scopes": "usage:read"}),
            (f"/dashboard/teams/search-ui/keys/{key_id}/rotate", {"overlap_seconds": "0"}),
            (f"/dashboard/teams/search-ui/keys/{key_id}/revoke", {}),
            (f"/dashboard/sandboxes/{own['id']}/hibernate", {}),
            (f"/dashboard/sandboxes/{own['id']}/shutdown", {}),
            (f"/dashboard/sandboxes/{own['id']}/delete", {}),
            ("/dashboard/prices/plan", {"plan": "build"}),
            ("/dashboard/prices/versions", {"credit_usd": "1"}),
        ):
            response = await client.post(path, data={**data, "csrf_token": csrf})
            assert response.status_code == 403, (path, response.text)
        assert await audit_rows(runtime) == before
        assert (await client.get("/v1/admin/teams/search-ui", headers=admin)).json()[
            "max_concurrent"
        ] == 4
        assert (await client.get(f"/v1/sandboxes/{own['id']}", headers=mine)).json()[
            "state"
        ] == "running"
        # Still signed in: the key was not revoked.
        assert (await client.get("/dashboard")).status_code == 200

    async def test_its_overview_is_its_quota(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        mine = await factories.team_with_key(client, "search-ui", max_concurrent=4)
        theirs = await factories.team_with_key(client, "billing")
        for headers in (mine, mine, theirs):
            await factories.sandbox(client, headers)
        await sim.post("/_simulator/clock/freeze")
        await signed_in(client, bearer(mine))
        shown = figures(parse((await client.get("/dashboard")).text))
        quota = (await client.get("/v1/quota", headers=mine)).json()
        assert shown["live"] == str(quota["usage"]["live"]) == "2"
        assert shown["running"] == str(quota["usage"]["running"])
        assert shown["starting"] == str(quota["usage"]["starting"])
        assert shown["effective-limit"] == str(quota["org"]["effective_limit"])
        assert shown["headroom"] == str(quota["org"]["headroom"])
        assert Decimal(shown["burn-rate"]) == Decimal(quota["usage"]["burn_credits_per_hour"])
        assert Decimal(shown["month-spend"]) == Decimal(quota["usage"]["month_to_date_credits"])
        assert "unmanaged" not in shown
        live = (await client.get("/dashboard/live/overview")).json()["figures"]
        assert live["live"]["value"] == "2"
