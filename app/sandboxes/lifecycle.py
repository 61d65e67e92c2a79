"""The mechanics every lifecycle verb shares: loading again, calling the upstream, the start.

States (app/sandboxes/states.py) and what a transition writes (app/sandboxes/transitions.py):

    create ──► starting ──► running            fork + start succeeded
                   │   ├──► shutdown           fork succeeded, start=false
                   │   ├──► failed             the upstream refused, or the start after the fork
                   │   └──► unknown            the fork's answer was lost and could not be looked up
    hibernated|shutdown ──► starting ──► running (start; a failed start goes back where it was)
    running ──► hibernated | shutdown          hibernate, shutdown (or seen stopped upstream)
    any but starting ──► deleted               the record and its usage stay

No transaction stays open across an upstream call. Each verb runs in phases:
1. lock the row (`SELECT … FOR UPDATE`), check the transition, reserve (`starting`), commit;
2. call the upstream, outside any transaction;
3. settle what actually happened: a start that succeeded as one guarded statement that moves
   the row only if it is still `starting` (`transitions.settle`, the common case made cheap);
   anything else locks the row again and settles it, commit.
A process that dies between 1 and 3 leaves a `starting` row whose reservation expires; the
reconciler resolves it from the `corral-op-<operation id>` tag every created sandbox carries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.audit import service as audit
from app.db import transaction
from app.identity.actor import Actor
from app.models import Sandbox
from app.runtime import Runtime
from app.sandboxes import repository, transitions
from app.sandboxes.states import SandboxState
from app.sandboxes.transitions import Audit, Move
from app.upstream.errors import UpstreamError
from app.upstream.problems import to_problem
from app.upstream.schemas import StartOptions, StartResult

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """A sandbox after a verb, with the upstream's boot type when the verb started it."""

    sandbox: Sandbox
    bootup_type: str | None = None
    start: StartResult | None = None


async def reload(session: AsyncSession, sandbox_id: str) -> Sandbox:
    """The row again, locked, for phase 3 (visibility was checked in phase 1)."""
    sandbox = await repository.get(session, sandbox_id, team_id=None, for_update=True)
    assert sandbox is not None, "sandbox rows are never deleted"
    return sandbox


async def call_upstream(
    call: Callable[[], Awaitable[T]],
) -> tuple[T | None, UpstreamError | None]:
    try:
        return await call(), None
    except UpstreamError as err:
        return None, err


def start_options(sandbox: Sandbox) -> StartOptions:
    return StartOptions(
        tier=sandbox.tier,
        hibernation_timeout_seconds=sandbox.hibernation_timeout_seconds,
        automatic_wakeup_config={"http": sandbox.automatic_wakeup, "websocket": False},
    )


async def start_reserved(
    rt: Runtime,
    actor: Actor,
    reserved: Sandbox,
    *,
    action: str,
    revert_to: SandboxState | None,
    upstream_id: str,
) -> Outcome:
    """Phase 2 and 3 of a start whose `starting` reservation is committed. `reserved` is the
    row as committed in phase 1, only read here; `action` names the audit row."""
    sandbox_id = reserved.id
    options = start_options(reserved)
    started, err = await call_upstream(lambda: rt.upstream.start(upstream_id, options))
    if started is not None:
        detail = {"bootup_type": started.bootup_type}
        settled = await transitions.settle(
            rt.engine,
            Move(
                sandbox_id=sandbox_id,
                from_state=SandboxState.STARTING,
                to_state=SandboxState.RUNNING,
                tier=reserved.tier,
                at=clock.now(),
                cause="api",
                actor=actor.key_id,
                detail=detail,
                audit=Audit(action, detail),
                upstream_id=upstream_id,
            ),
        )
        if settled is not None:
            return Outcome(settled, started.bootup_type, started)
    # The start failed, or the reconciler settled the reservation while it was in flight.
    async with transaction(rt.sessions) as session:
        sandbox = await reload(session, sandbox_id)
        if err is not None:
            outcome = Audit(action, {"upstream_status": err.status}, outcome="error")
            if sandbox.state == SandboxState.STARTING:
                # A create whose start failed is `failed`; its forked sandbox is removed below.
                await transitions.move(
                    session,
                    sandbox,
                    revert_to or SandboxState.FAILED,
                    cause="api",
                    actor=actor.key_id,
                    detail={"error": "start", "upstream_status": err.status},
                    audit=outcome,
                    upstream_id=upstream_id,
                )
            else:
                await audit.record_sandbox(
                    session,
                    sandbox,
                    actor=actor.key_id,
                    action=action,
                    outcome="error",
                    detail=dict(outcome.detail),
                )
        else:
            assert started is not None
            detail = {"bootup_type": started.bootup_type}
            if sandbox.state != SandboxState.RUNNING:
                await transitions.move(
                    session,
                    sandbox,
                    SandboxState.RUNNING,
                    cause="api",
                    actor=actor.key_id,
                    detail=detail,
                    audit=Audit(action, detail),
                    upstream_id=upstream_id,
                )
            else:
                await audit.record_sandbox(
                    session, sandbox, actor=actor.key_id, action=action, detail=detail
                )
    if err is not None:
        if revert_to is None:
            # Nothing should stay behind upstream for a create that failed.
            await call_upstream(lambda: rt.upstream.delete(upstream_id))
        raise to_problem(err, sandbox_id=sandbox_id)
    assert started is not None
    return Outcome(sandbox, started.bootup_type, started)
