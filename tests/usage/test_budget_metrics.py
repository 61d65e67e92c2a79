"""The budget job counts what it hibernates in `corral_budget_hibernations_total{team}`."""

from __future__ import annotations

import httpx

from app.metrics import REGISTRY
from app.runtime import Runtime
from app.usage import budget
from tests.fixtures import factories
from tests.fixtures.budget import spend
from tests.fixtures.metrics import scrape, value


def hibernations(team: str) -> float:
    return REGISTRY.get_sample_value("corral_budget_hibernations_total", {"team": team}) or 0.0


class TestHibernationCounter:
    async def test_counts_each_sandbox_the_job_hibernates_by_team(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        over = await factories.team_with_key(
            client, "team-over", monthly_budget_credits="2", budget_policy="hibernate"
        )
        under = await factories.team_with_key(
            client, "team-under", monthly_budget_credits="1000", budget_policy="hibernate"
        )
        over_ids = [(await factories.sandbox(client, over))["id"] for _ in range(2)]
        under_id = (await factories.sandbox(client, under))["id"]
        await spend(runtime, over_ids[0], "team-over")
        await spend(runtime, under_id, "team-under")
        before = {team: hibernations(team) for team in ("team-over", "team-under")}

        assert await budget.enforce_budgets(runtime) == 2
        assert hibernations("team-over") - before["team-over"] == 2
        assert hibernations("team-under") == before["team-under"]

        # A run with nothing left to hibernate counts nothing.
        assert await budget.enforce_budgets(runtime) == 0
        assert hibernations("team-over") - before["team-over"] == 2
        # And the counter is what /metrics exports.
        samples = await scrape(client)
        assert value(samples, "corral_budget_hibernations_total", team="team-over") == (
            hibernations("team-over")
        )
