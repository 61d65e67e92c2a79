"""The usage page and its CSV: `GET /v1/usage` with the same parameters and the same code.

The window, the grouping and the scoping are `app.usage.reports`' (`window`, `group_keys`,
`report`, `csv_lines`), so the page's table is the JSON report's rows and the download is
byte for byte the API's CSV for the same `from`, `to`, `group_by` and `team`.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from app import clock
from app.dashboard.auth import CurrentViewer
from app.dashboard.render import show
from app.deps import RuntimeDep, SessionDep, SettingsDep
from app.usage import reports
from app.usage import repository as usage_repository

router = APIRouter(prefix="/dashboard")

From = Annotated[str | None, Query(alias="from", max_length=40)]
To = Annotated[str | None, Query(max_length=40)]
GroupBy = Annotated[list[str] | None, Query(max_length=10)]
TeamFilter = Annotated[str | None, Query(pattern=r"^$|^[a-z0-9-]{1,63}$")]
# What the page groups by when the URL names nothing: who spent it (admins), or when (a team).
# An admin's month by day is one of the report's costliest shapes over the whole ledger, so it
# is asked for, not the default.
ADMIN_GROUPING = ["team"]
TEAM_GROUPING = ["day"]


def _chart_label(row: Any, keys: list[str]) -> str:
    return " · ".join(str(getattr(row, key)) for key in keys) or "total"


@router.get("/usage", response_class=HTMLResponse)
async def usage(
    request: Request,
    viewer: CurrentViewer,
    session: SessionDep,
    settings: SettingsDep,
    from_: From = None,
    to: To = None,
    group_by: GroupBy = None,
    team: TeamFilter = None,
) -> HTMLResponse:
    at = clock.now()
    timezone = settings.budget_timezone
    span = reports.window(from_ or None, to or None, at, timezone)
    default = ADMIN_GROUPING if viewer.actor.is_admin else TEAM_GROUPING
    keys = reports.group_keys(default if group_by is None else group_by)
    scoped = (team or None) if viewer.actor.is_admin else None
    report = await reports.report(
        session, viewer.actor, span=span, keys=keys, team=scoped, at=at, timezone=timezone
    )
    # The download carries exactly the parameters this table was made with.
    params: list[tuple[str, str]] = [("from", span.start.isoformat()), ("to", span.end.isoformat())]
    params += [("group_by", key) for key in keys]
    if scoped:
        params.append(("team", scoped))
    context = {
        "report": report,
        "keys": keys,
        "all_keys": list(usage_repository.GROUP_KEYS),
        "span": span,
        "inputs": {"from": from_ or "", "to": to or "", "team": scoped or ""},
        "csv_url": "/dashboard/usage.csv?" + urlencode(params),
        "time_chart": keys == ["day"],
        "labels": [_chart_label(row, keys) for row in report.rows],
        "day_starts": [
            reports.parse_instant(str(row.day), "day", timezone).timestamp()
            for row in report.rows
            if keys == ["day"]
        ],
    }
    return show(request, viewer, settings, "usage.html", context, section="usage")


@router.get("/usage.csv")
async def usage_csv(
    viewer: CurrentViewer,
    rt: RuntimeDep,
    from_: From = None,
    to: To = None,
    group_by: GroupBy = None,
    team: TeamFilter = None,
) -> StreamingResponse:
    # As GET /v1/usage?format=csv answers (app.usage.endpoints), line for line.
    at = clock.now()
    timezone = rt.settings.budget_timezone
    span = reports.window(from_ or None, to or None, at, timezone)
    keys = reports.group_keys(group_by or [])
    lines = await reports.csv_lines(
        rt.sessions, viewer.actor, span=span, keys=keys, team=team or None, at=at, timezone=timezone
    )
    name = f"usage-{span.start:%Y%m%dT%H%M%S}-{span.end:%Y%m%dT%H%M%S}.csv"
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
