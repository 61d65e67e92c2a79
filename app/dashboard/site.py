"""The dashboard as an application of its own under /dashboard, and how the API app serves it.

It is a separate FastAPI app, handed every request under /dashboard by one route of the API
app (`install`), because its answers differ from the API's in every cross-cutting way:

- errors are HTML pages (or a redirect to the sign-in page), not problem+json;
- every answer carries the browser security headers (`SecurityHeaders`), and pages are never
  cached;
- it authenticates by cookie, not bearer: its routes are in neither the API's OpenAPI document
  nor the API's tenancy matrix, and have tests of their own (tests/dashboard/).

The dashboard's routes keep their full paths (`/dashboard/teams/{team}`), so the access log and
the latency histogram name them by their real templates, and `/dashboard` itself is the
overview rather than a redirect to `/dashboard/`. It shares the API app's state (the runtime),
so middleware that reads the runtime from the app in the scope finds it in either.
"""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import db
from app.dashboard import (
    admin_endpoints,
    auth_endpoints,
    cookies,
    overview_endpoints,
    sandbox_endpoints,
    team_endpoints,
    usage_endpoints,
)
from app.dashboard.auth import PageError, SignInRequired
from app.dashboard.forms import FormInvalid
from app.dashboard.render import STATIC_PREFIX, page
from app.dashboard.settings import DashboardSettings
from app.errors import DATABASE_RETRY_AFTER, AppError

log = logging.getLogger(__name__)

PREFIX = "/dashboard"
LIVE_PREFIX = "/dashboard/live/"
STATIC = Path(__file__).parent / "static"

# No inline script or style anywhere: scripts and styles are files under /dashboard/static.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


class SecurityHeaders:
    """The headers every dashboard answer carries. Pages (and the CSV, and the live JSON) hold
    a team's figures or a freshly issued key: never stored by a cache. Static files are
    linked with their digest (`render.asset`), so they may be cached. `Server-Timing` says how
    long the dashboard took to start its answer (bench/dashboard.py reads it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(STATIC_PREFIX)
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers["cache-control"] = "public, max-age=86400" if static else "no-store"
                elapsed = (time.perf_counter() - started) * 1000
                headers["server-timing"] = f"app;dur={elapsed:.1f}"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class DashboardRoute(BaseRoute):
    """Hands every request whose path is /dashboard or under it to the dashboard app, whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http":
            # The path below the app's root path, as Starlette's own routes match it.
            path, root = scope["path"], scope.get("root_path", "")
            if root and path.startswith(root + "/"):
                path = path[len(root) :]
            if path == PREFIX or path.startswith(PREFIX + "/"):
                return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(LIVE_PREFIX)


def _error_page(
    request: Request, status: int, title: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    if _wants_json(request):
        return JSONResponse(
            {"error": title, "detail": message}, status_code=status, headers=headers
        )
    runtime = request.app.state.runtime
    return page(
        request,
        "error.html",
        {"status": status, "title": title, "message": message},
        actor=getattr(request.state, "actor", None),
        csrf=getattr(request.state, "dashboard_csrf", None),
        timezone=runtime.settings.budget_timezone,
        status_code=status,
        headers=headers,
    )


def install_handlers(site: FastAPI) -> None:
    async def on_sign_in(request: Request, exc: Exception) -> Response:
        if _wants_json(request):
            response: Response = JSONResponse({"error": "signed out"}, status_code=401)
        else:
            response = RedirectResponse("/dashboard/login", status_code=303)
        if request.cookies.get(cookies.COOKIE):
            # A cookie that no longer stands for a working key: forget it.
            response.delete_cookie(cookies.COOKIE, path=cookies.PATH)
        return response

    async def on_page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return _error_page(request, exc.status, exc.title, exc.message)

    async def on_form_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FormInvalid)
        return _error_page(request, 422, "Not valid", "; ".join(exc.errors.values()))

    async def on_app_error(request: Request, exc: Exception) -> Response:
        # A service refused or failed (not found, a state conflict, the upstream away): its
        # detail is written for the caller, so it is the page's sentence too.
        assert isinstance(exc, AppError)
        retry = {k: v for k, v in exc.headers.items() if k.lower() == "retry-after"}
        return _error_page(request, exc.status, HTTPStatus(exc.status).phrase, exc.detail, retry)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        fields = sorted({".".join(str(p) for p in e.get("loc", ())[1:]) for e in exc.errors()})
        message = "These parameters are not valid: " + (", ".join(fields) or "the request") + "."
        return _error_page(request, 422, "Not valid", message)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return _error_page(request, 404, "Not found", "There is no such page.")
        phrase = HTTPStatus(exc.status_code).phrase
        return _error_page(request, exc.status_code, phrase, phrase + ".")

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # As the API answers: the database away is 503, anything else a 500 that names no
        # internals (the exception goes to the log).
        if db.unavailable(exc):
            return _error_page(
                request,
                503,
                "Database unavailable",
                "Corral's database is not reachable right now; retry shortly.",
                {"Retry-After": str(DATABASE_RETRY_AFTER)},
            )
        return _error_page(
            request, 500, "Something failed", "Corral failed to show this page; it has been logged."
        )

    site.add_exception_handler(SignInRequired, on_sign_in)
    site.add_exception_handler(PageError, on_page_error)
    site.add_exception_handler(FormInvalid, on_form_invalid)
    site.add_exception_handler(AppError, on_app_error)
    site.add_exception_handler(RequestValidationError, on_validation_error)
    site.add_exception_handler(StarletteHTTPException, on_http_error)
    site.add_exception_handler(Exception, on_unexpected)


def create_site(parent: FastAPI) -> FastAPI:
    site = FastAPI(title="Corral dashboard", openapi_url=None, docs_url=None, redoc_url=None)
    # One state for both apps: the runtime the API app's lifespan sets is the dashboard's.
    site.state = parent.state
    parent.state.dashboard_settings = DashboardSettings()
    install_handlers(site)
    for module in (
        auth_endpoints,
        overview_endpoints,
        team_endpoints,
        sandbox_endpoints,
        usage_endpoints,
        admin_endpoints,
    ):
        site.include_router(module.router)
    site.mount(STATIC_PREFIX.rstrip("/"), StaticFiles(directory=STATIC), name="static")
    site.add_middleware(SecurityHeaders)
    return site


def install(app: FastAPI) -> None:
    """Serve the dashboard under /dashboard of `app`."""
    app.router.routes.append(DashboardRoute(create_site(app)))
