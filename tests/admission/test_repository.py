"""Admission's counts read the shared set of live states: `unknown` holds a slot like
`starting` and `running`; stopped and final sandboxes hold none."""

from __future__ import annotations

from app.admission import repository
from app.db import transaction
from app.runtime import Runtime
from app.sandboxes.states import SandboxState
from tests.usage import rows


async def seed(runtime: Runtime) -> None:
    async with runtime.engine.begin() as conn:
        await rows.teams(conn, ["team-a", "team-b"])
        for n, state in enumerate(SandboxState):
            await rows.sandboxes(conn, {f"sbx_a{n:011d}": ("team-a", "alice")}, state=state)
        await rows.sandboxes(conn, {"sbx_b00000000001": ("team-b", None)}, state="running")


class TestCounts:
    async def test_count_live_sandboxes_only(self, runtime: Runtime) -> None:
        await seed(runtime)
        async with transaction(runtime.sessions) as session:
            counted = await repository.counts(session, "team-a", "alice")
            by_state = await repository.live_by_state(session, "team-a")
            tiers = await repository.live_tiers(session, "team-a")
        assert (counted.org_live, counted.team_live, counted.owner_live) == (4, 3, 3)
        assert counted.team_tiers == {"Nano": 3}
        assert by_state == {"starting": 1, "running": 1, "unknown": 1}
        assert tiers == {"Nano": 3}

    async def test_lock_for_a_missing_team_finds_nothing(self, runtime: Runtime) -> None:
        async with transaction(runtime.sessions) as session:
            assert await repository.lock_org_for_team(session, "no-such-team") is None
            row = await repository.lock_org_for_team(session, "unassigned")
        assert row is not None and row.plan_limit == 250
