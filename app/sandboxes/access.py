"""Who may see which sandbox: the one load-or-404 rule of every route (DESIGN §15).

An admin sees every sandbox; a team key its team's; a caller bound to an owner (a bound key,
or `X-Corral-Owner` on the facade) only that owner's. Anything else is answered exactly like a
sandbox that does not exist, so a caller never learns what others have.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import SandboxNotFound
from app.identity.actor import Actor
from app.models import Sandbox
from app.sandboxes import repository


def visible_team(actor: Actor) -> str | None:
    """The team whose sandboxes the actor sees (None: every team)."""
    return None if actor.is_admin else actor.team_id


def may_see(actor: Actor, sandbox: Sandbox | None) -> bool:
    if sandbox is None:
        return False
    if not actor.is_admin and sandbox.team_id != actor.team_id:
        return False
    return actor.owner is None or sandbox.owner == actor.owner


async def load(
    session: AsyncSession, actor: Actor, sandbox_id: str, *, lock: bool = False
) -> Sandbox:
    """The sandbox if the actor may see it (locked `FOR UPDATE` when asked), else 404."""
    sandbox = await repository.get(
        session, sandbox_id, team_id=visible_team(actor), for_update=lock
    )
    return visible(actor, sandbox, sandbox_id)


def visible(actor: Actor, sandbox: Sandbox | None, sandbox_id: str) -> Sandbox:
    """The sandbox a lookup scoped by `visible_team` found, if the actor may see it, else
    404: for a query that loads the sandbox with more than its row."""
    if sandbox is None or not may_see(actor, sandbox):
        raise SandboxNotFound(sandbox_id)
    return sandbox
