"""The lifecycle verbs on an existing sandbox: get, start, restart, hibernate/shutdown, update,
delete, events. States, transitions and phases are described in `lifecycle`; creating is in
`creation`.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.admission import service as admission
from app.audit import service as audit
from app.db import transaction
from app.errors import Conflict
from app.identity.actor import Actor
from app.models import Sandbox
from app.runtime import Runtime
from app.sandboxes import lifecycle, repository
from app.sandboxes.schemas import Accrued, SandboxPatch
from app.upstream.errors import UpstreamNotFound
from app.upstream.problems import to_problem
from app.usage import ledger, statements


async def get(rt: Runtime, actor: Actor, sandbox_id: str) -> tuple[Sandbox, Accrued]:
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.load(session, actor, sandbox_id, lock=False)
        # Priced like its cost statement: per started minute, by the price-book version(s).
        total = await statements.accrued(session, sandbox.id, lifecycle.now())
    return sandbox, Accrued(
        seconds=total.seconds.quantize(Decimal("0.001")),
        billed_minutes=total.billed_minutes,
        credits=total.credits,
        usd=total.usd.quantize(Decimal("0.000001")),
    )


async def start(
    rt: Runtime, actor: Actor, sandbox_id: str, *, action: str = "start"
) -> lifecycle.Outcome:
    async with transaction(rt.sessions) as session:
        # Lock order: the org row (inside admit) before the sandbox row; see admission.
        sandbox = await lifecycle.load(session, actor, sandbox_id, lock=False)
        _check_startable(sandbox)
        if sandbox.state != "running":
            await admission.admit(
                session, sandbox.team_id, owner=sandbox.owner, tier=sandbox.tier, action=action
            )
        sandbox = await lifecycle.load(session, actor, sandbox_id, lock=True)
        _check_startable(sandbox)
        previous = sandbox.state
        if previous != "running":
            await _reserve(rt, session, sandbox, actor)
    if previous == "running":
        return await _start_running(rt, actor, sandbox)
    assert sandbox.upstream_id is not None
    return await lifecycle.start_reserved(
        rt,
        actor,
        sandbox,
        action="sandbox.start",
        revert_to=previous,
        upstream_id=sandbox.upstream_id,
    )


def _require_upstream_id(sandbox: Sandbox) -> None:
    """A create whose fork answer was lost has no upstream id until the reconciler finds it."""
    if sandbox.upstream_id is None:
        raise Conflict(
            f"Sandbox {sandbox.id!r} is {sandbox.state} and not yet found upstream; the "
            "reconciler resolves it within two periods.",
            kind="invalid-state",
            extra={"state": sandbox.state},
        )


def _check_startable(sandbox: Sandbox) -> None:
    if sandbox.state in lifecycle.FINAL_STATES or sandbox.state in ("starting", "unknown"):
        raise Conflict(
            f"Sandbox {sandbox.id!r} is {sandbox.state}; it cannot be started now.",
            kind="invalid-state",
            extra={"state": sandbox.state},
        )


async def _reserve(rt: Runtime, session: AsyncSession, sandbox: Sandbox, actor: Actor) -> None:
    sandbox.reservation_expires_at = lifecycle.now() + timedelta(
        seconds=rt.settings.reservation_ttl_seconds
    )
    await lifecycle.transition(session, sandbox, "starting", cause="api", actor=actor.key_id)


async def _start_running(rt: Runtime, actor: Actor, sandbox: Sandbox) -> lifecycle.Outcome:
    """Start a sandbox Corral believes running: the upstream answers RUNNING, or tells us it
    had stopped on its own (RESUME/CLEAN), in which case the ledger is corrected."""
    assert sandbox.upstream_id is not None
    started, err = await lifecycle.call_upstream(
        lambda: rt.upstream.start(sandbox.upstream_id or "", lifecycle.start_options(sandbox))
    )
    if err is not None:
        raise to_problem(err, sandbox_id=sandbox.id)
    assert started is not None
    async with transaction(rt.sessions) as session:
        row = await lifecycle.reload(session, sandbox.id)
        if started.bootup_type != "RUNNING" and row.state == "running":
            # It had stopped upstream unseen: close the stale interval, open a fresh one.
            at = lifecycle.now()
            await lifecycle.transition(
                session, row, "hibernated", cause="upstream", actor=None, at=at
            )
            await lifecycle.transition(
                session,
                row,
                "running",
                cause="api",
                actor=actor.key_id,
                at=at,
                detail={"bootup_type": started.bootup_type},
            )
        await audit.record_sandbox(
            session,
            row,
            actor=actor.key_id,
            action="sandbox.start",
            detail={"bootup_type": started.bootup_type},
        )
    return lifecycle.Outcome(row, started.bootup_type, started)


async def restart(rt: Runtime, actor: Actor, sandbox_id: str) -> lifecycle.Outcome:
    """Shutdown then start, like the upstream SDK: the VM boots CLEAN on the latest agent."""
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.load(session, actor, sandbox_id, lock=True)
        _check_startable(sandbox)
    if sandbox.state == "running":
        await stop(rt, actor, sandbox_id, to_state="shutdown")
    return await start(rt, actor, sandbox_id, action="restart")


async def stop(
    rt: Runtime, actor: Actor, sandbox_id: str, *, to_state: str, cause: str = "api"
) -> lifecycle.Outcome:
    """Hibernate or shut down. A sandbox that is already stopped is answered as it is; one
    the upstream reports not running (404) had stopped on its own, and is recorded so.
    `cause` is why Corral stops it (`api`, or `budget`/`admin` for automatic stops), recorded
    in the event and the audit row."""
    verb = "hibernate" if to_state == "hibernated" else "shutdown"
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.load(session, actor, sandbox_id, lock=False)
        if sandbox.state in lifecycle.STOPPED_STATES:
            return lifecycle.Outcome(sandbox)
        if sandbox.state not in ("running", "unknown"):
            raise Conflict(
                f"Sandbox {sandbox_id!r} is {sandbox.state}; it cannot {verb} now.",
                kind="invalid-state",
                extra={"state": sandbox.state},
            )
    _require_upstream_id(sandbox)
    upstream_id = sandbox.upstream_id
    assert upstream_id is not None
    call = rt.upstream.hibernate if verb == "hibernate" else rt.upstream.shutdown
    _, err = await lifecycle.call_upstream(lambda: call(upstream_id))
    if err is not None and not isinstance(err, UpstreamNotFound):
        async with transaction(rt.sessions) as session:
            await audit.record_sandbox(
                session,
                sandbox,
                actor=actor.key_id,
                action=f"sandbox.{verb}",
                cause=cause,
                outcome="error",
                detail={"upstream_status": err.status},
            )
        raise to_problem(err, sandbox_id=sandbox_id)
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.reload(session, sandbox_id)
        if sandbox.state in ("running", "unknown"):
            already_stopped = isinstance(err, UpstreamNotFound)
            await lifecycle.transition(
                session,
                sandbox,
                to_state,
                cause="upstream" if already_stopped else cause,
                actor=None if already_stopped else actor.key_id,
                detail={"upstream": "not running"} if already_stopped else None,
            )
        await audit.record_sandbox(
            session,
            sandbox,
            actor=actor.key_id,
            action=f"sandbox.{verb}",
            cause=cause,
        )
    return lifecycle.Outcome(sandbox)


async def update(
    rt: Runtime, actor: Actor, sandbox_id: str, body: SandboxPatch
) -> lifecycle.Outcome:
    """Title is Corral's own; tier and hibernation timeout apply live to a running VM (a tier
    change splits the usage interval), and otherwise at the next start."""
    changes = body.model_dump(exclude_unset=True)
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.load(session, actor, sandbox_id, lock=False)
        if sandbox.state in lifecycle.FINAL_STATES or sandbox.state == "starting":
            raise Conflict(
                f"Sandbox {sandbox_id!r} is {sandbox.state}; it cannot be changed now.",
                kind="invalid-state",
                extra={"state": sandbox.state},
            )
        _require_upstream_id(sandbox)
        if changes.get("tier") not in (None, sandbox.tier):
            await admission.check_resize(session, sandbox, changes["tier"])
    running = sandbox.state == "running"
    upstream_id = sandbox.upstream_id or ""
    tier = changes.get("tier")
    timeout = changes.get("hibernation_timeout_seconds")
    if running and tier is not None and tier != sandbox.tier:
        _, err = await lifecycle.call_upstream(lambda: rt.upstream.update_specs(upstream_id, tier))
        if err is not None:
            raise to_problem(err, sandbox_id=sandbox_id)
    if running and timeout is not None:
        _, err = await lifecycle.call_upstream(
            lambda: rt.upstream.update_hibernation_timeout(upstream_id, timeout)
        )
        if err is not None:
            raise to_problem(err, sandbox_id=sandbox_id)
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.reload(session, sandbox_id)
        if "title" in changes:
            sandbox.title = changes["title"]
        if timeout is not None:
            sandbox.hibernation_timeout_seconds = timeout
        if tier is not None and tier != sandbox.tier:
            sandbox.tier = tier
            if sandbox.state == "running":
                await ledger.split_interval(session, sandbox, lifecycle.now(), "resize")
        sandbox.updated_at = lifecycle.now()
        await audit.record_sandbox(
            session,
            sandbox,
            actor=actor.key_id,
            action="sandbox.update",
            detail={k: v for k, v in changes.items() if k != "title"},
        )
    return lifecycle.Outcome(sandbox)


async def delete(rt: Runtime, actor: Actor, sandbox_id: str) -> lifecycle.Outcome:
    """Shut down if running, delete upstream, keep the record and its usage."""
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.load(session, actor, sandbox_id, lock=False)
        if sandbox.state == "deleted":
            return lifecycle.Outcome(sandbox)
        if sandbox.state == "starting":
            raise Conflict(
                f"Sandbox {sandbox_id!r} is starting; delete it once it has settled.",
                kind="invalid-state",
                extra={"state": sandbox.state},
            )
    if sandbox.state in ("running", "unknown"):
        await stop(rt, actor, sandbox_id, to_state="shutdown")
    if sandbox.upstream_id is not None:
        upstream_id = sandbox.upstream_id
        _, err = await lifecycle.call_upstream(lambda: rt.upstream.delete(upstream_id))
        if err is not None and not isinstance(err, UpstreamNotFound):
            raise to_problem(err, sandbox_id=sandbox_id)
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.reload(session, sandbox_id)
        if sandbox.state != "deleted":
            await lifecycle.transition(session, sandbox, "deleted", cause="api", actor=actor.key_id)
        await audit.record_sandbox(
            session,
            sandbox,
            actor=actor.key_id,
            action="sandbox.delete",
        )
    return lifecycle.Outcome(sandbox)


async def events(rt: Runtime, actor: Actor, sandbox_id: str) -> list[Any]:
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.load(session, actor, sandbox_id, lock=False)
        return await repository.events(session, sandbox.id)
