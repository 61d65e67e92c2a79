"""Preview tokens through the facade.

Preview tokens pass through to the upstream for the caller's own sandboxes; mutations are
audited without the secret, which appears only in the creation answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.audit import service as audit
from app.compat.service import not_found, resolve
from app.db import transaction
from app.errors import AppError, MissingScope
from app.identity.actor import Actor
from app.models import Sandbox
from app.runtime import Runtime
from app.upstream.errors import UpstreamError, UpstreamNotFound
from app.upstream.problems import to_problem


def _problem(err: UpstreamError, sandbox: Sandbox) -> AppError:
    if isinstance(err, UpstreamNotFound):
        return not_found()
    return to_problem(err, sandbox_id=sandbox.id)


def _require_write(actor: Actor) -> None:
    # Preview tokens open private ports: managing them is a write, reading them too.
    if not actor.has("sandboxes:write"):
        raise MissingScope("sandboxes:write")


async def _audit(
    rt: Runtime, actor: Actor, sandbox: Sandbox, action: str, detail: dict[str, Any]
) -> None:
    async with transaction(rt.sessions) as session:
        await audit.record(
            session,
            actor=actor.key_id,
            action=action,
            team_id=sandbox.team_id,
            target=sandbox.id,
            detail=detail,
        )


async def create_token(
    rt: Runtime, actor: Actor, upstream_id: str, expires_at: datetime | None
) -> dict[str, Any]:
    _require_write(actor)
    sandbox = await resolve(rt, actor, upstream_id)
    try:
        created = await rt.upstream.create_preview_token(upstream_id, expires_at)
    except UpstreamError as err:
        raise _problem(err, sandbox) from None
    await _audit(
        rt,
        actor,
        sandbox,
        "preview_token.create",
        {"token_id": created.token.token_id, "expires_at": _shown(expires_at)},
    )
    return created.model_dump(mode="json")


async def list_tokens(rt: Runtime, actor: Actor, upstream_id: str) -> dict[str, Any]:
    _require_write(actor)
    sandbox = await resolve(rt, actor, upstream_id)
    try:
        found = await rt.upstream.list_preview_tokens(upstream_id)
    except UpstreamError as err:
        raise _problem(err, sandbox) from None
    return found.model_dump(mode="json")


async def update_token(
    rt: Runtime, actor: Actor, upstream_id: str, token_id: str, expires_at: datetime | None
) -> dict[str, Any]:
    _require_write(actor)
    sandbox = await resolve(rt, actor, upstream_id)
    try:
        updated = await rt.upstream.update_preview_token(upstream_id, token_id, expires_at)
    except UpstreamError as err:
        raise _problem(err, sandbox) from None
    await _audit(
        rt,
        actor,
        sandbox,
        "preview_token.update",
        {"token_id": token_id, "expires_at": _shown(expires_at)},
    )
    return updated.model_dump(mode="json")


async def revoke_tokens(rt: Runtime, actor: Actor, upstream_id: str) -> None:
    _require_write(actor)
    sandbox = await resolve(rt, actor, upstream_id)
    try:
        await rt.upstream.revoke_preview_tokens(upstream_id)
    except UpstreamError as err:
        raise _problem(err, sandbox) from None
    await _audit(rt, actor, sandbox, "preview_token.revoke_all", {})


def _shown(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
