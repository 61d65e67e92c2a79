"""The sandbox lifecycle: create, start, hibernate, shutdown, restart, fork, resize, delete.

States and transitions (every one writes a sandbox event and an audit row, with its cause, in
the same transaction as the change):

    create ──► starting ──► running            fork + start succeeded
                   │   ├──► shutdown           fork succeeded, start=false
                   │   ├──► failed             the upstream refused, or the start after the fork
                   │   └──► unknown            the fork's answer was lost and could not be looked up
    hibernated|shutdown ──► starting ──► running (start; a failed start goes back where it was)
    running ──► hibernated | shutdown          hibernate, shutdown (or seen stopped upstream)
    any but starting ──► deleted               the record and its usage stay

A usage interval is open exactly while the state is `running`; `_transition` keeps that true.

No transaction stays open across an upstream call. Each verb runs in phases:
1. lock the row (`SELECT … FOR UPDATE`), check the transition, reserve (`starting`), commit;
2. call the upstream, outside any transaction;
3. lock the row again and settle what actually happened, commit.
A process that dies between 1 and 3 leaves a `starting` row whose reservation expires; the
reconciler resolves it from the `corral-op-<operation id>` tag every created sandbox carries.
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.admission import service as admission
from app.audit import service as audit
from app.db import transaction
from app.errors import Conflict, Forbidden, NotFound, Unprocessable
from app.identity import service as identity_service
from app.identity.actor import Actor
from app.models import Sandbox
from app.runtime import Runtime
from app.sandboxes import repository
from app.sandboxes.schemas import TAG_PATTERN, Accrued, SandboxCreate, SandboxFork, SandboxPatch
from app.upstream.errors import UpstreamError, UpstreamNotFound, UpstreamUnavailable
from app.upstream.problems import to_problem
from app.upstream.schemas import StartOptions, StartResult
from app.usage import ledger, statements

LIVE_STATES = ("starting", "running", "unknown")
STOPPED_STATES = ("hibernated", "shutdown")
FINAL_STATES = ("deleted", "failed")
PRIVACY = {"public": 0, "unlisted": 1, "private": 2}
CORRAL_TAG = "corral"
_ID_ALPHABET = string.ascii_lowercase + string.digits

T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


def new_sandbox_id() -> str:
    return "sbx_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def operation_tag(operation_id: str) -> str:
    return f"corral-op-{operation_id}"


@dataclass(frozen=True)
class Outcome:
    """A sandbox after a verb, with the upstream's boot type when the verb started it."""

    sandbox: Sandbox
    bootup_type: str | None = None
    start: StartResult | None = None


# --- transitions -------------------------------------------------------------------------


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
    if from_state == "running" and to_state != "running":
        await ledger.close_interval(session, sandbox.id, at, cause)
    sandbox.state = to_state
    sandbox.last_cause = cause
    sandbox.state_changed_at = at
    sandbox.updated_at = at
    if to_state == "running" and from_state != "running":
        sandbox.last_started_at = at
        await ledger.open_interval(session, sandbox, at)
    if to_state != "starting":
        sandbox.reservation_expires_at = None
    if to_state == "deleted":
        sandbox.deleted_at = at
    await repository.add_event(
        session, sandbox, from_state=from_state, cause=cause, actor=actor, detail=detail
    )


def _visible_team(actor: Actor) -> str | None:
    return None if actor.is_admin else actor.team_id


async def _load(session: AsyncSession, actor: Actor, sandbox_id: str, *, lock: bool) -> Sandbox:
    sandbox = await repository.get(
        session, sandbox_id, team_id=_visible_team(actor), for_update=lock
    )
    if sandbox is None or (actor.owner is not None and sandbox.owner != actor.owner):
        raise NotFound(f"Sandbox {sandbox_id!r} does not exist.", kind="sandbox-not-found")
    return sandbox


async def _upstream(
    call: Callable[[], Awaitable[T]],
) -> tuple[T | None, UpstreamError | None]:
    try:
        return await call(), None
    except UpstreamError as err:
        return None, err


def _start_options(sandbox: Sandbox) -> StartOptions:
    return StartOptions(
        tier=sandbox.tier,
        hibernation_timeout_seconds=sandbox.hibernation_timeout_seconds,
        automatic_wakeup_config={"http": sandbox.automatic_wakeup, "websocket": False},
    )


