"""Admin routes of the reconciler: recent runs with their drift, and a period run on demand."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import AdminActor, RuntimeDep, SessionDep
from app.reconcile import runs
from app.reconcile.schemas import DriftOut, ReconciliationOut, RunOut

router = APIRouter(prefix="/v1/admin/reconciliation", tags=["admin"])


@router.get("", response_model=ReconciliationOut)
async def recent(
    actor: AdminActor,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    drift_limit: Annotated[int, Query(ge=0, le=5000)] = 500,
) -> ReconciliationOut:
    """The last `limit` runs, newest first, and the drift rows they found (newest first)."""
    found, drifts = await runs.recent(session, limit=limit, kind=kind, drift_limit=drift_limit)
    return ReconciliationOut(
        runs=[RunOut.model_validate(r) for r in found],
        drifts=[DriftOut.model_validate(d) for d in drifts],
    )


@router.post("/run", response_model=RunOut)
async def run_now(actor: AdminActor, rt: RuntimeDep) -> RunOut:
    """Run one reconcile period now, on this replica, and answer with its run."""
    return RunOut.model_validate(await runs.run_by_hand(rt, actor))
