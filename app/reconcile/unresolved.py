"""unresolved: a `starting` row past its reservation, or an `unknown` row, resolved from what
the upstream shows (DESIGN §11).

- A row whose fork never answered is looked up by its `corral-op-<operation id>` tag: adopted
  if the fork exists upstream (running, or stopped), else failed, which releases its slot.
- A row listed running is running, from the listed session's start (never before the row's
  own state began), keeping the interval it has open.
- An `unknown` row carries the intent of the call that may have happened (its event's
  `intent`). Not listed once the listing can be trusted (the sighting grace), a stop is taken
  as done when it was asked, a start as not done, and a delete is looked up: gone is deleted.

Also here: a failed create's fork stays on a retry list (failed, with an upstream id and no
`deleted_at`) until the upstream confirms it deleted."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app import clock
from app.db import transaction
from app.reconcile import repository
from app.reconcile.period import ACTOR, Finding, Period, record
from app.reconcile.plan import Row
from app.sandboxes import creation, lifecycle, transitions
from app.sandboxes import repository as sandboxes_repository
from app.sandboxes.states import STOPPED, SandboxState
from app.upstream.errors import UpstreamError, UpstreamNotFound
from app.upstream.tiers import tier_of

log = logging.getLogger(__name__)

# Forks of failed creates deleted upstream per period, at most.
FORKS_PER_PERIOD = 50


@dataclass
class Lookups:
    """Upstream ids found by operation tag, whether a sandbox exists at all (for rows whose
    delete may have happened), and the rows whose lookup did not answer."""

    found: dict[str, str] = field(default_factory=dict)
    exists: dict[str, bool] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)


async def look_up(
    period: Period, rows: Sequence[Row], intents: Mapping[str, repository.Intent]
) -> Lookups:
    lookups = Lookups()
    for row in rows:
        intent = intents.get(row.id)
        if row.upstream_id is not None:
            lookups.found[row.id] = row.upstream_id
            if intent is not None and intent.intent == SandboxState.DELETED:
                try:
                    await period.rt.upstream.get_sandbox(row.upstream_id)
                    lookups.exists[row.id] = True
                except UpstreamNotFound:
                    lookups.exists[row.id] = False
                except UpstreamError:
                    lookups.failed.add(row.id)
            continue
        tag = creation.operation_tag(row.operation_id)
        try:
            page = await period.rt.upstream.list_sandboxes(tags=[tag], page_size=50)
        except UpstreamError as err:
            log.warning(
                "operation lookup failed",
                extra={"sandbox_id": row.id, "upstream_status": err.status},
            )
            lookups.failed.add(row.id)
            continue
        for sandbox in page.sandboxes:
            if tag in sandbox.tags:
                lookups.found[row.id] = sandbox.id
                break
    return lookups


async def resolve(
    period: Period, row: Row, lookups: Lookups, intent: repository.Intent | None
) -> None:
    if row.id in lookups.failed:
        return
    upstream_id = lookups.found.get(row.id)
    vm = period.listed.get(upstream_id) if upstream_id else None
    if row.state == SandboxState.UNKNOWN and row.state_changed_at > period.poll_at - period.grace:
        # Listings lag: a fresh fork may not be found by its tag yet, and a start or a stop
        # may not show in `/vm/running` yet. Within the grace only a listing running decides.
        by_listing = intent is not None and intent.intent != SandboxState.DELETED
        if upstream_id is None or (vm is None and by_listing):
            return
    async with transaction(period.rt.sessions) as session:
        sandbox = await sandboxes_repository.get(session, row.id, team_id=None, for_update=True)
        if (
            sandbox is None
            or sandbox.state != row.state
            or sandbox.state_changed_at != row.state_changed_at
        ):
            return  # settled by someone else since the period loaded it
        detail: dict[str, Any] = {"state": row.state, "upstream_id": upstream_id}
        if intent is not None:
            detail["intent"] = intent.intent
        learnt: str | None = None
        if upstream_id is not None and sandbox.upstream_id is None:
            other = await sandboxes_repository.get_by_upstream_id(
                session, upstream_id, team_id=None
            )
            if other is not None:
                # Already recorded under another row (e.g. as unmanaged): do not fork the books.
                detail["duplicate_of"] = other.id
                upstream_id = vm = None
            else:
                learnt = upstream_id
        at = clock.now()
        tier = sandbox.tier
        action = "adopted"
        wanted = intent.intent if intent is not None else SandboxState.RUNNING
        if vm is not None:
            to_state = SandboxState.RUNNING
            at = clock.clamp(
                vm.session_started_at or period.poll_at, row.state_changed_at, period.poll_at
            )
            tier = tier_of(vm) or sandbox.tier
            detail["started_at"] = at.isoformat()
        elif upstream_id is None:
            to_state = SandboxState.FAILED
            action = "duplicate" if "duplicate_of" in detail else "failed"
        elif wanted in STOPPED:
            # The stop was asked at the row's time; the VM is not running now.
            to_state, at, action = SandboxState(wanted), row.state_changed_at, "stopped"
        elif wanted == SandboxState.DELETED and not lookups.exists.get(row.id, True):
            to_state, at, action = SandboxState.DELETED, row.state_changed_at, "deleted"
        elif wanted == SandboxState.DELETED:
            assert intent is not None
            before = intent.from_state
            to_state = SandboxState(before) if before in STOPPED else SandboxState.SHUTDOWN
            action = "not_deleted"
        else:
            before = await repository.state_before_start(session, row.id)
            to_state = SandboxState(before) if before in STOPPED else SandboxState.SHUTDOWN
        finding = Finding(
            kind="unresolved",
            action=action,
            sandbox_id=row.id,
            upstream_id=upstream_id,
            detail=detail,
        )
        await transitions.move(
            session,
            sandbox,
            to_state,
            cause="reconciler",
            actor=ACTOR,
            at=at,
            detail=detail,
            audit=finding.audit("sandbox.reconcile"),
            tier=tier,
            upstream_id=learnt,
            seen_running_at=period.poll_at if vm is not None else None,
            upstream_last_active_at=vm.last_active_at if vm is not None else None,
        )
        found = await record(session, period, [finding])
    period.drift.update(found)


async def remove_forks(period: Period) -> None:
    """Delete, upstream, the forks of failed creates not yet confirmed gone (a batch per
    period); the upstream's 404 confirms as well as its 200."""
    async with transaction(period.rt.sessions) as session:
        pending = await repository.unremoved_forks(session, limit=FORKS_PER_PERIOD)
    for sandbox_id, upstream_id in pending:
        await lifecycle.remove_fork(period.rt, sandbox_id, upstream_id)


