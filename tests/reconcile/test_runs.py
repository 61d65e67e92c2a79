"""A reconcile period run by hand (`app.reconcile.runs`): the stored run and its audit row, or a
refusal while another period holds the lock."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import transaction
from app.identity.actor import Actor
from app.models import AuditEntry
from app.reconcile import runs
from app.reconcile.leader import period_lock
from app.runtime import Runtime

ADMIN = Actor(key_id="admin-1", team_id=None, scopes=frozenset({"admin"}), is_admin=True)


class TestRunByHand:
    async def test_answers_with_the_stored_run_and_audits_it(self, runtime: Runtime) -> None:
        run = await runs.run_by_hand(runtime, ADMIN)
        assert run.outcome == "ok" and run.finished_at is not None
        async with transaction(runtime.sessions) as session:
            [row] = await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "reconcile.run")
            )
        assert (row.actor, row.target, row.outcome) == ("admin-1", str(run.id), "ok")
        found, _ = await self.recent(runtime)
        assert [r.id for r in found] == [run.id]

    async def test_refuses_while_another_period_holds_the_lock(
        self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(runs, "RUN_WAIT_SECONDS", 0.2)
        async with period_lock(runtime.engine):
            with pytest.raises(runs.ReconcileBusy) as refused:
                await runs.run_by_hand(runtime, ADMIN)
        assert (refused.value.status, refused.value.kind) == (409, "reconcile-busy")
        assert refused.value.detail == "A reconcile period is already running; try again shortly."

    @staticmethod
    async def recent(runtime: Runtime) -> tuple[list[object], list[object]]:
        async with transaction(runtime.sessions) as session:
            found, drifts = await runs.recent(session, limit=5, kind=None, drift_limit=10)
        return list(found), list(drifts)
