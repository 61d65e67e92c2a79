"""The overview page and the JSON its script refreshes the figures from."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.audit import repository as audit_repository
from app.dashboard import concurrency, figures
from app.dashboard.auth import CurrentViewer, Viewer
from app.dashboard.render import show
from app.db import transaction
from app.deps import RuntimeDep, SessionDep, SettingsDep
from app.reconcile import runs
from app.runtime import Runtime

router = APIRouter(prefix="/dashboard")

WindowName = Literal["24h", "7d", "30d"]
RECENT = 10
# The teams nearest their budget that the overview names; the teams page has them all.
NEAR_SHOWN = 20


async def _series(
    rt: Runtime, window: concurrency.Window, at: datetime, team_id: str | None
) -> list[concurrency.Point]:
    async with transaction(rt.sessions) as session:
        return await concurrency.series(session, window, at, team_id=team_id)


async def _context(
    session: AsyncSession, rt: Runtime, viewer: Viewer, window: WindowName
) -> dict[str, Any]:
    actor = viewer.actor
    at = clock.now()
    timezone = rt.settings.budget_timezone
    chosen = concurrency.WINDOWS[window]
    team_id = None if actor.is_admin else actor.team_id
    # The sweep is the page's longest statement and needs nothing the others read: it runs on
    # a connection of its own meanwhile, so the page costs the longer of the two, not both.
    sweep = asyncio.create_task(_series(rt, chosen, at, team_id))
    try:
        base = await figures.basis(session, actor, at, timezone)
        shown = await figures.figures(session, actor, base, timezone)
        teams = await figures.team_rows(session, actor, base)
        points = await sweep
    finally:
        if not sweep.done():
            sweep.cancel()
        # Collected whatever happened, so a failure of one is never left unretrieved.
        await asyncio.gather(sweep, return_exceptions=True)
    # The line the chart draws: what may run at once in its scope.
    limit = shown.effective_limit
    if shown.team_limit is not None:
        limit = min(limit, shown.team_limit)
    near = figures.near_budget(teams)
    context: dict[str, Any] = {
        "at": at,
        "figures": shown,
        "hooks": shown.hooks(),
        "windows": list(concurrency.WINDOWS.values()),
        "window": chosen,
        "points": points,
        "chart_limit": limit,
        "near_budget": near[:NEAR_SHOWN],
        "near_more": max(len(near) - NEAR_SHOWN, 0),
        "own_team": None if actor.is_admin else teams[0],
        "drifts": [],
        "refusals": [],
        "replica_refusals": [],
    }
    if actor.is_admin:
        _, drifts = await runs.recent(session, limit=RECENT, kind=None, drift_limit=RECENT)
        refused, _ = await audit_repository.page(
            session, audit_repository.AuditFilter(outcome="refused"), limit=RECENT, cursor=None
        )
        context |= {
            "drifts": drifts,
            "refusals": refused,
            "replica_refusals": figures.replica_refusals(),
        }
    return context


@router.get("", response_class=HTMLResponse)
async def overview(
    request: Request,
    viewer: CurrentViewer,
    session: SessionDep,
    rt: RuntimeDep,
    window: Annotated[WindowName, Query()] = "24h",
) -> HTMLResponse:
    context = await _context(session, rt, viewer, window)
    return show(request, viewer, rt.settings, "overview.html", context, section="overview")


@router.get("/live/overview")
async def live_overview(
    viewer: CurrentViewer, session: SessionDep, settings: SettingsDep
) -> JSONResponse:
    """The overview's key figures, as the page shows them (same scope, same formatting)."""
    at = clock.now()
    base = await figures.basis(session, viewer.actor, at, settings.budget_timezone)
    shown = await figures.figures(session, viewer.actor, base, settings.budget_timezone)
    return JSONResponse({"at": at.isoformat(), "figures": shown.hooks()})
