"""The budget job and a reconcile period take different advisory locks, so neither skips or
refuses while the other runs (they once shared one key)."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from app.locks import Lock
from app.reconcile.leader import period_lock
from app.runtime import Runtime
from app.usage import budget
from tests.fixtures import factories
from tests.fixtures.budget import running_states, spend


class TestBudgetJobAndPeriod:
    async def test_a_period_run_by_hand_runs_while_the_budget_job_holds_its_lock(
        self, client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
    ) -> None:
        async with runtime.engine.connect() as budget_job:
            assert await budget_job.scalar(select(func.pg_try_advisory_lock(Lock.BUDGET_ENFORCE)))
            await budget_job.commit()
            try:
                response = await client.post("/v1/admin/reconciliation/run", headers=admin)
            finally:
                await budget_job.execute(select(func.pg_advisory_unlock(Lock.BUDGET_ENFORCE)))
                await budget_job.commit()
        assert response.status_code == 200, response.text
        assert response.json()["outcome"] == "ok"

    async def test_the_budget_job_runs_while_a_period_holds_its_lock(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        over = await factories.team_with_key(
            client, "team-over", monthly_budget_credits="2", budget_policy="hibernate"
        )
        sandbox_id = (await factories.sandbox(client, over))["id"]
        await spend(runtime, sandbox_id, "team-over")
        async with period_lock(runtime.engine):
            assert await budget.enforce_budgets(runtime) == 1
        assert await running_states(runtime, "team-over") == {sandbox_id: ("hibernated", "budget")}
