"""The mechanics every lifecycle verb shares: states, transitions, loading, the start phase.

States and transitions (every one writes a sandbox event and an audit row, with its cause, in
the same transaction as the change):

    create ──► starting ──► running            fork + start succeeded
                   │   ├──► shutdown           fork succeeded, start=false
                   │   ├──► failed             the upstream refused, or the start after the fork
                   │   └──► unknown            the fork's answer was lost and could not be looked up
    hibernated|shutdown ──► starting ──► running (start; a failed start goes back where it was)
    running ──► hibernated | shutdown          hibernate, shutdown (or seen stopped upstream)
    any but starting ──► deleted               the record and its usage stay

A usage interval is open exactly while the state is `running`; `transition` keeps that true.

No transaction stays open across an upstream call. Each verb runs in phases:
1. lock the row (`SELECT … FOR UPDATE`), check the transition, reserve (`starting`), commit;
2. call the upstream, outside any transaction;
3. settle what actually happened: a start that succeeded as one statement that changes the row
   only if it is still `starting` (`repository.settle_running`, the common case made cheap);
   anything else locks the row again and settles it, commit.
A process that dies between 1 and 3 leaves a `starting` row whose reservation expires; the
reconciler resolves it from the `corral-op-<operation id>` tag every created sandbox carries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.db import autocommit, transaction
from app.errors import NotFound
from app.identity.actor import Actor
from app.models import Sandbox
from app.runtime import Runtime
from app.sandboxes import repository
from app.upstream.errors import UpstreamError
from app.upstream.problems import to_problem
from app.upstream.schemas import StartOptions, StartResult
from app.usage import ledger

LIVE_STATES = ("starting", "running", "unknown")
STOPPED_STATES = ("hibernated", "shutdown")
FINAL_STATES = ("deleted", "failed")

T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Outcome:
    """A sandbox after a verb, with the upstream's boot type when the verb started it."""

    sandbox: Sandbox
    bootup_type: str | None = None
    start: StartResult | None = None


async def transition(
    session: AsyncSession,
    sandbox: Sandbox,
    to_state: str,
    *,
    cause: str,
    actor: str | None,
    at: datetime | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Move a sandbox to a new state, keeping the ledger in step: leaving `running` closes
    the open interval, entering it opens one."""
    at = at or now()
    from_state = sandbox.state
    # Every change to the row before any statement, so the row is flushed as one UPDATE.
    sandbox.state = to_state
    sandbox.last_cause = cause
    sandbox.state_changed_at = at
    sandbox.updated_at = at
    if to_state != "starting":
        sandbox.reservation_expires_at = None
    if to_state == "deleted":
        sandbox.deleted_at = at
    if from_state == "running" and to_state != "running":
        await ledger.close_interval(session, sandbox.id, at, cause)
    if to_state == "running" and from_state != "running":
        sandbox.last_started_at = at
        await ledger.open_interval(session, sandbox, at)
    await repository.add_event(
        session, sandbox, from_state=from_state, cause=cause, actor=actor, detail=detail
    )


def visible_team(actor: Actor) -> str | None:
    return None if actor.is_admin else actor.team_id


async def load(session: AsyncSession, actor: Actor, sandbox_id: str, *, lock: bool) -> Sandbox:
    sandbox = await repository.get(
        session, sandbox_id, team_id=visible_team(actor), for_update=lock
    )
    if sandbox is None or (actor.owner is not None and sandbox.owner != actor.owner):
        raise NotFound(f"Sandbox {sandbox_id!r} does not exist.", kind="sandbox-not-found")
    return sandbox


async def reload(session: AsyncSession, sandbox_id: str) -> Sandbox:
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
    revert_to: str | None,
    upstream_id: str,
) -> Outcome:
    """Phase 2 and 3 of a start whose `starting` reservation is committed. `reserved` is the
    row as committed in phase 1, only read here."""
    sandbox_id = reserved.id
    options = start_options(reserved)
    started, err = await call_upstream(lambda: rt.upstream.start(upstream_id, options))
    if started is not None:
        # The common outcome, in one statement (see repository.settle_running).
        async with autocommit(rt.engine) as conn:
            settled = await repository.settle_running(
                conn,
                reserved,
                upstream_id=upstream_id,
                at=now(),
                actor=actor.key_id,
                action=action,
                detail={"bootup_type": started.bootup_type},
            )
        if settled is not None:
            return Outcome(settled, started.bootup_type, started)
    async with transaction(rt.sessions) as session:
        sandbox = await reload(session, sandbox_id)
        # A create learns its upstream id from the fork; it is written with the outcome.
        sandbox.upstream_id = upstream_id
        if err is not None:
            # A create whose start failed is `failed`; its forked sandbox is removed below.
            to_state = revert_to or "failed"
            await transition(
                session,
                sandbox,
                to_state,
                cause="api",
                actor=actor.key_id,
                detail={"error": "start", "upstream_status": err.status},
            )
            await audit.record_sandbox(
                session,
                sandbox,
                actor=actor.key_id,
                action=action,
                outcome="error",
                detail={"upstream_status": err.status},
            )
        else:
            # Only when the reconciler settled the reservation while the start was in flight.
            assert started is not None
            await transition(
                session,
                sandbox,
                "running",
                cause="api",
                actor=actor.key_id,
                detail={"bootup_type": started.bootup_type},
            )
            await audit.record_sandbox(
                session,
                sandbox,
                actor=actor.key_id,
                action=action,
                detail={"bootup_type": started.bootup_type},
            )
    if err is not None:
        if revert_to is None:
            # Nothing should stay behind upstream for a create that failed.
            await call_upstream(lambda: rt.upstream.delete(upstream_id))
        raise to_problem(err, sandbox_id=sandbox_id)
    assert started is not None
    return Outcome(sandbox, started.bootup_type, started)