# --- reads -------------------------------------------------------------------------------


async def get(rt: Runtime, actor: Actor, sandbox_id: str) -> tuple[Sandbox, Accrued]:
    async with transaction(rt.sessions) as session:
        sandbox = await _load(session, actor, sandbox_id, lock=False)
        # Priced like its cost statement: per started minute, by the price-book version(s).
        total = await statements.accrued(session, sandbox.id, now())
    return sandbox, Accrued(
        seconds=total.seconds.quantize(Decimal("0.001")),
        billed_minutes=total.billed_minutes,
        credits=total.credits,
        usd=total.usd.quantize(Decimal("0.000001")),
    )


# --- create and fork ---------------------------------------------------------------------


@dataclass(frozen=True)
class CreateSpec:
    team_id: str
    owner: str | None
    template: str
    title: str | None
    tier: str
    hibernation_timeout_seconds: int
    tags: list[str]
    privacy: str
    start: bool
    automatic_wakeup: bool


def _owner_for(actor: Actor, requested: str | None) -> str | None:
    if actor.owner is not None and requested not in (None, actor.owner):
        raise Forbidden(
            "This key is bound to one owner and cannot act for another.", kind="owner-mismatch"
        )
    return actor.owner or requested


def _team_for(actor: Actor, requested: str | None) -> str:
    if actor.is_admin:
        if requested is None:
            raise Unprocessable("Admins must name the owning team.", kind="team-required")
        return requested
    if requested not in (None, actor.team_id):
        raise Forbidden("A team key creates sandboxes for its own team only.", kind="wrong-team")
    assert actor.team_id is not None
    return actor.team_id


def _tags(tags: list[str]) -> list[str]:
    for tag in tags:
        if not re.match(TAG_PATTERN, tag) or tag.startswith(CORRAL_TAG):
            raise Unprocessable(
                f"Tag {tag!r} is not allowed (letters, digits, _.:- ; no 'corral' prefix).",
                kind="invalid-tag",
            )
    return list(dict.fromkeys(tags))


def create_spec(rt: Runtime, actor: Actor, body: SandboxCreate) -> CreateSpec:
    return CreateSpec(
        team_id=_team_for(actor, body.team),
        owner=_owner_for(actor, body.owner),
        template=body.template or rt.settings.default_template,
        title=body.title,
        tier=body.tier or rt.settings.default_tier,
        hibernation_timeout_seconds=body.hibernation_timeout_seconds
        or rt.settings.default_hibernation_timeout_seconds,
        tags=_tags(body.tags),
        privacy=body.privacy,
        start=body.start,
        automatic_wakeup=body.automatic_wakeup,
    )


async def create(rt: Runtime, actor: Actor, spec: CreateSpec, *, action: str = "create") -> Outcome:
    """Fork the template upstream and (unless start=false) start it.

    The fork is never retried blindly: when its answer is lost, the sandbox is looked up by
    its operation tag instead, so a lost answer never makes a second sandbox."""
    operation_id = uuid.uuid4().hex
    async with transaction(rt.sessions) as session:
        await identity_service.get_team(session, spec.team_id)
        if spec.start:
            await admission.admit(
                session, spec.team_id, owner=spec.owner, tier=spec.tier, action=action
            )
        sandbox = Sandbox(
            id=new_sandbox_id(),
            team_id=spec.team_id,
            owner=spec.owner,
            title=spec.title,
            template=spec.template,
            tier=spec.tier,
            hibernation_timeout_seconds=spec.hibernation_timeout_seconds,
            privacy=PRIVACY[spec.privacy],
            automatic_wakeup=spec.automatic_wakeup,
            tags=spec.tags,
            state="starting",
            last_cause="api",
            operation_id=operation_id,
            reservation_expires_at=now() + timedelta(seconds=rt.settings.reservation_ttl_seconds),
        )
        session.add(sandbox)
        await session.flush()
        await repository.add_event(
            session,
            sandbox,
            from_state=None,
            cause="api",
            actor=actor.key_id,
            detail={"template": spec.template, "operation_id": operation_id},
        )

    fork, err = await _upstream(
        lambda: rt.upstream.fork(
            spec.template,
            title=spec.title,
            privacy=PRIVACY[spec.privacy],
            private_preview=spec.privacy == "private",
            tags=[*spec.tags, CORRAL_TAG, operation_tag(operation_id)],
            path="/corral",
        )
    )
    upstream_id: str | None = fork.id if fork is not None else None
    if err is not None:
        if isinstance(err, UpstreamUnavailable) and err.maybe_applied:
            upstream_id, lookup_failed = await _find_by_operation(rt, operation_id)
            if upstream_id is None and lookup_failed:
                await _settle_create_failure(rt, actor, sandbox.id, err, to_state="unknown")
                raise to_problem(err, sandbox_id=sandbox.id)
        if upstream_id is None:
            await _settle_create_failure(rt, actor, sandbox.id, err, to_state="failed")
            if isinstance(err, UpstreamNotFound):
                raise Unprocessable(
                    f"Template {spec.template!r} does not exist upstream.",
                    kind="template-not-found",
                )
            raise to_problem(err, sandbox_id=sandbox.id)

    assert upstream_id is not None
    if spec.start:
        return await _start_reserved(
            rt, actor, sandbox, action="sandbox.create", revert_to=None, upstream_id=upstream_id
        )
    async with transaction(rt.sessions) as session:
        sandbox = await _reload(session, sandbox.id)
        sandbox.upstream_id = upstream_id
        await transition(session, sandbox, "shutdown", cause="api", actor=actor.key_id)
        await audit.record(
            session,
            actor=actor.key_id,
            action="sandbox.create",
            team_id=sandbox.team_id,
            target=sandbox.id,
            detail={"upstream_id": upstream_id, "start": False},
        )
    return Outcome(sandbox)


