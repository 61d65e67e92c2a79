"""CORS for the one route a browser calls directly, `/v1/browser/session`.

Only the configured origins (`CORRAL_BROWSER_ORIGINS`, exact origins, never `*`) get CORS
headers; every other route answers no CORS at all, so no page can call an API-key route from a
browser. Credentials (cookies) are not allowed: the browser token travels in the
Authorization header, which the allowlist names explicitly.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

BROWSER_PATHS = frozenset({"/v1/browser/session"})


class BrowserCORS:
    """Starlette's CORS middleware, applied to the browser routes only."""

    def __init__(self, app: ASGIApp, *, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in BROWSER_PATHS:
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
