"""The SDK-compatible facade: upstream verbs mapped onto Corral's own services.

Nothing here talks to the upstream about a sandbox's lifecycle directly: every verb goes
through `app.sandboxes.service`, so admission, reservations, the ledger, events and audit are
exactly those of the native API. The mapping:

    POST /sandbox/{src}/fork    → sandboxes.create (a template) or sandboxes.fork (own sandbox),
                                  start=False unless `start_options` is sent (the SDK never
                                  sends it: it forks, then starts)
    POST /vm/{id}/start         → sandboxes.update (start options, when stopped), sandboxes.start
    POST /vm/{id}/hibernate     → sandboxes.stop (and /shutdown)
    DELETE /vm/{id}             → sandboxes.delete
    PUT /vm/{id}/specs          → sandboxes.update (and /hibernation_timeout)

Ids. The facade speaks upstream ids; each is resolved to the caller's team's sandbox, and
another team's sandbox (or a deleted one, or an unknown id) is the upstream's 404, so a key
learns nothing about other teams. A fork source is what `app.templates.service.fork_source`
allows, the rule of the native create too: the caller's own sandbox, the default template, or
a template an admin allowed; anything else is refused (403, the same whether or not it exists),
and the new sandbox is the caller's team's.

Shell credentials. A start's answer holds the VM's pitcher, pint and reconnect tokens: a shell
on it. `/vm/{id}/start` and a fork with `start_options` therefore need `sessions:write`
(checked before anything changes) and record what they hand out like a minted session
(`sessions.record_start`, via `csb-start`; never the tokens).

Owner. The key's bound owner, or the `X-Corral-Owner` header of an unbound key, acts like an
owner-bound key for the request: new sandboxes get that owner, and only that owner's
sandboxes are visible.

Hibernate or shut down a sandbox that is not running: the upstream answers 404 there, but the
facade answers 200 `data: {}` (the sandbox is left as it is). The caller's goal, "not running",
holds, and the SDK's `restart` (shutdown, then start) would otherwise fail on every hibernated
sandbox. A deleted or unknown sandbox is still 404.

Sessions are minted by `app.sessions.service.mint` (admission when the sandbox is stopped, the
resume, the upstream call, the record and the audit row), honouring the session id the SDK
chose, except for an owner-bound caller: it always gets its owner's session id (session ids
are computable, so honouring one would let it become another person's Linux user). The answer
is the upstream's `VMCreateSessionResponse`: the session service keeps only what the SDK reads
from it (token, URL, workspace path), so `username` is the session id used (how the upstream
names the Linux user) and `capabilities` is empty.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from app import clock
from app.admission import service as admission
from app.audit import service as audit
from app.compat import repository as compat_repository
from app.compat.schemas import PRIVACY_NAMES, ForkRequest, StartRequest, sandbox_view, specs_of
from app.db import reading, transaction
from app.errors import OwnerMismatch, SandboxNotFound, TeamKeyRequired
from app.identity.actor import Actor
from app.models import Sandbox, Team
from app.runtime import Runtime
from app.sandboxes import access, creation, lifecycle, repository
from app.sandboxes import service as sandboxes
from app.sandboxes.schemas import SandboxCreate, SandboxFork, SandboxPatch
from app.sandboxes.states import FINAL, SandboxState
from app.sessions import service as sessions
from app.templates import service as templates
from app.usage import ledger

MAX_PAGE_SIZE = 50
API_VERSION = "2023-07-01"
# The upstream scopes a Corral scope stands for, as /meta/info reports them.
UPSTREAM_SCOPES = {
    "sandboxes:read": ("sandbox:read",),
    "sandboxes:write": ("sandbox:create", "sandbox:edit_code", "vm:manage", "preview_token:manage"),
}


def not_found() -> SandboxNotFound:
    # The upstream's own wording, so the SDK reports it as it would the upstream's 404.
    return SandboxNotFound("", detail="Sandbox not found")


def acting(actor: Actor, owner_header: str | None) -> Actor:
    """The actor for a facade request: team keys only, with the owner of the request."""
    if actor.is_admin or actor.team_id is None:
        raise TeamKeyRequired("The SDK facade")
    if owner_header is None or owner_header == actor.owner:
        return actor
    if actor.owner is not None:
        raise OwnerMismatch()
    return replace(actor, owner=owner_header)


def _visible(actor: Actor, sandbox: Sandbox | None) -> Sandbox:
    # The upstream lists no deleted sandbox, and never created a failed one.
    if sandbox is None or not access.may_see(actor, sandbox) or sandbox.state in FINAL:
        raise not_found()
    return sandbox


async def resolve(rt: Runtime, actor: Actor, upstream_id: str) -> Sandbox:
    """The caller's sandbox with this upstream id, or the upstream's 404."""
    async with reading(rt.sessions) as session:
        found = await repository.get_by_upstream_id(session, upstream_id, team_id=actor.team_id)
    return _visible(actor, found)


# --- create, fork, start -----------------------------------------------------------------


async def fork(rt: Runtime, actor: Actor, source: str, body: ForkRequest) -> lifecycle.Outcome:
    if body.start_options is not None:
        # Refused before the fork, not after it: the start's answer is a shell.
        sessions.authorise_shell(actor)
    options = body.start_options or StartRequest()
    wakeup = options.automatic_wakeup_config
    common: dict[str, Any] = {
        "title": body.title,
        "tier": options.tier,
        "hibernation_timeout_seconds": options.hibernation_timeout_seconds,
        "tags": body.tags,
        "privacy": PRIVACY_NAMES[body.privacy if body.privacy is not None else 2],
        "start": body.start_options is not None,
        "automatic_wakeup": True if wakeup is None or wakeup.http is None else wakeup.http,
    }
    assert actor.team_id is not None
    async with transaction(rt.sessions) as session:
        own = await templates.fork_source(
            session,
            actor,
            source,
            team_id=actor.team_id,
            default_template=rt.settings.default_template,
        )
    if own is not None:
        outcome = await creation.fork(rt, actor, own.id, SandboxFork(**common))
    else:
        spec = creation.create_spec(rt, actor, SandboxCreate(template=source, **common))
        outcome = await creation.create(rt, actor, spec)
    if outcome.start is not None:
        await sessions.record_start(rt, actor, outcome.sandbox, outcome.start, via="csb-start")
    return outcome


async def start(
    rt: Runtime, actor: Actor, upstream_id: str, body: StartRequest
) -> lifecycle.Outcome:
    """Start or resume. Options apply to a stopped sandbox before it boots (a running VM keeps
    its settings, as upstream); a tier above `max_tier`, or a caller without `sessions:write`
    (the answer is a shell), is refused before anything changes."""
    sessions.authorise_shell(actor)
    sandbox = await resolve(rt, actor, upstream_id)
    if sandbox.state != "running":
        changes: dict[str, Any] = {}
        if body.tier is not None and body.tier != sandbox.tier:
            changes["tier"] = body.tier
        timeout = body.hibernation_timeout_seconds
        if timeout is not None and timeout != sandbox.hibernation_timeout_seconds:
            changes["hibernation_timeout_seconds"] = timeout
        if changes:
            await sandboxes.update(rt, actor, sandbox.id, SandboxPatch(**changes))
        wakeup = body.automatic_wakeup_config
        if wakeup is not None and wakeup.http is not None:
            await _set_automatic_wakeup(rt, actor, sandbox.id, wakeup.http)
    outcome = await sandboxes.start(rt, actor, sandbox.id)
    assert outcome.start is not None, "a start always carries the upstream's answer"
    await sessions.record_start(rt, actor, outcome.sandbox, outcome.start, via="csb-start")
    return outcome


async def _set_automatic_wakeup(rt: Runtime, actor: Actor, sandbox_id: str, http: bool) -> None:
    async with transaction(rt.sessions) as session:
        sandbox = await repository.get(session, sandbox_id, team_id=actor.team_id, for_update=True)
        if sandbox is None or sandbox.automatic_wakeup == http:
            return
        sandbox.automatic_wakeup = http
        sandbox.updated_at = clock.now()
        await audit.record_sandbox(
            session,
            sandbox,
            actor=actor.key_id,
            action="sandbox.update",
            detail={"automatic_wakeup": http},
        )


async def stop(rt: Runtime, actor: Actor, upstream_id: str, *, to_state: SandboxState) -> None:
    sandbox = await resolve(rt, actor, upstream_id)
    await sandboxes.stop(rt, actor, sandbox.id, to_state=to_state)


async def delete(rt: Runtime, actor: Actor, upstream_id: str) -> None:
    sandbox = await resolve(rt, actor, upstream_id)
    await sandboxes.delete(rt, actor, sandbox.id)


async def update(rt: Runtime, actor: Actor, upstream_id: str, patch: SandboxPatch) -> Sandbox:
    sandbox = await resolve(rt, actor, upstream_id)
    return (await sandboxes.update(rt, actor, sandbox.id, patch)).sandbox


# --- sessions -------------------------------------------------------------------------


async def create_session(
    rt: Runtime, actor: Actor, upstream_id: str, *, session_id: str, permission: str
) -> dict[str, Any]:
    sandbox = await resolve(rt, actor, upstream_id)
    # An owner-bound caller mints as its owner, and as its owner's Linux user: the id the SDK
    # sent is not honoured, since anyone can compute another person's.
    minted = await sessions.mint(
        rt,
        actor,
        sandbox.id,
        user=actor.owner or session_id,
        permission=permission,
        via="csb",
        session_id=None if actor.owner is not None else session_id,
    )
    answer = minted.session
    return {
        "username": answer.sessionId,
        "pitcher_token": answer.pitcherToken,
        "pitcher_url": answer.pitcherURL,
        "user_workspace_path": answer.userWorkspacePath,
        "capabilities": [],
        "permissions": {"read": True, "write": permission == "write"},
    }


# --- reads -------------------------------------------------------------------------------


async def list_page(
    rt: Runtime,
    actor: Actor,
    *,
    tags: list[str],
    running_only: bool,
    order_by: str,
    descending: bool,
    page: int,
    page_size: int,
) -> dict[str, Any]:
    """`GET /sandbox`: the team's sandboxes, `page_size` clamped to the upstream's 50."""
    size = min(page_size, MAX_PAGE_SIZE)
    assert actor.team_id is not None
    # Reads alone: under read committed a transaction would give its two statements no more
    # of one snapshot than autocommit does, and would cost BEGIN and COMMIT.
    async with reading(rt.sessions) as session:
        rows, total = await compat_repository.page(
            session,
            team_id=actor.team_id,
            owner=actor.owner,
            tags=tags,
            running_only=running_only,
            order_by=order_by,
            descending=descending,
            page=page,
            page_size=size,
        )
    return {
        "sandboxes": [sandbox_view(row) for row in rows],
        "pagination": {
            "total_records": total,
            "current_page": page,
            "next_page": page + 1 if page * size < total else None,
        },
    }


async def running_vms(rt: Runtime, actor: Actor) -> dict[str, Any]:
    """`GET /vm/running`: the team's (or owner's) running VMs and the team's effective limit.

    Timestamps are epoch seconds: the SDK's `listRunning` parses numbers (an ISO string would
    become a date in 1970 there)."""
    assert actor.team_id is not None
    at = clock.now()
    # Unlocked reads: the answer is a listing, as the upstream's is. Every row carries the
    # limits; the VM columns are NULL on the one row when none runs.
    async with reading(rt.sessions) as session:
        rows = await compat_repository.running(session, team_id=actor.team_id, owner=actor.owner)
        limits = rows[0]
        # The price book read once, not once per VM, and only when it changed.
        mark = (limits.book_versions, limits.book_last_id)
        prices = await ledger.price_table_marked(await session.connection(), mark)
    vms = []
    for row in rows if limits.upstream_id is not None else ():
        rate, _ = prices.price(row.tier, at)
        vms.append(
            {
                "id": row.upstream_id,
                "last_active_at": _epoch(row.upstream_last_active_at or row.last_started_at),
                "session_started_at": _epoch(row.last_started_at),
                "credit_basis": str(admission.plain(rate)),
                "specs": specs_of(row.tier),
            }
        )
    # The team's cap within the org's effective limit.
    limit = admission.effective_limit(limits)
    if limits.team_limit is not None:
        limit = min(limits.team_limit, limit)
    return {"concurrent_vm_count": len(vms), "concurrent_vm_limit": limit, "vms": vms}


def _epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


async def meta_info(rt: Runtime, actor: Actor | None) -> dict[str, Any]:
    """`GET /meta/info`, unwrapped: the caller's limits as `rate_limits.concurrent_vms`."""
    info: dict[str, Any] = {
        "api": {"name": "Corral (CodeSandbox-compatible)", "latest_version": API_VERSION}
    }
    if actor is None or actor.team_id is None:
        return info
    scopes = sorted({s for scope in actor.scopes for s in UPSTREAM_SCOPES.get(scope, ())})
    async with reading(rt.sessions) as session:
        plan = await admission.load_plan(session, lock=False)
        team = await session.get(Team, actor.team_id)
        used = await admission.usage(session, plan, actor.team_id, actor.owner)
    assert team is not None
    # Every concurrency limit that applies to this caller, as (maximum, live now).
    bounds = [(used.effective_limit, used.org_live)]
    if team.max_concurrent is not None:
        bounds.append((team.max_concurrent, used.team_live))
    if actor.owner is not None and team.max_concurrent_per_owner is not None:
        bounds.append((team.max_concurrent_per_owner, used.owner_live))
    info["auth"] = {"scopes": scopes, "team": actor.team_id, "version": API_VERSION}
    info["rate_limits"] = {
        "concurrent_vms": {
            "limit": min(maximum for maximum, _ in bounds),
            "remaining": max(min(maximum - live for maximum, live in bounds), 0),
        }
    }
    return info