async def finish_delete(period: Period, row: Row) -> None:
    """deleted_upstream: a stopped row whose delete was asked (its intent is pending) and not
    recorded. Gone upstream, it is deleted as of when it was asked; still there, the intent
    stays until it is too old to matter (the reconciler then drops it)."""
    assert row.upstream_id is not None and row.pending_at is not None
    try:
        await period.rt.upstream.get_sandbox(row.upstream_id)
        return
    except UpstreamNotFound:
        pass
    except UpstreamError:
        return  # no answer: the next period asks again
    async with transaction(period.rt.sessions) as session:
        sandbox = await sandboxes_repository.get(session, row.id, team_id=None, for_update=True)
        if sandbox is None or sandbox.state != row.state or sandbox.pending_at != row.pending_at:
            return  # settled by someone else since the period loaded it
        finding = Finding(
            kind="deleted_upstream",
            action="deleted",
            sandbox_id=row.id,
            upstream_id=row.upstream_id,
            detail={"asked_at": row.pending_at.isoformat()},
        )
        await transitions.move(
            session,
            sandbox,
            SandboxState.DELETED,
            cause="reconciler",
            actor=ACTOR,
            at=row.pending_at,
            detail=finding.detail,
            audit=finding.audit("sandbox.delete"),
        )
        found = await record(session, period, [finding])
    period.drift.update(found)