async def fork(rt: Runtime, actor: Actor, source_id: str, body: SandboxFork) -> Outcome:
    async with transaction(rt.sessions) as session:
        source = await _load(session, actor, source_id, lock=False)
        if source.upstream_id is None or source.state in FINAL_STATES:
            raise Conflict(
                f"Sandbox {source_id!r} is {source.state} and cannot be forked.",
                kind="invalid-state",
                extra={"state": source.state},
            )
    spec = CreateSpec(
        team_id=source.team_id,
        owner=_owner_for(actor, body.owner) or source.owner,
        template=source.upstream_id,
        title=body.title,
        tier=body.tier or source.tier,
        hibernation_timeout_seconds=body.hibernation_timeout_seconds
        or source.hibernation_timeout_seconds,
        tags=_tags(body.tags),
        privacy=body.privacy,
        start=body.start,
        automatic_wakeup=body.automatic_wakeup,
    )
    return await create(rt, actor, spec, action="fork")


async def _find_by_operation(rt: Runtime, operation_id: str) -> tuple[str | None, bool]:
    """The upstream id of the sandbox created under this operation: (id, lookup_failed)."""
    try:
        page = await rt.upstream.list_sandboxes(tags=[operation_tag(operation_id)], page_size=50)
    except UpstreamError:
        return None, True
    for found in page.sandboxes:
        if operation_tag(operation_id) in found.tags:
            return found.id, False
    return None, False


async def _reload(session: AsyncSession, sandbox_id: str) -> Sandbox:
    sandbox = await repository.get(session, sandbox_id, team_id=None, for_update=True)
    assert sandbox is not None, "sandbox rows are never deleted"
    return sandbox


async def _settle_create_failure(
    rt: Runtime, actor: Actor, sandbox_id: str, err: UpstreamError, *, to_state: str
) -> None:
    async with transaction(rt.sessions) as session:
        sandbox = await _reload(session, sandbox_id)
        await transition(
            session,
            sandbox,
            to_state,
            cause="api",
            actor=actor.key_id,
            detail={"error": err.operation, "upstream_status": err.status},
        )
        await audit.record(
            session,
            actor=actor.key_id,
            action="sandbox.create",
            team_id=sandbox.team_id,
            target=sandbox.id,
            outcome="error",
            detail={"upstream_status": err.status, "state": to_state},
        )


# --- start, restart ----------------------------------------------------------------------


