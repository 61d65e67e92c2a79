"""Fork sources (DESIGN §15): what a create or a fork may copy, and the admin verbs on the
templates an admin allows.

The rule, written once here and used by the native create and fork (`app.sandboxes.creation`)
and by the facade's fork (`app.compat.service`). A source (an upstream id) is forkable by a
caller, for the team that will own the copy, when it is

    a sandbox the caller may see (`app.sandboxes.access`, the load rule of every path id: the
        caller's team's, only its owner's for an owner-bound caller, any for an admin) that is
        not deleted or failed; or
    the configured default template (`CORRAL_DEFAULT_TEMPLATE`); or
    a template an admin allowed for the organisation or for that team (`fork_templates`).

Anything else is refused with `ForkSourceNotAllowed`, before any record or upstream call.
No existence oracle: another team's or another owner's sandbox, an upstream sandbox Corral
does not know, and an id that exists nowhere get the same refusal, which names only what the
caller sent and the team it asked for. Admins see every sandbox Corral knows, but the upstream
key also reaches sandboxes outside Corral that nobody chose to share, so an id Corral knows
neither as a sandbox nor as an allowed template is refused for admins too.

Admin verbs: allow (idempotent: a second allow changes nothing and writes no audit row),
disallow (404 when it was not allowed), list. The default template is always allowed: it is
listed first, flagged `default`, allowing it stores nothing, and disallowing it is refused
(409 `default-template`): only the setting changes it. Every change writes its audit row in
the caller's transaction; nothing here commits.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.audit import service as audit
from app.errors import Conflict, Forbidden, InvalidState, NotFound
from app.identity import service as identity_service
from app.identity.actor import Actor
from app.models import ForkTemplate, Sandbox
from app.sandboxes import access
from app.sandboxes import repository as sandboxes_repository
from app.sandboxes.states import FINAL
from app.templates import repository
from app.templates.schemas import ForkTemplateOut


class ForkSourceNotAllowed(Forbidden):
    kind = "fork-source-not-allowed"

    def __init__(self, source: str, team_id: str) -> None:
        super().__init__(
            f"{source!r} is not a fork source for team {team_id!r}: only the default template, "
            "a template an admin allowed (for the organisation or for the team), or a sandbox "
            "of the team that this key may see can be forked.",
            extra={"source": source, "team": team_id},
        )


class DefaultTemplate(Conflict):
    kind = "default-template"

    def __init__(self, upstream_id: str) -> None:
        super().__init__(
            f"{upstream_id!r} is the configured default template (CORRAL_DEFAULT_TEMPLATE): it "
            "is always forkable; change the setting to change it."
        )


class ForkTemplateNotFound(NotFound):
    kind = "fork-template-not-found"

    def __init__(self, upstream_id: str, team_id: str | None) -> None:
        where = "the organisation" if team_id is None else f"team {team_id!r}"
        super().__init__(f"Template {upstream_id!r} is not allowed for {where}.")


# --- the rule ------------------------------------------------------------------------------


async def fork_source(
    session: AsyncSession, actor: Actor, source: str, *, team_id: str, default_template: str
) -> Sandbox | None:
    """The caller's sandbox when `source` is one, None when it is an allowed template;
    otherwise `ForkSourceNotAllowed`, the same whether or not `source` exists."""
    # Most creates fork the default template: it needs no query.
    if source == default_template:
        return None
    known = await sandboxes_repository.get_by_upstream_id(
        session, source, team_id=access.visible_team(actor)
    )
    if known is not None and access.may_see(actor, known):
        # The caller's own: saying what state it is in reveals nothing.
        if known.state in FINAL:
            raise InvalidState(known.id, known.state, cannot="be forked")
        return known
    if await repository.is_allowed(session, source, team_id):
        return None
    raise ForkSourceNotAllowed(source, team_id)


# --- admin verbs ---------------------------------------------------------------------------


def _default(upstream_id: str) -> ForkTemplateOut:
    return ForkTemplateOut(
        upstream_id=upstream_id, team=None, default=True, allowed_at=None, allowed_by=None
    )


def _out(row: ForkTemplate) -> ForkTemplateOut:
    return ForkTemplateOut(
        upstream_id=row.upstream_id,
        team=row.team_id,
        allowed_at=row.allowed_at,
        allowed_by=row.allowed_by,
    )


async def list_allowed(
    session: AsyncSession, *, team_id: str | None, default_template: str
) -> list[ForkTemplateOut]:
    """What may be forked besides sandboxes: the default template, the organisation's
    templates, and (for a team) the team's own, each entry saying where it is allowed."""
    rows = await repository.listed(session, None)
    if team_id is not None:
        await identity_service.get_team(session, team_id)
        rows += await repository.listed(session, team_id)
    return [_default(default_template), *(_out(row) for row in rows)]


async def allow(
    session: AsyncSession,
    actor: Actor,
    upstream_id: str,
    *,
    team_id: str | None,
    default_template: str,
) -> tuple[ForkTemplateOut, bool]:
    """Allow a template for the organisation (team_id None) or one team: (entry, created)."""
    if team_id is not None:
        await identity_service.get_team(session, team_id)
    if upstream_id == default_template:
        return _default(upstream_id), False
    row, created = await repository.add(
        session, upstream_id, team_id, at=clock.now(), by=actor.key_id
    )
    if created:
        await audit.record(
            session,
            actor=actor.key_id,
            action="fork_template.allow",
            team_id=team_id,
            target=upstream_id,
            detail={"scope": "organisation" if team_id is None else "team"},
        )
    return _out(row), created


async def disallow(
    session: AsyncSession,
    actor: Actor,
    upstream_id: str,
    *,
    team_id: str | None,
    default_template: str,
) -> None:
    if team_id is not None:
        await identity_service.get_team(session, team_id)
    if upstream_id == default_template:
        raise DefaultTemplate(upstream_id)
    if not await repository.remove(session, upstream_id, team_id):
        raise ForkTemplateNotFound(upstream_id, team_id)
    await audit.record(
        session,
        actor=actor.key_id,
        action="fork_template.disallow",
        team_id=team_id,
        target=upstream_id,
        detail={"scope": "organisation" if team_id is None else "team"},
    )
