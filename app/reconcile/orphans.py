"""orphan: a VM running upstream for a sandbox that is deleted or failed here → shut down
upstream. The record does not move; the drift and an audit row say what was done."""

from __future__ import annotations

from app.audit import service as audit
from app.db import transaction
from app.reconcile.period import ACTOR, Finding, Period, record
from app.reconcile.plan import Row
from app.reconcile.unmanaged import stop_upstream
from app.upstream.schemas import RunningVM


async def shut_down(period: Period, row: Row, vm: RunningVM) -> None:
    assert vm.id is not None
    stopped = await stop_upstream(period, vm.id)
    finding = Finding(
        kind="orphan",
        action="shutdown" if stopped else "shutdown_failed",
        sandbox_id=row.id,
        upstream_id=vm.id,
        detail={"state": row.state},
    )
    async with transaction(period.rt.sessions) as session:
        entry = finding.audit("sandbox.shutdown")
        await audit.record(
            session,
            actor=ACTOR,
            action=entry.action,
            team_id=row.team_id,
            target=row.id,
            cause="reconciler",
            detail=dict(entry.detail),
        )
        found = await record(session, period, [finding])
    period.drift.update(found)
