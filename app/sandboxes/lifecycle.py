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
3. settle what actually happened: a start that succeeded moves the row only if it is still
   `starting` (`transitions.settle`: lock it, one statement, commit); anything else locks the
   row again and settles it, commit.
A process that dies between 1 and 3 leaves a `starting` row whose reservation expires; the
reconciler resolves it from the `corral-op-<operation id>` tag every created sandbox carries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app import clock, metering
from app.audit import service as audit
from app.db import autocommit, transaction
from app.errors import SandboxBusy
from app.identity.actor import Actor
from app.models import Sandbox
from app.runtime import Runtime
from app.sandboxes import repository, transitions
from app.sandboxes.states import SandboxState
from app.sandboxes.transitions import Audit, Move
from app.upstream.errors import UpstreamError, UpstreamNotFound, maybe_applied
from app.upstream.problems import to_problem
from app.upstream.requester import answered_attempt_sent_at
from app.upstream.schemas import RunningVM, StartOptions, StartResult
from app.upstream.tiers import tier_of

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


async def note_intent(rt: Runtime, sandbox: Sandbox, intent: str, at: datetime) -> None:
    """Before a stop, delete or resize is sent: what it asks, for the reconciler to record if
    this process (or its database) goes before the outcome is written. It also makes these
    calls on one sandbox take turns: while another one's intent is younger than a call can
    last (the upstream deadline), this one is refused (409)."""
    busy_after = _busy_after(rt, at)
    async with autocommit(rt.engine) as conn:
        claimed = await repository.note_intent(
            conn, sandbox.id, state=sandbox.state, intent=intent, at=at, busy_after=busy_after
        )
    if not claimed:
        raise SandboxBusy(sandbox.id)


def _busy_after(rt: Runtime, at: datetime) -> datetime:
    """An intent written after this is a call that may still be in flight."""
    return at - timedelta(seconds=rt.settings.upstream_deadline_seconds + 5)


def check_turn(rt: Runtime, sandbox: Sandbox) -> None:
    """A start waits its turn too: not while a stop, delete or resize is in flight. (It takes
    none itself: many people's sessions on one sandbox each start it.)"""
    if sandbox.pending_at is not None and sandbox.pending_at > _busy_after(rt, clock.now()):
        raise SandboxBusy(sandbox.id)


async def drop_intent(rt: Runtime, sandbox_id: str, intent: str) -> None:
    """The call certainly did not happen."""
    async with autocommit(rt.engine) as conn:
        await repository.clear_intent(conn, sandbox_id, intent)


async def call_upstream(
    call: Callable[[], Awaitable[T]],
) -> tuple[T | None, UpstreamError | None]:
    try:
        return await call(), None
    except UpstreamError as err:
        return None, err


def answered_at(began: datetime) -> datetime:
    """When the attempt that answered the last upstream call was sent: what a success reports
    (a VM booted, one stopped) happened then, and not when a first attempt that did nothing,
    or whose answer was lost, was sent. `began` is when the call was made (a record older
    than it belongs to an earlier call)."""
    sent_at = answered_attempt_sent_at()
    return max(began, sent_at) if sent_at is not None else began


def start_options(sandbox: Sandbox) -> StartOptions:
    return StartOptions(
        tier=sandbox.tier,
        hibernation_timeout_seconds=sandbox.hibernation_timeout_seconds,
        automatic_wakeup_config={"http": sandbox.automatic_wakeup, "websocket": False},
    )


async def find_running(rt: Runtime, upstream_id: str, *, since: datetime) -> RunningVM | None:
    """The VM if the upstream lists it running in a session begun at or after `since`; None
    when it is not listed, the listing is older than that, or the upstream did not answer.
    `/vm/running` may lag by tens of seconds, so only a listing proves anything."""
    try:
        listed = await rt.upstream.running_vms()
    except UpstreamError:
        return None
    for vm in listed.vms:
        if vm.id == upstream_id:
            session = vm.session_started_at
            return vm if session is not None and session >= since else None
    return None