async def start(rt: Runtime, actor: Actor, sandbox_id: str, *, action: str = "start") -> Outcome:
    async with transaction(rt.sessions) as session:
        # Lock order: the org row (inside admit) before the sandbox row; see admission.
        sandbox = await _load(session, actor, sandbox_id, lock=False)
        _check_startable(sandbox)
        if sandbox.state != "running":
            await admission.admit(
                session, sandbox.team_id, owner=sandbox.owner, tier=sandbox.tier, action=action
            )
        sandbox = await _load(session, actor, sandbox_id, lock=True)
        _check_startable(sandbox)
        previous = sandbox.state
        if previous != "running":
            await _reserve(rt, session, sandbox, actor)
    if previous == "running":
        return await _start_running(rt, actor, sandbox)
    assert sandbox.upstream_id is not None
    return await _start_reserved(
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
    if sandbox.state in FINAL_STATES or sandbox.state in ("starting", "unknown"):
        raise Conflict(
            f"Sandbox {sandbox.id!r} is {sandbox.state}; it cannot be started now.",
            kind="invalid-state",
            extra={"state": sandbox.state},
        )


async def _reserve(rt: Runtime, session: AsyncSession, sandbox: Sandbox, actor: Actor) -> None:
    sandbox.reservation_expires_at = now() + timedelta(seconds=rt.settings.reservation_ttl_seconds)
    await transition(session, sandbox, "starting", cause="api", actor=actor.key_id)


async def _start_running(rt: Runtime, actor: Actor, sandbox: Sandbox) -> Outcome:
    """Start a sandbox Corral believes running: the upstream answers RUNNING, or tells us it
    had stopped on its own (RESUME/CLEAN), in which case the ledger is corrected."""
    assert sandbox.upstream_id is not None
    started, err = await _upstream(
        lambda: rt.upstream.start(sandbox.upstream_id or "", _start_options(sandbox))
    )
    if err is not None:
        raise to_problem(err, sandbox_id=sandbox.id)
    assert started is not None
    async with transaction(rt.sessions) as session:
        row = await _reload(session, sandbox.id)
        if started.bootup_type != "RUNNING" and row.state == "running":
            # It had stopped upstream unseen: close the stale interval, open a fresh one.
            at = now()
            await transition(session, row, "hibernated", cause="upstream", actor=None, at=at)
            await transition(
                session,
                row,
                "running",
                cause="api",
                actor=actor.key_id,
                at=at,
                detail={"bootup_type": started.bootup_type},
            )
        await audit.record(
            session,
            actor=actor.key_id,
            action="sandbox.start",
            team_id=row.team_id,
            target=row.id,
            detail={"bootup_type": started.bootup_type},
        )
    return Outcome(row, started.bootup_type, started)


async def _start_reserved(
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
    options = _start_options(reserved)
    started, err = await _upstream(lambda: rt.upstream.start(upstream_id, options))
    async with transaction(rt.sessions) as session:
        sandbox = await _reload(session, sandbox_id)
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
            await audit.record(
                session,
                actor=actor.key_id,
                action=action,
                team_id=sandbox.team_id,
                target=sandbox.id,
                outcome="error",
                detail={"upstream_status": err.status},
            )
        else:
            assert started is not None
            await transition(
                session,
                sandbox,
                "running",
                cause="api",
                actor=actor.key_id,
                detail={"bootup_type": started.bootup_type},
            )
            await audit.record(
                session,
                actor=actor.key_id,
                action=action,
                team_id=sandbox.team_id,
                target=sandbox.id,
                detail={"bootup_type": started.bootup_type},
            )
    if err is not None:
        if revert_to is None:
            # Nothing should stay behind upstream for a create that failed.
            await _upstream(lambda: rt.upstream.delete(upstream_id))
        raise to_problem(err, sandbox_id=sandbox_id)
    assert started is not None
    return Outcome(sandbox, started.bootup_type, started)


async def restart(rt: Runtime, actor: Actor, sandbox_id: str) -> Outcome:
    """Shutdown then start, like the upstream SDK: the VM boots CLEAN on the latest agent."""
    async with transaction(rt.sessions) as session:
        sandbox = await _load(session, actor, sandbox_id, lock=True)
        _check_startable(sandbox)
    if sandbox.state == "running":
        await stop(rt, actor, sandbox_id, to_state="shutdown")
    return await start(rt, actor, sandbox_id, action="restart")


# --- hibernate, shutdown -----------------------------------------------------------------


async def stop(
    rt: Runtime, actor: Actor, sandbox_id: str, *, to_state: str, cause: str = "api"
) -> Outcome:
    """Hibernate or shut down. A sandbox that is already stopped is answered as it is; one
    the upstream reports not running (404) had stopped on its own, and is recorded so.
    `cause` is why Corral stops it (`api`, or `budget`/`admin` for automatic stops), recorded
    in the event and the audit row."""
    verb = "hibernate" if to_state == "hibernated" else "shutdown"
    async with transaction(rt.sessions) as session:
        sandbox = await _load(session, actor, sandbox_id, lock=False)
        if sandbox.state in STOPPED_STATES:
            return Outcome(sandbox)
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
    _, err = await _upstream(lambda: call(upstream_id))
    if err is not None and not isinstance(err, UpstreamNotFound):
        async with transaction(rt.sessions) as session:
            await audit.record(
                session,
                actor=actor.key_id,
                action=f"sandbox.{verb}",
                team_id=sandbox.team_id,
                target=sandbox.id,
                cause=cause,
                outcome="error",
                detail={"upstream_status": err.status},
            )
        raise to_problem(err, sandbox_id=sandbox_id)
    async with transaction(rt.sessions) as session:
        sandbox = await _reload(session, sandbox_id)
        if sandbox.state in ("running", "unknown"):
            already_stopped = isinstance(err, UpstreamNotFound)
            await transition(
                session,
                sandbox,
                to_state,
                cause="upstream" if already_stopped else cause,
                actor=None if already_stopped else actor.key_id,
                detail={"upstream": "not running"} if already_stopped else None,
            )
        await audit.record(
            session,
            actor=actor.key_id,
            action=f"sandbox.{verb}",
            team_id=sandbox.team_id,
            target=sandbox.id,
            cause=cause,
        )
    return Outcome(sandbox)


# --- update and delete -------------------------------------------------------------------


async def update(rt: Runtime, actor: Actor, sandbox_id: str, body: SandboxPatch) -> Outcome:
    """Title is Corral's own; tier and hibernation timeout apply live to a running VM (a tier
    change splits the usage interval), and otherwise at the next start."""
    changes = body.model_dump(exclude_unset=True)
    async with transaction(rt.sessions) as session:
        sandbox = await _load(session, actor, sandbox_id, lock=False)
        if sandbox.state in FINAL_STATES or sandbox.state == "starting":
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
        _, err = await _upstream(lambda: rt.upstream.update_specs(upstream_id, tier))
        if err is not None:
            raise to_problem(err, sandbox_id=sandbox_id)
    if running and timeout is not None:
        _, err = await _upstream(
            lambda: rt.upstream.update_hibernation_timeout(upstream_id, timeout)
        )
        if err is not None:
            raise to_problem(err, sandbox_id=sandbox_id)
    async with transaction(rt.sessions) as session:
        sandbox = await _reload(session, sandbox_id)
        if "title" in changes:
            sandbox.title = changes["title"]
        if timeout is not None:
            sandbox.hibernation_timeout_seconds = timeout
        if tier is not None and tier != sandbox.tier:
            sandbox.tier = tier
            if sandbox.state == "running":
                await ledger.split_interval(session, sandbox, now(), "resize")
        sandbox.updated_at = now()
        await audit.record(
            session,
            actor=actor.key_id,
            action="sandbox.update",
            team_id=sandbox.team_id,
            target=sandbox.id,
            detail={k: v for k, v in changes.items() if k != "title"},
        )
    return Outcome(sandbox)


async def delete(rt: Runtime, actor: Actor, sandbox_id: str) -> Outcome:
    """Shut down if running, delete upstream, keep the record and its usage."""
    async with transaction(rt.sessions) as session:
        sandbox = await _load(session, actor, sandbox_id, lock=False)
        if sandbox.state == "deleted":
            return Outcome(sandbox)
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
        _, err = await _upstream(lambda: rt.upstream.delete(upstream_id))
        if err is not None and not isinstance(err, UpstreamNotFound):
            raise to_problem(err, sandbox_id=sandbox_id)
    async with transaction(rt.sessions) as session:
        sandbox = await _reload(session, sandbox_id)
        if sandbox.state != "deleted":
            await transition(session, sandbox, "deleted", cause="api", actor=actor.key_id)
        await audit.record(
            session,
            actor=actor.key_id,
            action="sandbox.delete",
            team_id=sandbox.team_id,
            target=sandbox.id,
        )
    return Outcome(sandbox)


async def events(rt: Runtime, actor: Actor, sandbox_id: str) -> list[Any]:
    async with transaction(rt.sessions) as session:
        sandbox = await _load(session, actor, sandbox_id, lock=False)
        return await repository.events(session, sandbox.id)
