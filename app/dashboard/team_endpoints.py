"""The teams table, a team's page, and its forms: limits and budget, keys.

Every change goes through the admin service the API's routes call (`app.admin.service`), in one
transaction with its audit row, so an edit here and the same PATCH or POST on the API leave the
same rows behind.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.admin import service as admin_service
from app.admission import quota
from app.dashboard import figures, forms
from app.dashboard.auth import CurrentViewer, EditForm, Posted, Viewer, not_found
from app.dashboard.forms import FormInvalid
from app.dashboard.render import show
from app.db import transaction
from app.deps import RuntimeDep, SessionDep, SettingsDep
from app.errors import Unprocessable
from app.identity import service as identity_service
from app.identity.keys import SCOPES
from app.identity.service import IssuedKey
from app.sandboxes import listing
from app.settings import Settings
from app.tiers import TIERS
from app.usage import periods, reports

router = APIRouter(prefix="/dashboard")

TEAM_ID = re.compile(r"^[a-z0-9-]{1,63}$")
KEY_ID = re.compile(r"^[a-z0-9]{1,32}$")
TEAM_KEY_SCOPES = sorted(SCOPES - {"admin"})
TOP_OWNERS = 10
RECENT_SANDBOXES = 10
# Overlaps a rotation offers, in seconds (the API takes any from 0 to 30 days).
OVERLAPS = ((0, "none: the old key stops now"), (3600, "1 hour"), (86400, "24 hours"))


@router.get("/teams", response_class=HTMLResponse)
async def teams(
    request: Request, viewer: CurrentViewer, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    at = clock.now()
    base = await figures.basis(session, viewer.actor, at, settings.budget_timezone)
    rows = await figures.team_rows(session, viewer.actor, base)
    context = {"rows": rows, "month": base.month}
    return show(request, viewer, settings, "teams.html", context, section="teams")


def _visible(viewer: Viewer, team_id: str) -> None:
    # Another team's page is answered like one that does not exist.
    if not TEAM_ID.match(team_id) or not viewer.sees_team(team_id):
        raise not_found("team")


def _day_start(day: Any, settings: Settings) -> datetime:
    return datetime.combine(day, time(), tzinfo=settings.budget_timezone).astimezone(UTC)


async def _team_context(
    session: AsyncSession, viewer: Viewer, settings: Settings, team_id: str
) -> dict[str, Any]:
    actor = viewer.actor
    timezone = settings.budget_timezone
    at = clock.now()
    team = await identity_service.get_team(session, team_id)
    shown = await quota.show(session, actor, team_id if actor.is_admin else None, timezone=timezone)
    start = periods.month_start(at, timezone)
    month = reports.Window(start, max(start, at))
    scoped = team_id if actor.is_admin else None

    async def usage(keys: list[str]) -> Any:
        return await reports.report(
            session, actor, span=month, keys=keys, team=scoped, at=at, timezone=timezone
        )

    by_day = await usage(["day"])
    owners = sorted((await usage(["owner"])).rows, key=lambda r: (-r.credits, r.owner or ""))
    sandboxes, more = await listing.page(
        session, actor, listing.Filters(team=team_id), limit=RECENT_SANDBOXES, cursor=None
    )
    keys = await identity_service.list_keys(session, team_id) if actor.is_admin else []
    return {
        "team": team,
        "quota": shown,
        "month_start": start,
        "month_end": periods.next_month_start(start, timezone),
        "days": [(row, _day_start(row.day, settings)) for row in by_day.rows],
        "month_total": by_day.total,
        "owners": owners[:TOP_OWNERS],
        "sandboxes": sandboxes,
        "more_sandboxes": more is not None,
        "keys": keys,
        "reserved": team.id == identity_service.UNASSIGNED_TEAM,
        "at": at,
        "values": forms.limit_values(team),
        "errors": {},
        "key_errors": {},
        "key_values": None,
        "tiers": TIERS,
        "scopes": TEAM_KEY_SCOPES,
        "overlaps": OVERLAPS,
    }


@router.get("/teams/{team_id}", response_class=HTMLResponse)
async def team_page(
    request: Request,
    team_id: str,
    viewer: CurrentViewer,
    session: SessionDep,
    settings: SettingsDep,
) -> HTMLResponse:
    _visible(viewer, team_id)
    context = await _team_context(session, viewer, settings, team_id)
    return show(request, viewer, settings, "team.html", context, section="teams")


def _back(team_id: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"/dashboard/teams/{team_id}?done={done}", status_code=303)


@router.post("/teams/{team_id}/limits")
async def edit_limits(request: Request, team_id: str, posted: EditForm, rt: RuntimeDep) -> Response:
    _visible(posted.viewer, team_id)
    try:
        async with transaction(rt.sessions) as session:
            team = await identity_service.get_team(session, team_id)
            body = forms.team_limits(posted.form, team)
            if not body.model_fields_set:
                return _back(team_id, "unchanged")
            await admin_service.update_team(session, posted.viewer.actor, team_id, body)
    except FormInvalid as exc:
        errors = exc.errors
    except Unprocessable as exc:
        # The service's own refusal (a null for a field that always has a value).
        errors = {"": exc.detail}
    else:
        return _back(team_id, "limits")
    # Refused: the transaction rolled back; the form shows what was typed and why not.
    async with transaction(rt.sessions) as session:
        context = await _team_context(session, posted.viewer, rt.settings, team_id)
    context |= {"values": forms.limit_inputs(posted.form), "errors": errors}
    return show(
        request, posted.viewer, rt.settings, "team.html", context, section="teams", status_code=422
    )


def _issued_page(
    request: Request, posted: Posted, rt: RuntimeDep, team_id: str, issued: IssuedKey, what: str
) -> HTMLResponse:
    # The secret is on this page only (as in the API's creation answer), never stored.
    context = {"team_id": team_id, "issued": issued, "what": what}
    return show(request, posted.viewer, rt.settings, "key_issued.html", context, section="teams")


async def _refused_key_form(
    request: Request, posted: Posted, rt: RuntimeDep, team_id: str, errors: dict[str, str]
) -> HTMLResponse:
    async with transaction(rt.sessions) as session:
        context = await _team_context(session, posted.viewer, rt.settings, team_id)
    context |= {"key_errors": errors, "key_values": posted.form}
    return show(
        request, posted.viewer, rt.settings, "team.html", context, section="teams", status_code=422
    )


@router.post("/teams/{team_id}/keys")
async def issue_key(request: Request, team_id: str, posted: EditForm, rt: RuntimeDep) -> Response:
    _visible(posted.viewer, team_id)
    try:
        body = forms.new_key(posted.form, rt.settings.budget_timezone)
        async with transaction(rt.sessions) as session:
            issued = await admin_service.issue_key(session, posted.viewer.actor, team_id, body)
    except FormInvalid as exc:
        return await _refused_key_form(request, posted, rt, team_id, exc.errors)
    except Unprocessable as exc:
        return await _refused_key_form(request, posted, rt, team_id, {"": exc.detail})
    return _issued_page(request, posted, rt, team_id, issued, "issued")


async def _team_key(session: AsyncSession, team_id: str, key_id: str) -> None:
    """404 unless the key is one of the team's (a key id in another team's URL)."""
    if not KEY_ID.match(key_id):
        raise not_found("key")
    row = await identity_service.get_key(session, key_id)
    if row.team_id != team_id:
        raise not_found("key")


@router.post("/teams/{team_id}/keys/{key_id}/rotate")
async def rotate_key(
    request: Request, team_id: str, key_id: str, posted: EditForm, rt: RuntimeDep
) -> Response:
    _visible(posted.viewer, team_id)
    body = forms.rotation(posted.form)
    async with transaction(rt.sessions) as session:
        await _team_key(session, team_id, key_id)
        issued = await admin_service.rotate_key(
            session, posted.viewer.actor, key_id, body, keys=rt.keys
        )
    return _issued_page(request, posted, rt, team_id, issued, "rotated")


@router.post("/teams/{team_id}/keys/{key_id}/revoke")
async def revoke_key(team_id: str, key_id: str, posted: EditForm, rt: RuntimeDep) -> Response:
    _visible(posted.viewer, team_id)
    async with transaction(rt.sessions) as session:
        await _team_key(session, team_id, key_id)
        await admin_service.revoke_key(session, posted.viewer.actor, key_id, keys=rt.keys)
    return _back(team_id, "revoked")
