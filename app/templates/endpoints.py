"""Admin routes on fork templates: allow, disallow and list them for the organisation or for
one team (admin keys only). The rule they feed is `app.templates.service.fork_source`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from app.deps import AdminActor, SessionDep, SettingsDep
from app.sandboxes.schemas import TEMPLATE_PATTERN
from app.templates import service
from app.templates.schemas import ForkTemplateOut

router = APIRouter(prefix="/v1/admin", tags=["admin"])

TeamPath = Annotated[str, Path(pattern=r"^[a-z0-9-]{1,63}$")]
# The shape a fork source may have in an upstream URL, no longer than the column keeps.
TemplatePath = Annotated[
    str,
    Path(pattern=TEMPLATE_PATTERN, max_length=64, description="The template's upstream id"),
]


def _status(response: Response, created: bool) -> None:
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK


@router.get("/fork-templates", response_model=list[ForkTemplateOut])
async def list_org_templates(
    actor: AdminActor, session: SessionDep, settings: SettingsDep
) -> list[ForkTemplateOut]:
    return await service.list_allowed(
        session, team_id=None, default_template=settings.default_template
    )


@router.put(
    "/fork-templates/{upstream_id}",
    response_model=ForkTemplateOut,
    responses={201: {"description": "Newly allowed"}},
)
async def allow_org_template(
    upstream_id: TemplatePath,
    actor: AdminActor,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> ForkTemplateOut:
    entry, created = await service.allow(
        session, actor, upstream_id, team_id=None, default_template=settings.default_template
    )
    _status(response, created)
    return entry


@router.delete("/fork-templates/{upstream_id}", status_code=status.HTTP_204_NO_CONTENT)
async def disallow_org_template(
    upstream_id: TemplatePath, actor: AdminActor, session: SessionDep, settings: SettingsDep
) -> None:
    await service.disallow(
        session, actor, upstream_id, team_id=None, default_template=settings.default_template
    )


@router.get("/teams/{team}/fork-templates", response_model=list[ForkTemplateOut])
async def list_team_templates(
    team: TeamPath, actor: AdminActor, session: SessionDep, settings: SettingsDep
) -> list[ForkTemplateOut]:
    return await service.list_allowed(
        session, team_id=team, default_template=settings.default_template
    )


@router.put(
    "/teams/{team}/fork-templates/{upstream_id}",
    response_model=ForkTemplateOut,
    responses={201: {"description": "Newly allowed"}},
)
async def allow_team_template(
    team: TeamPath,
    upstream_id: TemplatePath,
    actor: AdminActor,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> ForkTemplateOut:
    entry, created = await service.allow(
        session, actor, upstream_id, team_id=team, default_template=settings.default_template
    )
    _status(response, created)
    return entry


@router.delete("/teams/{team}/fork-templates/{upstream_id}", status_code=status.HTTP_204_NO_CONTENT)
async def disallow_team_template(
    team: TeamPath,
    upstream_id: TemplatePath,
    actor: AdminActor,
    session: SessionDep,
    settings: SettingsDep,
) -> None:
    await service.disallow(
        session, actor, upstream_id, team_id=team, default_template=settings.default_template
    )
