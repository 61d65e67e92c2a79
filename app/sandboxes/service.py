"""The lifecycle verbs on an existing sandbox: get, start, restart, hibernate/shutdown, update,
delete, events. Phases are described in `lifecycle`, what a transition writes in
`transitions`; creating is in `creation`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app import clock, clock_gate, metering
from app.admission import service as admission
from app.audit import service as audit
from app.db import reading, transaction
from app.errors import Conflict, InvalidState, SandboxBusy, TooManyRequests
from app.identity.actor import Actor
from app.models import Sandbox
from app.reconcile import plan
from app.reconcile import repository as reconcile_repository
from app.runtime import Runtime
from app.sandboxes import access, lifecycle, repository, transitions
from app.sandboxes.schemas import Accrued, SandboxPatch
from app.sandboxes.states import FINAL, STOPPED, SandboxState
from app.sandboxes.transitions import Audit, Move
from app.upstream.errors import UpstreamError, UpstreamNotFound, maybe_applied
from app.upstream.problems import to_problem
from app.upstream.tiers import tier_of
from app.usage import ledger, statements

# A stop is asked of a sandbox in one of these; `unknown` may be running upstream.
STOPPABLE = frozenset({SandboxState.RUNNING, SandboxState.UNKNOWN})


async def get(rt: Runtime, actor: Actor, sandbox_id: str) -> tuple[Sandbox, Accrued]:
    async with reading(rt.sessions) as session:
        # Priced like its cost statement: per started minute, by the price-book version(s).
        sandbox, total = await statements.with_accrued(session, actor, sandbox_id, clock.now())
    return sandbox, Accrued(
        seconds=total.seconds.quantize(Decimal("0.001")),
        billed_minutes=total.billed_minutes,
        credits=total.credits,
        usd=total.usd.quantize(Decimal("0.000001")),
    )


def _audit_action(action: str) -> str:
    """The audit action of a start: a restart is audited as one; any other start (a session's
    wake-up included) as a start."""
    return "sandbox.restart" if action == "restart" else "sandbox.start"


@clock_gate.operation
async def start(
    rt: Runtime, actor: Actor, sandbox_id: str, *, action: str = "start"
) -> lifecycle.Outcome:
    """`action` is what admission counts the start as (`start`, `restart`, `session`).

    A start sent upstream is metered with its reservation, in one transaction: refused, it
    changes nothing but its audit row."""
    try:
        async with transaction(rt.sessions) as session:
            sandbox, previous, charge = await _reserve_start(rt, session, actor, sandbox_id, action)
    except TooManyRequests as refusal:
        await _audit_refused_start(rt, actor, sandbox_id, refusal, action=_audit_action(action))
        raise
    if previous == SandboxState.RUNNING:
        return await _start_running(rt, actor, sandbox, action=_audit_action(action))
    assert sandbox.upstream_id is not None
    return await lifecycle.start_reserved(
        rt,
        actor,
        sandbox,
        action=_audit_action(action),
        revert_to=previous,
        upstream_id=sandbox.upstream_id,
        charged=charge,
    )


async def _reserve_start(
    rt: Runtime, session: AsyncSession, actor: Actor, sandbox_id: str, action: str
) -> tuple[Sandbox, SandboxState, metering.Charge]:
    """Phase 1 of a start: metered (unless believed running), admitted, reserved `starting`."""
    # Lock order: the org row (which also serialises the meter's charge), then the sandbox
    # row, as a create takes them.
    sandbox = await access.load(session, actor, sandbox_id)
    _check_startable(sandbox)
    charge = metering.Charge()
    if sandbox.state != SandboxState.RUNNING:
        held = await admission.hold(session, sandbox.team_id)
        charge = await metering.charge(
            session, rt.settings, actor, sandbox.team_id, (metering.Work.START,), held=held
        )
        await admission.admit(
            session,
            held,
            owner=sandbox.owner,
            tier=sandbox.tier,
            action=action,
            timezone=rt.settings.budget_timezone,
        )
    sandbox = await access.load(session, actor, sandbox_id, lock=True)
    _check_startable(sandbox)
    # Not while a stop, delete or resize is in flight: it would meet a VM this start booted
    # again, or delete it under a session.
    lifecycle.check_turn(rt, sandbox)
    previous = SandboxState(sandbox.state)
    if previous != SandboxState.RUNNING:
        await transitions.move(
            session,
            sandbox,
            SandboxState.STARTING,
            cause="api",
            actor=actor.key_id,
            reservation_expires_at=clock.now() + rt.settings.reservation_ttl,
        )
    return sandbox, previous, charge


async def _audit_refused_start(
    rt: Runtime, actor: Actor, sandbox_id: str, refusal: TooManyRequests, *, action: str
) -> None:
    """A start refused by the meter or admission (429) is audited, as its other outcomes are."""
    detail = {"refused": refusal.extra.get("limit"), "scope": refusal.extra.get("scope")}
    async with transaction(rt.sessions) as session:
        sandbox = await access.load(session, actor, sandbox_id)
        await audit.record_sandbox(
            session, sandbox, actor=actor.key_id, action=action, outcome="refused", detail=detail
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
    if sandbox.state in FINAL or sandbox.state in (SandboxState.STARTING, SandboxState.UNKNOWN):
        raise InvalidState(sandbox.id, sandbox.state, cannot="be started")


async def _start_running(
    rt: Runtime, actor: Actor, sandbox: Sandbox, *, action: str
) -> lifecycle.Outcome:
    """Start a sandbox Corral believes running: the upstream answers RUNNING, or tells us it
    had stopped on its own (RESUME/CLEAN), in which case the ledger is corrected."""
    upstream_id = sandbox.upstream_id
    assert upstream_id is not None
    # No intent is written here: many people's sessions on one sandbox each start it; a stop
    # that races this start is settled below by the boot type the upstream answers.
    began = clock.now()
    options = lifecycle.start_options(sandbox)
    started, err = await lifecycle.call_upstream(lambda: rt.upstream.start(upstream_id, options))
    if err is not None:
        raise to_problem(err, sandbox_id=sandbox.id)
    assert started is not None
    detail = {"bootup_type": started.bootup_type}
    async with transaction(rt.sessions) as session:
        row = await lifecycle.reload(session, sandbox.id)
        booted = started.bootup_type != "RUNNING"
        at = max(lifecycle.answered_at(began), row.state_changed_at)
        if booted and row.state == SandboxState.RUNNING:
            # It had hibernated itself unseen: close the stale interval when it did.
            ended = await _stopped_unseen_at(session, row, began)
            await transitions.move(
                session,
                row,
                SandboxState.HIBERNATED,
                cause="upstream",
                actor=None,
                at=ended,
                detail={"upstream": "not running", "estimated_end": ended.isoformat()},
                keeps_intent=True,
            )
        if booted and row.state in STOPPED:
            # Stopped (unseen, or by a stop that settled while this start was in flight), and
            # booted again by this start: it runs from now, at the tier this start sent (a
            # resize recorded meanwhile changed a VM that has since stopped).
            await transitions.move(
                session,
                row,
                SandboxState.RUNNING,
                cause="api",
                actor=actor.key_id,
                at=at,
                detail=detail,
                audit=Audit(action, detail),
                tier=options.tier,
                # A delete that found it stopped may be checking meanwhile whether it runs:
                # its intent keeps other calls waiting until it has settled.
                keeps_intent=True,
            )
        else:
            await audit.record_sandbox(
                session, row, actor=actor.key_id, action=action, detail=detail
            )
    return lifecycle.Outcome(row, started.bootup_type, started)


@clock_gate.operation
async def restart(rt: Runtime, actor: Actor, sandbox_id: str) -> lifecycle.Outcome:
    """Shutdown then start, like the upstream SDK: the VM boots CLEAN on the latest agent."""
    async with reading(rt.sessions) as session:
        sandbox = await access.load(session, actor, sandbox_id)
        _check_startable(sandbox)
    if sandbox.state == SandboxState.RUNNING:
        await stop(rt, actor, sandbox_id, to_state=SandboxState.SHUTDOWN)
    return await start(rt, actor, sandbox_id, action="restart")


@clock_gate.operation
async def stop(
    rt: Runtime, actor: Actor, sandbox_id: str, *, to_state: SandboxState, cause: str = "api"
) -> lifecycle.Outcome:
    """Hibernate or shut down. A sandbox that is already stopped is answered as it is; one
    the upstream reports not running (404) had stopped on its own, and is recorded so.
    `cause` is why Corral stops it (`api`, or `budget`/`admin` for automatic stops), recorded
    in the event and the audit row.

    A stop that may have happened is asked once more: done, or a 404 (not running), settles
    it; otherwise the sandbox is `unknown` with the stop as its intent, its interval still
    open, and the reconciler decides from what the upstream lists."""
    to_state = SandboxState(to_state)
    verb = "hibernate" if to_state == SandboxState.HIBERNATED else "shutdown"
    async with reading(rt.sessions) as session:
        sandbox = await access.load(session, actor, sandbox_id)
        if sandbox.state in STOPPED:
            return lifecycle.Outcome(sandbox)
        if sandbox.state not in STOPPABLE:
            raise InvalidState(sandbox_id, sandbox.state, cannot=verb)
    _require_upstream_id(sandbox)
    upstream_id = sandbox.upstream_id
    assert upstream_id is not None
    call = rt.upstream.hibernate if verb == "hibernate" else rt.upstream.shutdown
    began = clock.now()
    await lifecycle.note_intent(rt, sandbox, str(to_state), began)
    _, err = await lifecycle.call_upstream(lambda: call(upstream_id))
    # Done on a retry, it ran until that attempt was sent.
    stopped_at = lifecycle.answered_at(began)
    at: datetime | None = None
    # Not running after an attempt of ours that may have stopped it: ours, unless the VM
    # would have hibernated itself before we asked (below).
    ours_or_its_own = False
    if isinstance(err, UpstreamNotFound) and err.earlier_maybe_applied:
        err, ours_or_its_own = None, True
    if err is not None and maybe_applied(err):
        _, again = await lifecycle.call_upstream(lambda: call(upstream_id))
        if again is None:
            err = None  # stopped now, by this call
            stopped_at = lifecycle.answered_at(began)
        elif isinstance(again, UpstreamNotFound):
            err, ours_or_its_own = None, True
        else:
            # Whatever the second answer, the first call may still have stopped it.
            await _record_uncertain(
                rt, actor, sandbox, intent=to_state, at=began, action=f"sandbox.{verb}", err=err
            )
            raise to_problem(err, sandbox_id=sandbox_id)
    if err is not None and not isinstance(err, UpstreamNotFound):
        await lifecycle.drop_intent(rt, sandbox_id, str(to_state))
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
    # Done, or found already done upstream: then it was the upstream's own move, an
    # auto-hibernation, at the time the reconciler would infer (DESIGN §5).
    already_stopped = isinstance(err, UpstreamNotFound)
    asked = Audit(f"sandbox.{verb}", actor=actor.key_id, cause=cause)
    detail: dict[str, Any] = {}
    if already_stopped or ours_or_its_own:
        async with transaction(rt.sessions) as session:
            at = await _stopped_unseen_at(session, sandbox, began)
        # A VM whose timeout ran out before the stop was sent had stopped on its own.
        already_stopped = already_stopped or at < began
        at = at if already_stopped else began
    if already_stopped:
        assert at is not None
        to_state = SandboxState.HIBERNATED
        detail = {"upstream": "not running", "estimated_end": at.isoformat()}
    change = Move(
        sandbox_id=sandbox_id,
        from_state=SandboxState(sandbox.state),
        to_state=to_state,
        tier=sandbox.tier,
        at=at or stopped_at,
        cause="upstream" if already_stopped else cause,
        actor=None if already_stopped else actor.key_id,
        detail=detail,
        audit=asked,
    )
    settled = await transitions.settle(rt.engine, change)
    if settled is not None:
        return lifecycle.Outcome(settled)
    # The row moved meanwhile (another stop, or the reconciler, settled first): settle it
    # under its lock. A stop that did the work knows the VM's state; one answered 404 only
    # knows it is not running, so the former corrects what the latter recorded.
    async with transaction(rt.sessions) as session:
        row = await lifecycle.reload(session, sandbox_id)
        if row.state in STOPPABLE or (
            not already_stopped and row.state in STOPPED and row.state != to_state
        ):
            await transitions.move(
                session,
                row,
                to_state,
                cause=change.cause,
                actor=change.actor,
                at=change.at,
                detail=change.detail,
                audit=asked,
            )
        else:
            await audit.record_sandbox(
                session, row, actor=actor.key_id, action=asked.action, cause=cause
            )
    return lifecycle.Outcome(row)


async def _stopped_unseen_at(
    session: AsyncSession, sandbox: Sandbox, seen_stopped_at: datetime
) -> datetime:
    """When a VM that the upstream says is not running stopped on its own: its last activity
    plus its hibernation timeout, between its last sighting running and now."""
    previous = (await reconcile_repository.poll_times(session)).written
    return plan.estimate_end(
        last_active_at=sandbox.upstream_last_active_at,
        hibernation_timeout_seconds=sandbox.hibernation_timeout_seconds,
        seen_running_at=plan.last_sighting(reconcile_repository.row_of(sandbox), previous),
        seen_stopped_at=seen_stopped_at,
    )


async def _record_uncertain(
    rt: Runtime,
    actor: Actor,
    sandbox: Sandbox,
    *,
    intent: SandboxState,
    at: datetime,
    action: str,
    err: UpstreamError,
) -> None:
    """A call that may have happened and could not be confirmed: the sandbox is `unknown`,
    with what was asked (`intent`) and when, for the reconciler to resolve. The ledger is left
    as it is: an open interval stays open until the upstream tells."""
    detail = {"intent": str(intent), "error": action, "upstream_status": err.status}
    async with transaction(rt.sessions) as session:
        row = await lifecycle.reload(session, sandbox.id)
        if row.state != sandbox.state:
            await audit.record_sandbox(
                session, row, actor=actor.key_id, action=action, outcome="unknown", detail=detail
            )
            return
        await transitions.move(
            session,
            row,
            SandboxState.UNKNOWN,
            cause="api",
            actor=actor.key_id,
            at=at,
            detail=detail,
            audit=Audit(action, detail, outcome="unknown"),
        )


async def _call_confirmed(
    call: Callable[[], Awaitable[Any]], began: datetime
) -> tuple[UpstreamError | None, datetime]:
    """An idempotent call, asked once more when its first answer may have been lost. The
    error returned is the first call's unless the second succeeded: a refusal of the second
    says nothing about the first. With it, when the first call was sent: a value set again by
    the second call was set by the first (the setting calls are sent once each, so the
    first call's one attempt is the first that may have acted)."""
    _, err = await lifecycle.call_upstream(call)
    acted_at = lifecycle.answered_at(began)
    if err is not None and maybe_applied(err):
        _, again = await lifecycle.call_upstream(call)
        if again is None:
            return None, acted_at
    return err, acted_at


@clock_gate.operation
async def update(
    rt: Runtime, actor: Actor, sandbox_id: str, body: SandboxPatch
) -> lifecycle.Outcome:
    """Title is Corral's own; tier and hibernation timeout apply live to a running VM (a tier
    change splits the usage interval), and otherwise at the next start."""
    changes = body.model_dump(exclude_unset=True)
    tier = changes.get("tier")
    timeout = changes.get("hibernation_timeout_seconds")
    detail = {k: v for k, v in changes.items() if k != "title"}
    async with transaction(rt.sessions) as session:
        sandbox = await access.load(session, actor, sandbox_id)
        _check_changeable(sandbox)
        if tier not in (None, sandbox.tier):
            await admission.check_resize(session, sandbox, tier)
        if sandbox.state != SandboxState.RUNNING:
            # Nothing to ask the upstream: written under the row's lock, so a start reads the
            # change, or reserved first and this is refused (it was sent the tier it read).
            read_state = sandbox.state
            sandbox = await access.load(session, actor, sandbox_id, lock=True)
            if sandbox.state != read_state:
                raise SandboxBusy(sandbox_id)
            _apply_settings(sandbox, changes)
            await audit.record_sandbox(
                session, sandbox, actor=actor.key_id, action="sandbox.update", detail=detail
            )
            return lifecycle.Outcome(sandbox)
    read_tier = sandbox.tier
    upstream_id = sandbox.upstream_id or ""
    # Both calls set a value, so asking again is safe. One that may have happened and stays
    # unconfirmed changes nothing here: the reconciler sees a changed tier in `/vm/running`.
    resized_at: datetime | None = None
    if tier is not None and tier != read_tier:
        began = clock.now()
        await lifecycle.note_intent(rt, sandbox, f"resize:{tier}", began)
        # The new tier bills from the first attempt that may have set it.
        err, applied_at = await _call_confirmed(
            lambda: rt.upstream.update_specs(upstream_id, tier), began
        )
        if err is not None and not maybe_applied(err):
            await lifecycle.drop_intent(rt, sandbox_id, f"resize:{tier}")
        if err is not None and maybe_applied(err):
            # Listed at the new tier, it happened (when asked); anything else changes nothing.
            listed = await lifecycle.find_running(
                rt, upstream_id, since=sandbox.last_started_at or sandbox.state_changed_at
            )
            if listed is not None and tier_of(listed) == tier:
                err = None
        resized_at = applied_at
        if err is not None:
            raise to_problem(err, sandbox_id=sandbox_id)
    if timeout is not None:
        err, _ = await _call_confirmed(
            lambda: rt.upstream.update_hibernation_timeout(upstream_id, timeout), clock.now()
        )
        if err is not None:
            raise to_problem(err, sandbox_id=sandbox_id)
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.reload(session, sandbox_id)
        if tier is not None and (
            sandbox.state != SandboxState.RUNNING or sandbox.tier != read_tier
        ):
            # It stopped or was resized since it was read: the upstream was asked for another
            # case (or not at all), so nothing is changed on a guess.
            raise SandboxBusy(sandbox_id)
        if tier is not None and tier != sandbox.tier:
            _apply_settings(sandbox, {k: v for k, v in changes.items() if k != "tier"})
            # A live resize is a move from running to running that splits the interval.
            await transitions.move(
                session,
                sandbox,
                SandboxState.RUNNING,
                cause="api",
                actor=actor.key_id,
                at=resized_at,
                tier=tier,
                detail={"from_tier": sandbox.tier, "to_tier": tier},
                audit=Audit("sandbox.update", detail),
            )
            return lifecycle.Outcome(sandbox)
        _apply_settings(sandbox, changes)
        await audit.record_sandbox(
            session, sandbox, actor=actor.key_id, action="sandbox.update", detail=detail
        )
    return lifecycle.Outcome(sandbox)


async def _shut_down_if_woken(
    rt: Runtime, actor: Actor, sandbox: Sandbox, upstream_id: str
) -> Sandbox:
    """A sandbox stopped here may have been woken by traffic since the last poll saw it; the
    delete would stop it unrecorded, and the minutes it ran, which the upstream bills, would
    be lost. A shutdown first tells: not running (404) or no answer, the delete goes on as
    asked; done, it ran, from no earlier than the last poll (or its stop, if later) until now,
    at the tier it last ran at (traffic does not apply a tier changed here since). Its intent
    makes a start wait its turn meanwhile: this shutdown would stop what it boots."""
    began = clock.now()
    intent = str(SandboxState.SHUTDOWN)
    await lifecycle.note_intent(rt, sandbox, intent, began)
    _, err = await lifecycle.call_upstream(lambda: rt.upstream.shutdown(upstream_id))
    if err is not None:
        # Not running, or no answer: the delete that follows stops it either way.
        await lifecycle.drop_intent(rt, sandbox.id, intent)
        return sandbox
    detail = {"upstream": "running", "found_by": "delete"}
    async with transaction(rt.sessions) as session:
        row = await lifecycle.reload(session, sandbox.id)
        if row.state in STOPPED:
            previous = (await reconcile_repository.poll_times(session)).polled
            since = max(row.state_changed_at, min(previous or row.state_changed_at, began))
            await transitions.move(
                session,
                row,
                SandboxState.RUNNING,
                cause="upstream",
                actor=None,
                at=since,
                detail={**detail, "estimated_start": since.isoformat()},
                tier=await ledger.last_tier(session, row.id),
            )
        if row.state == SandboxState.RUNNING:
            await transitions.move(
                session,
                row,
                SandboxState.SHUTDOWN,
                cause="api",
                actor=actor.key_id,
                # Never before the row's last move: a start settled meanwhile ran until now.
                at=max(began, row.state_changed_at),
                detail=detail,
                audit=Audit("sandbox.shutdown", detail),
            )
    return row


def _check_changeable(sandbox: Sandbox) -> None:
    if sandbox.state in FINAL or sandbox.state == SandboxState.STARTING:
        raise InvalidState(sandbox.id, sandbox.state, cannot="be changed")
    _require_upstream_id(sandbox)


def _apply_settings(sandbox: Sandbox, changes: dict[str, Any]) -> None:
    """Corral's record of a change the upstream has (or, stopped, will be started with)."""
    if "title" in changes:
        sandbox.title = changes["title"]
    if changes.get("hibernation_timeout_seconds") is not None:
        sandbox.hibernation_timeout_seconds = changes["hibernation_timeout_seconds"]
    if changes.get("tier") is not None:
        sandbox.tier = changes["tier"]
    sandbox.updated_at = clock.now()


@clock_gate.operation
async def delete(rt: Runtime, actor: Actor, sandbox_id: str) -> lifecycle.Outcome:
    """Shut down if running, delete upstream, keep the record and its usage. A delete that
    may have happened is confirmed by looking the sandbox up: gone is deleted, still there is
    not; no answer leaves it `unknown` for the reconciler."""
    async with reading(rt.sessions) as session:
        sandbox = await access.load(session, actor, sandbox_id)
        if sandbox.state == SandboxState.DELETED:
            return lifecycle.Outcome(sandbox)
        if sandbox.state == SandboxState.STARTING:
            raise InvalidState(sandbox_id, sandbox.state, cannot="be deleted")
    if sandbox.state in STOPPABLE:
        sandbox = (await stop(rt, actor, sandbox_id, to_state=SandboxState.SHUTDOWN)).sandbox
    elif sandbox.state in STOPPED and sandbox.upstream_id is not None:
        sandbox = await _shut_down_if_woken(rt, actor, sandbox, sandbox.upstream_id)
    at = clock.now()
    if sandbox.upstream_id is not None:
        upstream_id = sandbox.upstream_id
        at = began = clock.now()
        await lifecycle.note_intent(rt, sandbox, str(SandboxState.DELETED), began)
        _, err = await lifecycle.call_upstream(lambda: rt.upstream.delete(upstream_id))
        happened = err is None or isinstance(err, UpstreamNotFound)
        if err is not None and maybe_applied(err):
            _, looked = await lifecycle.call_upstream(lambda: rt.upstream.get_sandbox(upstream_id))
            if isinstance(looked, UpstreamNotFound):
                happened = True
            elif looked is not None:  # no answer: the reconciler looks again
                await _record_uncertain(
                    rt,
                    actor,
                    sandbox,
                    intent=SandboxState.DELETED,
                    at=began,
                    action="sandbox.delete",
                    err=err,
                )
                raise to_problem(err, sandbox_id=sandbox_id)
        if not happened:
            # Refused, or the sandbox is still there: the delete did not happen.
            await lifecycle.drop_intent(rt, sandbox_id, str(SandboxState.DELETED))
            assert err is not None
            raise to_problem(err, sandbox_id=sandbox_id)
    async with transaction(rt.sessions) as session:
        sandbox = await lifecycle.reload(session, sandbox_id)
        asked = Audit("sandbox.delete")
        if sandbox.state != SandboxState.DELETED:
            await transitions.move(
                session,
                sandbox,
                SandboxState.DELETED,
                cause="api",
                actor=actor.key_id,
                at=at,
                audit=asked,
            )
        else:
            await audit.record_sandbox(session, sandbox, actor=actor.key_id, action=asked.action)
    return lifecycle.Outcome(sandbox)


async def events(rt: Runtime, actor: Actor, sandbox_id: str) -> list[Any]:
    async with reading(rt.sessions) as session:
        sandbox = await access.load(session, actor, sandbox_id)
        return await repository.events(session, sandbox.id)
