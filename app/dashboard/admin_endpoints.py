"""Admin-only pages: reconciliation, the audit log, prices and plan, webhooks.

Each reads what its `/v1/admin/...` route reads, through the same service or repository; the
plan and price forms write through `admission.quota.set_plan` and `usage.prices.add_version`,
audited as the API's PUTs are.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.admission import quota
from app.audit import repository as audit_repository
from app.dashboard import forms
from app.dashboard.auth import AdminViewer, EditForm, Posted, not_found
from app.dashboard.forms import FormInvalid
from app.dashboard.render import show
from app.db import transaction
from app.deps import RuntimeDep, SessionDep, SettingsDep
from app.errors import Conflict, Unprocessable
from app.reconcile import runs
from app.settings import Settings
from app.tiers import TIERS
from app.usage import prices, reports
from app.webhooks import service as webhooks_service
from app.webhooks.schemas import WEBHOOK_ID_PATTERN, DeliveryStatus

router = APIRouter(prefix="/dashboard")

WEBHOOK_ID = re.compile(WEBHOOK_ID_PATTERN)
AUDIT_PAGE = 50
DELIVERY_PAGE = 50
Text = Annotated[str | None, Query(max_length=128)]


@router.get("/reconciliation", response_class=HTMLResponse)
async def reconciliation(
    request: Request,
    viewer: AdminViewer,
    session: SessionDep,
    settings: SettingsDep,
    kind: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    found, drifts = await runs.recent(session, limit=20, kind=kind or None, drift_limit=200)
    context = {"runs": found, "drifts": drifts, "kind": kind or ""}
    return show(request, viewer, settings, "reconciliation.html", context, section="reconciliation")


def _instant(raw: str | None, name: str, settings: Settings) -> datetime | None:
    # Typed in the form without an offset: the accounting timezone, as usage reads it.
    return reports.parse_instant(raw, name, settings.budget_timezone) if raw else None


@router.get("/audit", response_class=HTMLResponse)
async def audit(
    request: Request,
    viewer: AdminViewer,
    session: SessionDep,
    settings: SettingsDep,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    team: Annotated[str | None, Query(pattern=r"^$|^[a-z0-9-]{1,63}$")] = None,
    action: Text = None,
    target: Text = None,
    cause: Annotated[str | None, Query(max_length=16)] = None,
    outcome: Annotated[str | None, Query(max_length=32)] = None,
    from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    to: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    filters = {
        "actor": actor or "",
        "team": team or "",
        "action": action or "",
        "target": target or "",
        "cause": cause or "",
        "outcome": outcome or "",
        "from": from_ or "",
        "to": to or "",
    }
    since, until = _instant(from_, "from", settings), _instant(to, "to", settings)
    if since is not None and until is not None and since >= until:
        raise Unprocessable("'from' must be before 'to'.", kind="empty-window")
    rows, next_cursor = await audit_repository.page(
        session,
        audit_repository.AuditFilter(
            actor=actor or None,
            team_id=team or None,
            action=action or None,
            target=target or None,
            cause=cause or None,
            outcome=outcome or None,
            since=since,
            until=until,
        ),
        limit=AUDIT_PAGE,
        cursor=cursor or None,
    )
    given = {name: value for name, value in filters.items() if value}
    context = {
        "rows": rows,
        "filters": filters,
        "next_url": None
        if next_cursor is None
        else "/dashboard/audit?" + urlencode({**given, "cursor": next_cursor}),
        "first_url": None if cursor is None else "/dashboard/audit?" + urlencode(given),
    }
    return show(request, viewer, settings, "audit.html", context, section="audit")


async def _prices_context(session: AsyncSession) -> dict[str, Any]:
    at = clock.now()
    book = await prices.price_book(session, at)
    return {
        "plan": await quota.plan(session),
        "book": book,
        "versions": list(reversed(book.versions)),
        "tiers": TIERS,
        "plan_values": {},
        "price_values": {},
        "plan_errors": {},
        "price_errors": {},
    }


@router.get("/prices", response_class=HTMLResponse)
async def prices_page(
    request: Request, viewer: AdminViewer, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    context = await _prices_context(session)
    return show(request, viewer, settings, "prices.html", context, section="prices")


async def _refused(
    request: Request, posted: Posted, rt: RuntimeDep, form_name: str, errors: dict[str, str]
) -> HTMLResponse:
    async with transaction(rt.sessions) as session:
        context = await _prices_context(session)
    values = {key: value for key, value in posted.form.pairs if key != "csrf_token"}
    context |= {f"{form_name}_values": values, f"{form_name}_errors": errors}
    return show(
        request,
        posted.viewer,
        rt.settings,
        "prices.html",
        context,
        section="prices",
        status_code=422,
    )


@router.post("/prices/plan")
async def set_plan(request: Request, posted: EditForm, rt: RuntimeDep) -> Response:
    try:
        body = forms.plan(posted.form)
        async with transaction(rt.sessions) as session:
            await quota.set_plan(session, posted.viewer.actor, body)
    except FormInvalid as exc:
        return await _refused(request, posted, rt, "plan", exc.errors)
    return RedirectResponse("/dashboard/prices?done=plan", status_code=303)


@router.post("/prices/versions")
async def add_price_version(request: Request, posted: EditForm, rt: RuntimeDep) -> Response:
    try:
        body = forms.price_version(posted.form, rt.settings.budget_timezone)
        async with transaction(rt.sessions) as session:
            await prices.add_version(session, posted.viewer.actor, body, clock.now())
    except FormInvalid as exc:
        return await _refused(request, posted, rt, "price", exc.errors)
    except (Unprocessable, Conflict) as exc:
        # The price book's own rules: not in the past, one version per instant.
        return await _refused(request, posted, rt, "price", {"": exc.detail})
    return RedirectResponse("/dashboard/prices?done=price", status_code=303)


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks(
    request: Request, viewer: AdminViewer, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    context = {"endpoints": await webhooks_service.list_live(session)}
    return show(request, viewer, settings, "webhooks.html", context, section="webhooks")


@router.get("/webhooks/{webhook_id}", response_class=HTMLResponse)
async def webhook(
    request: Request,
    webhook_id: str,
    viewer: AdminViewer,
    session: SessionDep,
    settings: SettingsDep,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    if not WEBHOOK_ID.match(webhook_id):
        raise not_found("webhook endpoint")
    endpoint = await webhooks_service.get(session, webhook_id)
    rows, next_cursor = await webhooks_service.deliveries(
        session, webhook_id, status=status, limit=DELIVERY_PAGE, cursor=cursor or None
    )
    given = {"status": status} if status else {}
    context = {
        "endpoint": endpoint,
        "deliveries": rows,
        "status": status or "",
        "statuses": ["pending", "succeeded", "failed", "cancelled"],
        "next_url": None
        if next_cursor is None
        else f"/dashboard/webhooks/{webhook_id}?" + urlencode({**given, "cursor": next_cursor}),
        "first_url": None
        if cursor is None
        else f"/dashboard/webhooks/{webhook_id}?" + urlencode(given),
    }
    return show(request, viewer, settings, "webhooks_endpoint.html", context, section="webhooks")
