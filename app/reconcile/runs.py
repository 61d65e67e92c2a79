"""Reconcile runs as admins see them: the recent ones with their drift, and a period run by hand.

A period run by hand is the leader's period (`service.reconcile_once`) run on this replica: it
takes the period lock, so it never overlaps the leader's period or another one run by hand
(it waits up to `RUN_WAIT_SECONDS` for one already running, then refuses with 409), and it
commits its own short phases, none across an upstream call. Its audit row is written after
the period, in a transaction of its own that also reads the stored run back: the answer has
the shape `GET /v1/admin/reconciliation` lists.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.db import transaction
from app.errors import Conflict
from app.identity.actor import Actor
from app.models import Drift, ReconcileRun
from app.reconcile import repository, runs_repository
from app.reconcile.leader import PeriodBusy
from app.reconcile.service import reconcile_once
from app.runtime import Runtime

# How long a period asked for by hand waits for one already running to finish.
RUN_WAIT_SECONDS = 10.0


class ReconcileBusy(Conflict):
    """Another period held the period lock for all of `RUN_WAIT_SECONDS`."""

    kind = "reconcile-busy"

    def __init__(self) -> None:
        super().__init__("A reconcile period is already running; try again shortly.")


async def recent(
    session: AsyncSession, *, limit: int, kind: str | None, drift_limit: int
) -> tuple[list[ReconcileRun], list[Drift]]:
    """The last `limit` runs, newest first, and the drift rows they found (newest first)."""
    runs = await repository.recent_runs(session, limit)
    drifts = await repository.drifts_of(session, [r.id for r in runs], kind=kind, limit=drift_limit)
    return runs, drifts


async def run_by_hand(rt: Runtime, actor: Actor) -> ReconcileRun:
    """Run one reconcile period now, on this replica; the run as stored."""
    try:
        summary = await reconcile_once(rt, wait_seconds=RUN_WAIT_SECONDS)
    except PeriodBusy as exc:
        raise ReconcileBusy() from exc
    async with transaction(rt.sessions) as session:
        await audit.record(
            session,
            actor=actor.key_id,
            action="reconcile.run",
            team_id=None,
            target=str(summary.run_id),
            outcome=summary.outcome,
            detail={"drift": summary.drift},
        )
        run = await runs_repository.get_run(session, summary.run_id)
    assert run is not None, "reconcile_once stores its run before it returns"
    return run
