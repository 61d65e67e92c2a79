"""Rendering pages: one Jinja2 environment, autoescaped, loaded from the package's templates.

Every page gets the viewer (who is signed in, whether they may edit), the session's CSRF
token for its forms, the accounting timezone, the navigation, and the formatting filters of
`app.dashboard.formatting`. Static files are linked with a digest of their content, so a
browser caches them for a day and still never runs yesterday's script after an upgrade.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, pass_context
from jinja2.runtime import Context

from app.dashboard import formatting
from app.dashboard.auth import Viewer
from app.dashboard.figures import NEAR_BUDGET
from app.identity.actor import Actor
from app.settings import Settings

STATIC_PREFIX = "/dashboard/static/"


@dataclass(frozen=True)
class NavLink:
    section: str
    label: str
    href: str


# The pages every signed-in admin sees, in the navigation's order.
ADMIN_NAV = (
    NavLink("overview", "Overview", "/dashboard"),
    NavLink("teams", "Teams", "/dashboard/teams"),
    NavLink("sandboxes", "Sandboxes", "/dashboard/sandboxes"),
    NavLink("usage", "Usage", "/dashboard/usage"),
    NavLink("reconciliation", "Reconciliation", "/dashboard/reconciliation"),
    NavLink("audit", "Audit log", "/dashboard/audit"),
    NavLink("prices", "Prices and plan", "/dashboard/prices"),
    NavLink("webhooks", "Webhooks", "/dashboard/webhooks"),
)


def nav_for(actor: Actor | None) -> list[NavLink]:
    if actor is None:
        return []
    if actor.is_admin:
        return list(ADMIN_NAV)
    return [
        NavLink("overview", "Overview", "/dashboard"),
        NavLink("teams", "Team", f"/dashboard/teams/{actor.team_id}"),
        NavLink("sandboxes", "Sandboxes", "/dashboard/sandboxes"),
        NavLink("usage", "Usage", "/dashboard/usage"),
    ]


@cache
def asset_digest(name: str) -> str:
    data = resources.files("app.dashboard").joinpath("static", *name.split("/")).read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


def asset(name: str) -> str:
    return f"{STATIC_PREFIX}{name}?v={asset_digest(name)}"


@pass_context
def _when(context: Context, moment: Any) -> formatting.Html:
    return formatting.when(moment, context["tz"])


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("app.dashboard", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        # A misspelt variable is a bug to see in the tests, not an empty cell.
        undefined=StrictUndefined,
    )
    env.filters.update(
        credits=formatting.credits,
        usd=formatting.usd,
        integer=formatting.integer,
        plain=formatting.plain,
        percent=formatting.percent,
        duration=formatting.duration,
        when=_when,
    )
    env.globals.update(asset=asset, near_budget=NEAR_BUDGET)
    return env


ENV = _environment()


def page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    actor: Actor | None,
    csrf: str | None,
    timezone: ZoneInfo,
    section: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    html = ENV.get_template(template).render(
        request_path=request.url.path,
        actor=actor,
        can_edit=actor is not None and actor.is_admin,
        csrf=csrf,
        tz=timezone,
        tz_name=timezone.key,
        nav=nav_for(actor),
        section=section,
        done=done_message(request),
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=headers)


def show(
    request: Request,
    viewer: Viewer,
    settings: Settings,
    template: str,
    context: dict[str, Any],
    *,
    section: str,
    status_code: int = 200,
) -> HTMLResponse:
    """A signed-in viewer's page."""
    return page(
        request,
        template,
        context,
        actor=viewer.actor,
        csrf=viewer.csrf,
        timezone=settings.budget_timezone,
        section=section,
        status_code=status_code,
    )


# What a redirect after a change says, by its `done` code (only these, never text from a URL).
DONE = {
    "limits": "Limits and budget saved.",
    "unchanged": "Nothing changed: the form held the team's current values.",
    "revoked": "Key revoked.",
    "hibernate": "Sandbox hibernated.",
    "shutdown": "Sandbox shut down.",
    "delete": "Sandbox deleted.",
    "plan": "Plan saved.",
    "price": "Price-book version added.",
}


def done_message(request: Request) -> str | None:
    return DONE.get(request.query_params.get("done", ""))
