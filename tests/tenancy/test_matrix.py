"""The tenancy matrix: every route of the app by every kind of caller, one exact status each.

The rows come from `app.routes`; each route must be classified in `ROUTES` (what kind of route
it is, the scope it needs, the body of a request that succeeds), so a new route fails
`test_every_route_is_classified` until someone decides who may call it. The columns:

    none      no Authorization header                     401
    revoked   a revoked key of team A                     401
    team_a    team A, every scope                         the route's success
    bound_x   team A, bound to owner X                    404 on Y's sandbox (DESIGN §15)
    no_scope  team A, every scope but the route's         403
    team_b    team B, every scope                         404 on A's sandbox
    admin     an admin key                                the admin's answer (some routes act
                                                          for one team: 403 or 422)

Path ids are those of a sandbox of team A owned by Y (a fresh one for each cell that may
change it), team A, and a spare key of team A."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import select

from app.db import transaction
from app.main import create_app
from app.models import WebhookDelivery
from app.runtime import Runtime
from app.settings import Settings
from app.webhooks.events import Event, emit_many
from tests.fixtures import factories
from tests.fixtures.factories import ADMIN, ALL_TEAM_SCOPES

CALLERS = ("none", "revoked", "team_a", "bound_x", "no_scope", "team_b", "admin")
OWNER_Y, OWNER_X = "y@corp", "x@corp"
TIERS = ["Pico", "Nano", "Micro", "Small", "Medium", "Large", "XLarge"]
# FastAPI's own pages, not Corral's API.
DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


@dataclass(frozen=True)
class Route:
    """`kind` says who may call the route, `scope` what a team key needs:

    sandbox   team-scoped, a path id of team A's sandbox (native or facade)
    team      team-scoped, no path id: every team key gets its own answer
    admin     admin keys only
    public    anyone, no key needed
    browser   a browser token, never an API key
    meta      the facade's /meta/info: a key is optional, but checked when sent
    """

    kind: str
    # The scope a team key needs; the `no_scope` key lacks it (and any scope that covers it).
    scope: str | tuple[str, ...] | None
    ok: int
    body: Any = None
    # Exceptions to the kind's column, per caller.
    cells: dict[str, int] = field(default_factory=dict)
    # The success cells change the sandbox (or the key, or the team): a fresh one for each.
    mutates: bool = False


R, W = "sandboxes:read", "sandboxes:write"
TEAM_KEY_REQUIRED = 403
FACADE = {"admin": TEAM_KEY_REQUIRED}
WEBHOOK = {"url": "https://hooks.example.com/in", "events": ["org.plan_full"]}

ROUTES: dict[tuple[str, str], Route] = {
    # --- native sandboxes ---------------------------------------------------------------
    ("POST", "/v1/sandboxes"): Route("team", W, 201, {"title": "m"}, {"admin": 422}, mutates=True),
    ("GET", "/v1/sandboxes"): Route("team", R, 200),
    ("GET", "/v1/sandboxes/{sandbox_id}"): Route("sandbox", R, 200),
    ("PATCH", "/v1/sandboxes/{sandbox_id}"): Route(
        "sandbox", W, 200, {"title": "renamed"}, mutates=True
    ),
    ("POST", "/v1/sandboxes/{sandbox_id}/start"): Route("sandbox", W, 200, mutates=True),
    ("POST", "/v1/sandboxes/{sandbox_id}/hibernate"): Route("sandbox", W, 200, mutates=True),
    ("POST", "/v1/sandboxes/{sandbox_id}/shutdown"): Route("sandbox", W, 200, mutates=True),
    ("POST", "/v1/sandboxes/{sandbox_id}/restart"): Route("sandbox", W, 200, mutates=True),
    ("POST", "/v1/sandboxes/{sandbox_id}/fork"): Route("sandbox", W, 201, {}, mutates=True),
    ("DELETE", "/v1/sandboxes/{sandbox_id}"): Route("sandbox", W, 200, mutates=True),
    ("GET", "/v1/sandboxes/{sandbox_id}/events"): Route("sandbox", R, 200),
    ("GET", "/v1/sandboxes/{sandbox_id}/cost"): Route("sandbox", R, 200),
    # Minted for X, so that the bound key's refusal is the sandbox's, not the user's.
    ("POST", "/v1/sandboxes/{sandbox_id}/sessions"): Route(
        "sandbox",
        "sessions:write",
        201,
        {"user": OWNER_X, "permission": "write"},
        # An admin holds every scope and may mint on any sandbox, for the user it names.
        {"admin": 201},
        mutates=True,
    ),
    # Session records are read with either sessions scope (write covers read).
    ("GET", "/v1/sandboxes/{sandbox_id}/sessions"): Route(
        "sandbox", ("sessions:read", "sessions:write"), 200
    ),
    ("POST", "/v1/sandboxes/{sandbox_id}/browser-tokens"): Route(
        "sandbox",
        "sessions:write",
        201,
        {"user": OWNER_X, "permission": "write"},
        {"admin": TEAM_KEY_REQUIRED},
    ),
    ("POST", "/v1/browser/session"): Route("browser", None, 401, {}),
    # --- quota and usage ----------------------------------------------------------------
    ("POST", "/v1/quota/check"): Route("team", R, 200, {"action": "create"}, {"admin": 422}),
    ("GET", "/v1/quota"): Route("team", R, 200, cells={"admin": 422}),
    ("GET", "/v1/usage"): Route("team", "usage:read", 200),
    # --- admin ----------------------------------------------------------------------------
    ("POST", "/v1/admin/teams"): Route("admin", None, 201, {"id": "fresh", "name": "n"}),
    ("GET", "/v1/admin/teams"): Route("admin", None, 200),
    ("GET", "/v1/admin/teams/{team}"): Route("admin", None, 200),
    ("PATCH", "/v1/admin/teams/{team}"): Route("admin", None, 200, {"name": "renamed"}),
    ("DELETE", "/v1/admin/teams/{team}"): Route("admin", None, 204, mutates=True),
    ("POST", "/v1/admin/teams/{team}/keys"): Route(
        "admin", None, 201, {"name": "k", "scopes": [R]}
    ),
    ("GET", "/v1/admin/teams/{team}/keys"): Route("admin", None, 200),
    ("POST", "/v1/admin/keys/{key_id}/rotate"): Route("admin", None, 201, {}, mutates=True),
    ("GET", "/v1/admin/keys/{key_id}"): Route("admin", None, 200),
    ("DELETE", "/v1/admin/keys/{key_id}"): Route("admin", None, 200, mutates=True),
    ("GET", "/v1/admin/plan"): Route("admin", None, 200),
    ("PUT", "/v1/admin/plan"): Route("admin", None, 200, {"plan": "scale"}),
    ("GET", "/v1/admin/prices"): Route("admin", None, 200),
    ("PUT", "/v1/admin/prices"): Route(
        "admin",
        None,
        201,
        {"credits_per_hour": {t: str(5 * 2**n) for n, t in enumerate(TIERS)}, "credit_usd": "0.01"},
    ),
    ("GET", "/v1/admin/reconciliation"): Route("admin", None, 200),
    ("POST", "/v1/admin/reconciliation/run"): Route("admin", None, 200),
    ("POST", "/v1/admin/clock/advance"): Route("admin", None, 200, {"seconds": 1}),
    ("GET", "/v1/admin/audit"): Route("admin", None, 200),
    ("GET", "/v1/admin/browser-token-keys"): Route("admin", None, 200),
    ("POST", "/v1/admin/browser-token-keys/rotate"): Route("admin", None, 201),
    ("GET", "/v1/admin/fork-templates"): Route("admin", None, 200),
    ("PUT", "/v1/admin/fork-templates/{upstream_id}"): Route("admin", None, 201, mutates=True),
    ("DELETE", "/v1/admin/fork-templates/{upstream_id}"): Route("admin", None, 204, mutates=True),
    ("GET", "/v1/admin/teams/{team}/fork-templates"): Route("admin", None, 200),
    ("PUT", "/v1/admin/teams/{team}/fork-templates/{upstream_id}"): Route(
        "admin", None, 201, mutates=True
    ),
    ("DELETE", "/v1/admin/teams/{team}/fork-templates/{upstream_id}"): Route(
        "admin", None, 204, mutates=True
    ),
    # --- operations -----------------------------------------------------------------------
    ("GET", "/healthz"): Route("public", None, 200),
    ("GET", "/readyz"): Route("public", None, 200),
    # Closed by default: with no metrics token configured, admin keys only.
    ("GET", "/metrics"): Route("admin", None, 200),
    # --- webhooks -------------------------------------------------------------------------
    ("POST", "/v1/admin/webhooks"): Route("admin", None, 201, WEBHOOK),
    ("GET", "/v1/admin/webhooks"): Route("admin", None, 200),
    ("GET", "/v1/admin/webhooks/{webhook_id}"): Route("admin", None, 200),
    ("PATCH", "/v1/admin/webhooks/{webhook_id}"): Route("admin", None, 200, {"description": "d"}),
    ("DELETE", "/v1/admin/webhooks/{webhook_id}"): Route("admin", None, 204, mutates=True),
    ("POST", "/v1/admin/webhooks/{webhook_id}/rotate-secret"): Route("admin", None, 200),
    ("GET", "/v1/admin/webhooks/{webhook_id}/deliveries"): Route("admin", None, 200),
    ("POST", "/v1/admin/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): Route(
        "admin", None, 200
    ),
    # --- the SDK facade -------------------------------------------------------------------
    # A fork source the caller may not fork is refused by the fork-source rule (DESIGN §15),
    # the same answer as for an id nobody knows, so it reveals nothing.
    ("POST", "/csb/sandbox/{upstream_id}/fork"): Route(
        "sandbox", W, 201, {}, {**FACADE, "bound_x": 403, "team_b": 403}, mutates=True
    ),
    ("GET", "/csb/sandbox"): Route("team", R, 200, cells=FACADE),
    ("GET", "/csb/sandbox/{upstream_id}"): Route("sandbox", R, 200, cells=FACADE),
    ("POST", "/csb/vm/{upstream_id}/start"): Route("sandbox", W, 200, {}, FACADE, mutates=True),
    ("POST", "/csb/vm/{upstream_id}/hibernate"): Route(
        "sandbox", W, 200, cells=FACADE, mutates=True
    ),
    ("POST", "/csb/vm/{upstream_id}/shutdown"): Route(
        "sandbox", W, 200, cells=FACADE, mutates=True
    ),
    ("DELETE", "/csb/vm/{upstream_id}"): Route("sandbox", W, 200, cells=FACADE, mutates=True),
    ("POST", "/csb/vm/{upstream_id}/update_specs"): Route(
        "sandbox", W, 200, {"tier": "Small"}, FACADE, mutates=True
    ),
    ("PUT", "/csb/vm/{upstream_id}/specs"): Route(
        "sandbox", W, 200, {"tier": "Small"}, FACADE, mutates=True
    ),
    ("PUT", "/csb/vm/{upstream_id}/hibernation_timeout"): Route(
        "sandbox", W, 200, {"hibernation_timeout_seconds": 600}, FACADE, mutates=True
    ),
    ("GET", "/csb/vm/running"): Route("team", R, 200, cells=FACADE),
    ("POST", "/csb/vm/{upstream_id}/sessions"): Route(
        "sandbox",
        "sessions:write",
        200,
        {"session_id": "matrix", "permission": "write"},
        FACADE,
        mutates=True,
    ),
    ("POST", "/csb/sandbox/{upstream_id}/tokens"): Route("sandbox", W, 201, {}, FACADE),
    ("GET", "/csb/sandbox/{upstream_id}/tokens"): Route("sandbox", W, 201, cells=FACADE),
    ("PATCH", "/csb/sandbox/{upstream_id}/tokens/{token_id}"): Route(
        "sandbox", W, 201, {"expires_at": None}, FACADE, mutates=True
    ),
    ("DELETE", "/csb/sandbox/{upstream_id}/tokens"): Route(
        "sandbox", W, 200, cells=FACADE, mutates=True
    ),
    ("GET", "/csb/meta/info"): Route("meta", None, 200, cells=FACADE),
}


def expected(route: Route, caller: str) -> int:
    if caller in route.cells:
        return route.cells[caller]
    if route.kind == "public":
        return route.ok
    if route.kind == "browser":
        return 401
    if caller in ("none", "revoked"):
        return 200 if (route.kind == "meta" and caller == "none") else 401
    if route.kind == "admin":
        return route.ok if caller == "admin" else 403
    if caller == "no_scope":
        return 403 if route.scope is not None else route.ok
    if route.kind == "sandbox" and caller in ("bound_x", "team_b"):
        return 404
    return route.ok


def app_routes(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings)
    found = set()
    for context in iter_route_contexts(app.routes):
        if context.path in DOCS:
            continue
        for method in context.methods or ():
            if method != "HEAD":
                found.add((method, context.path))
    return found


def test_every_route_is_classified(settings: Settings) -> None:
    routes = app_routes(settings)
    assert sorted(routes - ROUTES.keys()) == [], "classify these routes in ROUTES"
    assert sorted(ROUTES.keys() - routes) == [], "these routes no longer exist"


@dataclass
class World:
    http: httpx.AsyncClient
    callers: dict[str, dict[str, str]]
    team_a: str
    sandbox: dict[str, Any]
    key_id: str
    made: int = 0
    # For records no route writes directly (a webhook delivery is written by its cause).
    runtime: Runtime | None = None

    async def fresh_sandbox(self) -> dict[str, Any]:
        return await factories.sandbox(
            self.http, self.callers["team_a"], title="matrix", owner=OWNER_Y
        )

    async def fresh_key(self) -> str:
        response = await self.http.post(
            f"/v1/admin/teams/{self.team_a}/keys",
            json={"name": "spare", "scopes": [R]},
            headers=ADMIN,
        )
        assert response.status_code == 201, response.text
        key_id: str = response.json()["id"]
        return key_id

    async def fresh_team(self) -> str:
        self.made += 1
        team = f"matrix-{self.made}"
        await factories.team(self.http, team)
        return team


async def world(http: httpx.AsyncClient, scope: str | tuple[str, ...] | None) -> World:
    await factories.team(http, "team-a")
    await factories.team(http, "team-b")
    revoked_id = (
        await http.post(
            "/v1/admin/teams/team-a/keys", json={"name": "r", "scopes": [R]}, headers=ADMIN
        )
    ).json()
    assert (await http.delete(f"/v1/admin/keys/{revoked_id['id']}", headers=ADMIN)).is_success
    dropped = (scope,) if isinstance(scope, str) else scope or ()
    lacking = [s for s in ALL_TEAM_SCOPES if s not in dropped]
    callers = {
        "none": {},
        "revoked": {"Authorization": f"Bearer {revoked_id['key']}"},
        "team_a": await factories.key(http, "team-a"),
        "bound_x": await factories.key(http, "team-a", owner=OWNER_X),
        "no_scope": await factories.key(http, "team-a", scopes=lacking),
        "team_b": await factories.key(http, "team-b"),
        "admin": ADMIN,
    }
    sandbox = await factories.sandbox(http, callers["team_a"], title="matrix", owner=OWNER_Y)
    spare = World(http, callers, "team-a", sandbox, "")
    return World(http, callers, "team-a", sandbox, await spare.fresh_key())


PathFiller = Callable[[World, bool], Awaitable[dict[str, str]]]


async def path_ids(w: World, path: str, fresh: bool) -> dict[str, str]:
    """The ids for `path`: fresh records when the cell may change them."""
    sandbox = await w.fresh_sandbox() if fresh and "_id}" in path else w.sandbox
    ids = {"sandbox_id": sandbox["id"], "upstream_id": sandbox["upstream_id"], "team": w.team_a}
    if "{key_id}" in path:
        ids["key_id"] = await w.fresh_key() if fresh else w.key_id
    if path == "/v1/admin/teams/{team}" and fresh:
        ids["team"] = await w.fresh_team()
    if path.startswith("/v1/admin/") and "fork-templates/{upstream_id}" in path:
        ids["upstream_id"] = f"tpl{w.made}x"
        w.made += 1
        if path.startswith("/v1/admin/fork-templates") or "{team}" in path:
            await _allow_template(w, path, ids)
    if "{webhook_id}" in path:
        ids.update(await _webhook(w))
    if "{token_id}" in path:
        created = await w.http.post(
            f"/csb/sandbox/{ids['upstream_id']}/tokens", json={}, headers=w.callers["team_a"]
        )
        assert created.status_code == 201, created.text
        ids["token_id"] = created.json()["data"]["token"]["token_id"]
    return ids


async def _webhook(w: World) -> dict[str, str]:
    """A fresh endpoint with one delivery (of an event written as its causes write them)."""
    created = await w.http.post("/v1/admin/webhooks", json=WEBHOOK, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert w.runtime is not None
    async with transaction(w.runtime.sessions) as session:
        await emit_many(session, [Event(type="org.plan_full", data={})])
        delivery_id = await session.scalar(
            select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == created.json()["id"])
        )
    return {"webhook_id": created.json()["id"], "delivery_id": str(delivery_id)}


async def _allow_template(w: World, path: str, ids: dict[str, str]) -> None:
    # A template to disallow must be allowed first (a PUT of a new one is the 201 cell).
    if not path.startswith("/v1/admin"):
        return
    response = await w.http.put(path.format(**ids), headers=ADMIN)
    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize("method,path", sorted(ROUTES), ids=[f"{m} {p}" for m, p in sorted(ROUTES)])
async def test_route(client: httpx.AsyncClient, runtime: Runtime, method: str, path: str) -> None:
    route = ROUTES[(method, path)]
    w = await world(client, route.scope)
    w.runtime = runtime
    got: dict[str, int] = {}
    for caller in CALLERS:
        want = expected(route, caller)
        fresh = route.mutates and 200 <= want < 300
        ids = await path_ids(w, path, fresh)
        if method == "PUT" and "fork-templates/{upstream_id}" in path:
            ids["upstream_id"] = f"new{len(got)}"
        body = route.body
        if path == "/v1/admin/teams":
            body = {"id": f"new-{len(got)}", "name": "n"}
        response = await client.request(
            method,
            path.format(**ids),
            json=body if body is not None or method in ("POST", "PUT", "PATCH") else None,
            headers=w.callers[caller],
        )
        got[caller] = response.status_code
    wanted = {caller: expected(route, caller) for caller in CALLERS}
    assert got == wanted
