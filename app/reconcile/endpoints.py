"""Admin routes of the reconciler: recent runs with their drift, and a period run on demand."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.audit import service as audit
from app.db import transaction
from app.deps import AdminActor, RuntimeDep, SessionDep
from app.errors import Conflict
from app.models import ReconcileRun
from app.reconcile import repository
from app.reconcile.leader import PeriodBusy
from app.reconcile.schemas import DriftOut, ReconciliationOut, RunOut
from app.reconcile.service import reconcile_once

router = APIRouter(prefix="/v1/admin/reconciliation", tags=["admin"])

# How long a period asked for by hand waits for one already running to finish.
RUN_WAIT_SECONDS = 10.0


@router.get("", response_model=ReconciliationOut)
async def recent(
    actor: AdminActor,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    drift_limit: Annotated[int, Query(ge=0, le=5000)] = 500,
) -> ReconciliationOut:
    """The last `limit` runs, newest first, and the drift rows they found (newest first)."""
    runs = await repository.recent_runs(session, limit)
    drifts = await repository.drifts_of(session, [r.id for r in runs], kind=kind, limit=drift_limit)
    return ReconciliationOut(
        runs=[RunOut.model_validate(r) for r in runs],
        drifts=[DriftOut.model_validate(d) for d in drifts],
    )


@router.post("/run", response_model=RunOut)
async def run_now(actor: AdminActor, rt: RuntimeDep) -> RunOut:
    """Run one reconcile period now, on this replica, and answer with its run."""
    try:
        summary = await reconcile_once(rt, wait_seconds=RUN_WAIT_SECONDS)
    except PeriodBusy as exc:
        raise Conflict(
            "A reconcile period is already running; try again shortly.",
            kind="reconcile-busy",
        ) from exc
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
        # The run as stored: the same shape GET lists.
        run = await session.get(ReconcileRun, summary.run_id)
        assert run is not None
        return RunOut.model_validate(run)
