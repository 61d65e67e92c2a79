"""unmanaged: a VM running upstream that Corral did not start → a row of team `unassigned`,
counted against the org plan like any live row; with policy `shutdown`, then shut down."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.db import transaction
from app.models import Sandbox
from app.reconcile.period import ACTOR, Finding, Period, record
from app.reconcile.plan import Row
from app.sandboxes import creation, repository, transitions
from app.sandboxes.states import SandboxState
from app.sandboxes.transitions import Audit, Birth
from app.upstream.errors import UpstreamError, UpstreamNotFound
from app.upstream.schemas import RunningVM
from app.upstream.tiers import tier_of

log = logging.getLogger(__name__)

UNASSIGNED_TEAM = "unassigned"


def _row_for(period: Period, vm: RunningVM) -> Sandbox:
    settings = period.rt.settings
    # The upstream's clock may run ahead of ours: never open an interval in the future.
    started = min(vm.session_started_at or period.poll_at, period.poll_at)
    return Sandbox(
        id=creation.new_sandbox_id(),
        upstream_id=vm.id,
        team_id=UNASSIGNED_TEAM,
        owner=None,
        title=None,
        template="unknown",
        tier=tier_of(vm) or settings.default_tier,
        hibernation_timeout_seconds=settings.default_hibernation_timeout_seconds,
        privacy=2,
        automatic_wakeup=True,
        tags=[],
        state=SandboxState.RUNNING,
        operation_id=uuid.uuid4().hex,
        reservation_expires_at=None,
        managed=False,
        created_at=clock.now(),
        state_changed_at=started,
        last_seen_running_at=period.poll_at,
        upstream_last_active_at=vm.last_active_at,
    )


async def record_unmanaged(
    period: Period, session: AsyncSession, batch: Sequence[RunningVM]
) -> Counter[str]:
    policy = period.rt.settings.unmanaged_policy
    births = []
    findings = {}
    for vm in batch:
        row = _row_for(period, vm)
        finding = Finding(
            kind="unmanaged",
            action="shutdown" if policy == "shutdown" else "adopted",
            sandbox_id=row.id,
            upstream_id=row.upstream_id,
            detail={"tier": row.tier, "policy": policy},
        )
        findings[row.id] = finding
        births.append(
            Birth(
                row,
                cause="upstream",
                actor=ACTOR,
                detail=finding.detail,
                audit=finding.audit("sandbox.adopt"),
            )
        )
    inserted = await transitions.insert(session, births)
    return await record(session, period, (findings[row["id"]] for row in inserted))


async def stop_upstream(period: Period, upstream_id: str) -> bool:
    """Shut a VM down upstream; True once it is not running there."""
    try:
        await period.rt.upstream.shutdown(upstream_id)
    except UpstreamNotFound:
        return True
    except UpstreamError as err:
        log.warning(
            "reconciler shutdown failed",
            extra={"upstream_id": upstream_id, "upstream_status": err.status},
        )
        return False
    return True


async def shutdown_unmanaged(period: Period, row: Row) -> None:
    assert row.upstream_id is not None
    if not await stop_upstream(period, row.upstream_id):
        return
    async with transaction(period.rt.sessions) as session:
        sandbox = await repository.get(session, row.id, team_id=None, for_update=True)
        if sandbox is None or sandbox.state != SandboxState.RUNNING:
            return
        await transitions.move(
            session,
            sandbox,
            SandboxState.SHUTDOWN,
            cause="reconciler",
            actor=ACTOR,
            detail={"policy": "shutdown"},
            audit=Audit("sandbox.shutdown", {"policy": "shutdown", "upstream_id": row.upstream_id}),
        )
