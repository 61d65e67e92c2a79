"""Usage routes: the price book (admins), usage reports and CSV export, cost statements."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, status
from fastapi.responses import StreamingResponse

from app import clock
from app.deps import AdminActor, RuntimeDep, SandboxReader, SessionDep, require
from app.identity.actor import Actor
from app.sandboxes.schemas import SANDBOX_ID_PATTERN
from app.usage import prices, reports, statements
from app.usage.schemas import (
    CostStatement,
    PriceBookOut,
    PriceVersionIn,
    PriceVersionOut,
    UsageReport,
)

router = APIRouter(tags=["usage"])

UsageReader = Annotated[Actor, Depends(require("usage:read"))]
SandboxId = Annotated[str, Path(pattern=SANDBOX_ID_PATTERN, description="Corral's sandbox id")]


@router.get("/v1/admin/prices", response_model=PriceBookOut, tags=["admin"])
async def get_prices(actor: AdminActor, session: SessionDep) -> PriceBookOut:
    return await prices.price_book(session, clock.now())


@router.put(
    "/v1/admin/prices",
    status_code=status.HTTP_201_CREATED,
    response_model=PriceVersionOut,
    tags=["admin"],
)
async def put_prices(
    body: PriceVersionIn, actor: AdminActor, session: SessionDep
) -> PriceVersionOut:
    return await prices.add_version(session, actor, body, clock.now())


def _wants_csv(fmt: str | None, accept: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    # The first of text/csv and application/json that the Accept header names wins.
    for media in (accept or "").split(","):
        kind = media.split(";")[0].strip().lower()
        if kind == "text/csv":
            return True
        if kind in ("application/json", "*/*", "application/*"):
            return False
    return False


@router.get(
    "/v1/usage",
    response_model=UsageReport,
    response_model_exclude_unset=True,
    responses={200: {"content": {"text/csv": {}}}},
)
async def get_usage(
    actor: UsageReader,
    rt: RuntimeDep,
    session: SessionDep,
    from_: Annotated[
        str | None,
        Query(alias="from", max_length=40, description="ISO-8601; default: month start"),
    ] = None,
    to: Annotated[str | None, Query(max_length=40, description="ISO-8601, exclusive")] = None,
    group_by: Annotated[
        list[str] | None, Query(description="team, owner, tier, sandbox, day (several allowed)")
    ] = None,
    team: Annotated[str | None, Query(pattern=r"^[a-z0-9-]{1,63}$")] = None,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
    accept: Annotated[str | None, Header()] = None,
) -> UsageReport | StreamingResponse:
    at = clock.now()
    timezone = rt.settings.budget_timezone
    span = reports.window(from_, to, at, timezone)
    keys = reports.group_keys(group_by or [])
    if _wants_csv(format, accept):
        lines = await reports.csv_lines(
            rt.sessions, actor, span=span, keys=keys, team=team, at=at, timezone=timezone
        )
        name = f"usage-{span.start:%Y%m%dT%H%M%S}-{span.end:%Y%m%dT%H%M%S}.csv"
        return StreamingResponse(
            lines,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return await reports.report(
        session, actor, span=span, keys=keys, team=team, at=at, timezone=timezone
    )


@router.get("/v1/sandboxes/{sandbox_id}/cost", response_model=CostStatement, tags=["sandboxes"])
async def sandbox_cost(
    sandbox_id: SandboxId, actor: SandboxReader, session: SessionDep
) -> CostStatement:
    return await statements.statement(session, actor, sandbox_id, clock.now())
