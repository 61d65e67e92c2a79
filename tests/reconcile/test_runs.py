"""A reconcile period run by hand (`app.reconcile.runs`): the stored run and its audit row, or a
refusal while another period holds the lock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.db import transaction
from app.identity.actor import Actor
from app.models import AuditEntry, ReconcileRun
from app.reconcile import repository, runs
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


class TestPollTimes:
    async def test_a_period_that_polled_and_did_not_finish_is_polled_not_written(
        self, runtime: Runtime
    ) -> None:
        at = datetime(2026, 12, 1, tzinfo=UTC)
        periods = [
            # (started, polled, outcome, finished)
            (0, True, "ok", True),
            (10, True, "ok", True),
            (20, False, "failed", True),  # the upstream did not answer its poll
            (30, True, "running", False),  # polled; its process or database went away
        ]
        async with transaction(runtime.sessions) as session:
            for started, polled, outcome, finished in periods:
                session.add(
                    ReconcileRun(
                        replica="r",
                        started_at=at + timedelta(seconds=started),
                        outcome=outcome,
                        upstream_running=1 if polled else None,
                        finished_at=at + timedelta(seconds=started + 1) if finished else None,
                    )
                )
            await session.flush()
            last = max(await session.scalars(select(ReconcileRun.id)))
        async with transaction(runtime.sessions) as session:
            now = await repository.poll_times(session)
            before_last = await repository.poll_times(session, last)
        assert now == repository.PollTimes(
            polled=at + timedelta(seconds=30), written=at + timedelta(seconds=10)
        )
        assert before_last == repository.PollTimes(
            polled=at + timedelta(seconds=10), written=at + timedelta(seconds=10)
        )
