"""unresolved: a `starting` row past its reservation, or an `unknown` row, resolved from what
the upstream has under its `corral-op-<operation id>` tag. Adopted if its fork exists upstream
(running, or stopped), else failed, which releases its reservation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app import clock
from app.db import transaction
from app.reconcile import repository
from app.reconcile.period import ACTOR, Finding, Period, record
from app.reconcile.plan import Row, clamp, upstream_tier
from app.sandboxes import creation, transitions
from app.sandboxes import repository as sandboxes_repository
from app.sandboxes.states import STOPPED, SandboxState
from app.upstream.errors import UpstreamError

log = logging.getLogger(__name__)


@dataclass
class Lookups:
    """Upstream ids found by operation tag, and the rows whose lookup did not answer."""

    found: dict[str, str] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)


async def look_up(period: Period, rows: Sequence[Row]) -> Lookups:
    lookups = Lookups()
    for row in rows:
        if row.upstream_id is not None:
            lookups.found[row.id] = row.upstream_id
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


async def resolve(period: Period, row: Row, lookups: Lookups) -> None:
    if row.id in lookups.failed:
        return
    upstream_id = lookups.found.get(row.id)
    if (
        upstream_id is None
        and row.state == SandboxState.UNKNOWN
        and row.state_changed_at > period.poll_at - period.grace
    ):
        # Listings may lag a fresh fork: give it the grace before declaring it absent.
        return
    vm = period.listed.get(upstream_id) if upstream_id else None
    async with transaction(period.rt.sessions) as session:
        sandbox = await sandboxes_repository.get(session, row.id, team_id=None, for_update=True)
        if (
            sandbox is None
            or sandbox.state != row.state
            or sandbox.state_changed_at != row.state_changed_at
        ):
            return  # settled by someone else since the period loaded it
        detail: dict[str, Any] = {"state": row.state, "upstream_id": upstream_id}
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
        if upstream_id is None:
            to_state = SandboxState.FAILED
            action = "duplicate" if "duplicate_of" in detail else "failed"
        elif vm is not None:
            to_state, action = SandboxState.RUNNING, "adopted"
            at = clamp(
                vm.session_started_at or period.poll_at, row.state_changed_at, period.poll_at
            )
            tier = upstream_tier(vm) or sandbox.tier
            detail["started_at"] = at.isoformat()
        else:
            before = await repository.state_before_start(session, row.id)
            to_state = SandboxState(before) if before in STOPPED else SandboxState.SHUTDOWN
            action = "adopted"
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
