"""The sandboxes table, a sandbox's page, and its actions behind a confirmation step.

The table is `GET /v1/sandboxes` (the same filters, limits and cursor, through
`sandboxes.listing`); a sandbox's page is its record, events and cost statement as the API's
routes give them to the viewer's key; an action is the API's verb, called with the signed-in
admin's actor (`sandboxes.service`: its own short transactions, none across the upstream call).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app import clock
from app.dashboard.auth import AdminViewer, CurrentViewer, EditForm, not_found
from app.dashboard.render import show
from app.db import transaction
from app.deps import RuntimeDep, SessionDep, SettingsDep
from app.sandboxes import listing, service
from app.sandboxes.schemas import SANDBOX_ID_PATTERN, State
from app.sandboxes.states import SandboxState
from app.tiers import TIERS, Tier
from app.usage import statements

router = APIRouter(prefix="/dashboard")

SANDBOX_ID = re.compile(SANDBOX_ID_PATTERN)
STATES = [state.value for state in SandboxState]
PAGE_SIZE = 50
Action = Literal["hibernate", "shutdown", "delete"]
ACTIONS: dict[str, tuple[str, str]] = {
    # action → (button, what it does)
    "hibernate": ("Hibernate", "The VM stops and keeps its memory; a start resumes it."),
    "shutdown": ("Shut down", "The VM stops; a start boots it clean."),
    "delete": (
        "Delete",
        "The VM is shut down and deleted upstream. Corral keeps its record and usage.",
    ),
}


@router.get("/sandboxes", response_class=HTMLResponse)
async def sandboxes(
    request: Request,
    viewer: CurrentViewer,
    session: SessionDep,
    settings: SettingsDep,
    team: Annotated[str | None, Query(pattern=r"^$|^[a-z0-9-]{1,63}$")] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[list[State | Literal[""]] | None, Query()] = None,
    tier: Annotated[Tier | Literal[""] | None, Query()] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    # An empty field of the filter form means no filter.
    states = [s for s in state or [] if s]
    where = listing.Filters(
        team=team or None,
        owner=owner or None,
        states=states or None,
        tier=tier or None,
        tag=tag or None,
    )
    rows, next_cursor = await listing.page(
        session, viewer.actor, where, limit=PAGE_SIZE, cursor=cursor or None
    )
    filters = {
        "team": team or "",
        "owner": owner or "",
        "state": states,
        "tier": tier or "",
        "tag": tag or "",
    }
    given = [(name, value) for name, value in filters.items() if value and name != "state"]
    given += [("state", value) for value in states]
    context = {
        "rows": rows,
        "next_url": None
        if next_cursor is None
        else "/dashboard/sandboxes?" + urlencode([*given, ("cursor", next_cursor)]),
        "first_url": "/dashboard/sandboxes?" + urlencode(given) if cursor else None,
        "filters": filters,
        "states": STATES,
        "tiers": TIERS,
    }
    return show(request, viewer, settings, "sandboxes.html", context, section="sandboxes")


def _checked(sandbox_id: str) -> None:
    if not SANDBOX_ID.match(sandbox_id):
        raise not_found("sandbox")


@router.get("/sandboxes/{sandbox_id}", response_class=HTMLResponse)
async def sandbox_page(
    request: Request, sandbox_id: str, viewer: CurrentViewer, rt: RuntimeDep
) -> HTMLResponse:
    _checked(sandbox_id)
    sandbox, accrued = await service.get(rt, viewer.actor, sandbox_id)
    events = await service.events(rt, viewer.actor, sandbox_id)
    async with transaction(rt.sessions) as session:
        statement = await statements.statement(session, viewer.actor, sandbox_id, clock.now())
    context = {
        "sandbox": sandbox,
        "accrued": accrued,
        "events": list(reversed(events)),
        "statement": statement,
        "actions": ACTIONS,
    }
    return show(request, viewer, rt.settings, "sandbox.html", context, section="sandboxes")


@router.get("/sandboxes/{sandbox_id}/confirm", response_class=HTMLResponse)
async def confirm(
    request: Request,
    sandbox_id: str,
    viewer: AdminViewer,
    rt: RuntimeDep,
    action: Annotated[Action, Query()],
) -> HTMLResponse:
    _checked(sandbox_id)
    sandbox, _ = await service.get(rt, viewer.actor, sandbox_id)
    label, effect = ACTIONS[action]
    context = {"sandbox": sandbox, "action": action, "label": label, "effect": effect}
    return show(request, viewer, rt.settings, "confirm.html", context, section="sandboxes")


@router.post("/sandboxes/{sandbox_id}/{action}")
async def act(sandbox_id: str, action: Action, posted: EditForm, rt: RuntimeDep) -> Response:
    _checked(sandbox_id)
    actor = posted.viewer.actor
    if action == "delete":
        await service.delete(rt, actor, sandbox_id)
    else:
        to_state = SandboxState.HIBERNATED if action == "hibernate" else SandboxState.SHUTDOWN
        await service.stop(rt, actor, sandbox_id, to_state=to_state)
    return RedirectResponse(f"/dashboard/sandboxes/{sandbox_id}?done={action}", status_code=303)
