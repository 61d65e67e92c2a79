"""Queries of `app.reconcile.runs` (the admin view of reconcile runs) that
`app.reconcile.repository` does not hold."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ReconcileRun


async def get_run(session: AsyncSession, run_id: int) -> ReconcileRun | None:
    return await session.get(ReconcileRun, run_id)
