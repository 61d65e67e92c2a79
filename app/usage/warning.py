"""The `Corral-Budget-Warning` response header: set on every response to a team's key once the
team's month-to-date spend has crossed its soft threshold (or exhausted its budget).

It is ASGI middleware rather than a route dependency so that it also marks error answers
(a 402 refusal, a 404) and streamed ones. The actor is known only once authentication ran, so
the check happens when the response starts. Each team's status is cached for
`budget_warning_cache_seconds` per process, so a busy team costs one spend query per period,
not one per request. The header is advice: a failure to compute it never fails the response.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import clock
from app.db import transaction
from app.runtime import Runtime
from app.usage import budget, repository

log = logging.getLogger(__name__)
HEADER = b"corral-budget-warning"


class BudgetWarning:
    def __init__(self, app: ASGIApp, *, cache_seconds: float = 5.0) -> None:
        self.app = app
        self.cache_seconds = cache_seconds
        # team id → (monotonic expiry, header value or None)
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # request.state writes into this dict, so the actor set by authentication shows here.
        state = scope.setdefault("state", {})

        async def send_with_warning(message: Message) -> None:
            if message["type"] == "http.response.start":
                actor = state.get("actor") if isinstance(state, dict) else None
                team_id = getattr(actor, "team_id", None)
                if team_id is not None:
                    warning = await self._warning(scope, team_id)
                    if warning is not None:
                        message["headers"] = [
                            *message.get("headers", []),
                            (HEADER, warning.encode("latin-1")),
                        ]
            await send(message)

        await self.app(scope, receive, send_with_warning)

    async def _warning(self, scope: Scope, team_id: str) -> str | None:
        cached = self._cache.get(team_id)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            runtime: Runtime = scope["app"].state.runtime
            async with transaction(runtime.sessions) as session:
                team = await repository.team(session, team_id)
                warning = None
                if team is not None and team.monthly_budget_credits is not None:
                    status = await budget.budget_status(
                        session, team, clock.now(), timezone=runtime.settings.budget_timezone
                    )
                    warning = status.warning
        except Exception:  # advisory header: log, and answer without it
            log.exception("budget warning check failed", extra={"team_id": team_id})
            return None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[team_id] = (now + self.cache_seconds, warning)
        return warning