async def start_reserved(
    rt: Runtime,
    actor: Actor,
    reserved: Sandbox,
    *,
    action: str,
    revert_to: SandboxState | None,
    upstream_id: str,
    charged: metering.Charge,
) -> Outcome:
    """Phase 2 and 3 of a start whose `starting` reservation is committed. `reserved` is the
    row as committed in phase 1, only read here; `action` names the audit row.

    Every start sent upstream is metered (`metering`) with its reservation (`charged`: a
    create charges its start with its fork); a start that certainly did not happen gets its
    unit back.

    A start that certainly did not happen gives the reservation back (a create's becomes
    `failed` and its fork is removed), and its unit of the meter. One that may have happened
    never does: the VM is looked up at once, and is recorded running if it is listed so, else
    `unknown`, which keeps its slot until the reconciler knows."""
    sandbox_id = reserved.id
    options = start_options(reserved)
    unit = charged
    # A move is dated when its call was sent, which is when the upstream acts on it: the
    # ledger's start and end then carry the same offset from the upstream's own. A boot is
    # dated by the attempt that answered it; RUNNING means an earlier one (or traffic) did.
    began = clock.now()
    started, err = await call_upstream(lambda: rt.upstream.start(upstream_id, options))
    if err is not None:
        await metering.refund(rt.engine, unit, err)
    if started is not None:
        detail = {"bootup_type": started.bootup_type}
        tier = reserved.tier
        at = began if started.bootup_type == "RUNNING" else answered_at(began)
        if started.bootup_type == "RUNNING":
            # Already running: woken by traffic unseen, at the tier it ran at before, not the
            # one asked for (a stopped sandbox's tier change applies when Corral boots it).
            since = reserved.last_started_at or reserved.created_at
            listed = await find_running(rt, upstream_id, since=since)
            tier = (tier_of(listed) if listed is not None else None) or tier
        settled = await transitions.settle(
            rt.engine,
            Move(
                sandbox_id=sandbox_id,
                from_state=SandboxState.STARTING,
                to_state=SandboxState.RUNNING,
                tier=tier,
                at=at,
                cause="api",
                actor=actor.key_id,
                detail=detail,
                audit=Audit(action, detail),
                upstream_id=upstream_id,
            ),
        )
        if settled is not None:
            return Outcome(settled, started.bootup_type, started)
    elif err is not None and maybe_applied(err):
        await _settle_uncertain_start(
            rt, actor, reserved, err, action=action, upstream_id=upstream_id
        )
        raise to_problem(err, sandbox_id=sandbox_id)
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
            # The reconciler resolved the reservation while the start was in flight, and other
            # moves may have followed: this answer is older news than the record. Only the
            # answer is written; what the VM does now is the reconciler's to see (a VM this
            # start booted is listed running, and recorded from its session's start).
            assert started is not None
            await audit.record_sandbox(
                session,
                sandbox,
                actor=actor.key_id,
                action=action,
                detail={"bootup_type": started.bootup_type, "settled_by": "reconciler"},
            )
    if err is not None:
        if revert_to is None and sandbox.state == SandboxState.FAILED:
            await remove_fork(rt, sandbox_id, upstream_id)
        raise to_problem(err, sandbox_id=sandbox_id)
    assert started is not None
    return Outcome(sandbox, started.bootup_type, started)


async def _settle_uncertain_start(
    rt: Runtime,
    actor: Actor,
    reserved: Sandbox,
    err: UpstreamError,
    *,
    action: str,
    upstream_id: str,
) -> None:
    vm = await find_running(rt, upstream_id, since=reserved.state_changed_at)
    async with transaction(rt.sessions) as session:
        sandbox = await reload(session, reserved.id)
        if sandbox.state != SandboxState.STARTING:
            # The reconciler resolved it meanwhile; only the answer is left to record.
            await audit.record_sandbox(
                session,
                sandbox,
                actor=actor.key_id,
                action=action,
                outcome="unknown",
                detail={"upstream_status": err.status},
            )
            return
        if vm is not None:
            at = clock.clamp(
                vm.session_started_at or clock.now(), reserved.state_changed_at, clock.now()
            )
            detail: dict[str, Any] = {
                "error": "start",
                "found": "running",
                "upstream_status": err.status,
            }
            await transitions.move(
                session,
                sandbox,
                SandboxState.RUNNING,
                cause="api",
                actor=actor.key_id,
                at=at,
                tier=tier_of(vm) or sandbox.tier,
                detail=detail,
                audit=Audit(action, detail),
                upstream_id=upstream_id,
                seen_running_at=clock.now(),
                upstream_last_active_at=vm.last_active_at,
            )
            return
        detail = {
            "intent": SandboxState.RUNNING.value,
            "error": "start",
            "upstream_status": err.status,
        }
        await transitions.move(
            session,
            sandbox,
            SandboxState.UNKNOWN,
            cause="api",
            actor=actor.key_id,
            detail=detail,
            audit=Audit(action, detail, outcome="unknown"),
            upstream_id=upstream_id,
        )


async def remove_fork(rt: Runtime, sandbox_id: str, upstream_id: str) -> bool:
    """Delete a failed create's fork upstream; once the upstream confirms it gone (done, or
    404), the row records it (`deleted_at`), else the reconciler tries again each period."""
    _, err = await call_upstream(lambda: rt.upstream.delete(upstream_id))
    if err is not None and not isinstance(err, UpstreamNotFound):
        return False
    async with transaction(rt.sessions) as session:
        await repository.mark_fork_removed(session, sandbox_id, clock.now())
    return True
