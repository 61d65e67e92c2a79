"""Budgets: status, the warning header, and the hibernate policy's enforcement job."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, text

from app.db import transaction
from app.locks import Lock
from app.models import AuditEntry, SandboxEvent, Team
from app.runtime import Runtime
from app.settings import Settings
from app.usage import budget, periods
from tests.fixtures import factories
from tests.fixtures.budget import running_states, spend
from tests.usage import rows


class TestStatus:
    async def test_reports_spent_remaining_threshold_and_exhaustion(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await factories.team(
            client, "team-a", monthly_budget_credits="100", budget_soft_threshold="0.5"
        )
        async with runtime.engine.begin() as conn:
            await rows.sandboxes(conn, {"sbx_budget000001": ("team-a", None)}, state="shutdown")
        now = datetime.now(UTC)
        async with transaction(runtime.sessions) as session:
            team = await session.get(Team, "team-a")
            assert team is not None
            before = await budget.budget_status(
                session, team, now, timezone=runtime.settings.budget_timezone
            )
        assert (before.spent, before.remaining) == (Decimal(0), Decimal(100))
        assert not before.threshold_crossed and not before.exhausted and before.warning is None
        await spend(runtime, "sbx_budget000001", "team-a")  # ≥ 1 minute of XLarge: ≥ 5.33
        async with transaction(runtime.sessions) as session:
            team = await session.get(Team, "team-a")
            assert team is not None
            team.budget_soft_threshold = Decimal("0.05")
            after = await budget.budget_status(
                session, team, datetime.now(UTC), timezone=runtime.settings.budget_timezone
            )
        assert after.spent >= Decimal("5.333333")
        assert after.remaining == Decimal(100) - after.spent
        assert after.threshold_crossed and not after.exhausted
        assert after.warning is not None and after.warning.startswith("threshold;")

    async def test_a_team_without_budget_has_no_limit(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await factories.team(client, "team-a")
        async with transaction(runtime.sessions) as session:
            team = await session.get(Team, "team-a")
            assert team is not None
            status = await budget.budget_status(
                session, team, datetime.now(UTC), timezone=runtime.settings.budget_timezone
            )
        assert status.remaining is None and not status.threshold_crossed and not status.exhausted

    def test_an_unknown_timezone_is_refused_at_start(self) -> None:
        with pytest.raises(ValidationError):
            Settings(budget_timezone="Mars/Olympus_Mons")

    def test_months_are_calendar_months_of_the_configured_timezone(self) -> None:
        at = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)  # still February in New York

        def start(zone: str) -> datetime:
            return periods.month_start(at, ZoneInfo(zone))

        assert start("UTC") == datetime(2026, 3, 1, tzinfo=UTC)
        assert start("America/New_York") == datetime(2026, 2, 1, 5, tzinfo=UTC)
        assert start("Asia/Kolkata") == datetime(2026, 2, 28, 18, 30, tzinfo=UTC)


class TestWarningHeader:
    async def test_marks_every_response_to_a_team_past_its_soft_threshold(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        spender = await factories.team_with_key(
            client, "team-a", monthly_budget_credits="2", budget_soft_threshold="0.5"
        )
        saver = await factories.team_with_key(
            client, "team-b", monthly_budget_credits="2", budget_soft_threshold="0.5"
        )
        async with runtime.engine.begin() as conn:
            await rows.sandboxes(conn, {"sbx_budget000001": ("team-a", None)}, state="shutdown")
        # Under one minute, so one billed minute whenever in the month it runs: 80/60 credits of 2.
        await spend(runtime, "sbx_budget000001", "team-a", tier="Medium", seconds=30)
        listed = await client.get("/v1/sandboxes", headers=spender)
        assert listed.status_code == 200
        warning = listed.headers["corral-budget-warning"]
        assert warning.startswith("threshold; spent=1.333333; budget=2;"), warning
        # Error answers carry it too.
        missing = await client.get("/v1/sandboxes/sbx_nothere00001", headers=spender)
        assert missing.status_code == 404 and "corral-budget-warning" in missing.headers
        assert (
            "corral-budget-warning"
            not in (await client.get("/v1/sandboxes", headers=saver)).headers
        )
        assert (
            "corral-budget-warning"
            not in (await client.get("/v1/sandboxes", headers=factories.ADMIN)).headers
        )

    async def test_says_exhausted_once_the_budget_is_spent(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        spender = await factories.team_with_key(client, "team-a", monthly_budget_credits="1")
        async with runtime.engine.begin() as conn:
            await rows.sandboxes(conn, {"sbx_budget000001": ("team-a", None)}, state="shutdown")
        await spend(runtime, "sbx_budget000001", "team-a")
        listed = await client.get("/v1/sandboxes", headers=spender)
        assert listed.headers["corral-budget-warning"].startswith("exhausted;")


class TestEnforcement:
    async def test_hibernates_running_sandboxes_of_exhausted_hibernate_policy_teams(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        over = await factories.team_with_key(
            client, "team-over", monthly_budget_credits="2", budget_policy="hibernate"
        )
        blocked = await factories.team_with_key(
            client, "team-block", monthly_budget_credits="2", budget_policy="block"
        )
        under = await factories.team_with_key(
            client, "team-under", monthly_budget_credits="1000", budget_policy="hibernate"
        )
        over_ids = [(await factories.sandbox(client, over))["id"] for _ in range(2)]
        blocked_id = (await factories.sandbox(client, blocked))["id"]
        under_id = (await factories.sandbox(client, under))["id"]
        await spend(runtime, over_ids[0], "team-over")
        await spend(runtime, blocked_id, "team-block")
        await spend(runtime, under_id, "team-under")

        assert await budget.enforce_budgets(runtime) == 2

        assert await running_states(runtime, "team-over") == {
            sandbox_id: ("hibernated", "budget") for sandbox_id in over_ids
        }
        assert await running_states(runtime, "team-block") == {blocked_id: ("running", "api")}
        assert await running_states(runtime, "team-under") == {under_id: ("running", "api")}
        async with runtime.sessions() as session:
            events = (
                await session.scalars(
                    select(SandboxEvent).where(
                        SandboxEvent.sandbox_id.in_(over_ids), SandboxEvent.cause == "budget"
                    )
                )
            ).all()
            audits = (
                await session.scalars(select(AuditEntry).where(AuditEntry.cause == "budget"))
            ).all()
            open_intervals = await session.scalar(
                text(
                    "SELECT count(*) FROM usage_intervals "
                    "WHERE ended_at IS NULL AND sandbox_id = ANY(:ids)"
                ),
                {"ids": over_ids},
            )
        assert sorted(e.sandbox_id for e in events) == sorted(over_ids)
        assert {e.actor for e in events} == {"budget"}
        assert sorted((a.target, a.action, a.actor) for a in audits) == sorted(
            (sandbox_id, "sandbox.hibernate", "budget") for sandbox_id in over_ids
        )
        assert open_intervals == 0
        vms = (await sim.get("/_simulator/vms")).json()
        states = {vm["state"] for vm in (vms["vms"] if isinstance(vms, dict) else vms)}
        assert "hibernated" in states

        # Nothing left to do: a second run (from any replica) changes nothing.
        assert await budget.enforce_budgets(runtime) == 0

    async def test_does_nothing_while_another_replica_runs_it(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        over = await factories.team_with_key(
            client, "team-over", monthly_budget_credits="2", budget_policy="hibernate"
        )
        sandbox_id = (await factories.sandbox(client, over))["id"]
        await spend(runtime, sandbox_id, "team-over")
        async with runtime.engine.connect() as other_replica:
            await other_replica.execute(select(func.pg_advisory_lock(Lock.BUDGET_ENFORCE)))
            await other_replica.commit()
            assert await budget.enforce_budgets(runtime) == 0
            assert await running_states(runtime, "team-over") == {sandbox_id: ("running", "api")}
            await other_replica.execute(select(func.pg_advisory_unlock(Lock.BUDGET_ENFORCE)))
            await other_replica.commit()
        assert await budget.enforce_budgets(runtime) == 1


async def test_every_team_s_month_in_one_statement_is_each_team_s_own(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for team_id, seconds in (("team-a", 600), ("team-b", 1800)):
        headers = await factories.team_with_key(client, team_id)
        created = await factories.sandbox(client, headers)
        await spend(runtime, created["id"], team_id, seconds=seconds)
    await factories.team(client, "team-idle")
    at = datetime.now(UTC)
    zone = runtime.settings.budget_timezone
    async with runtime.sessions() as session:
        grouped = await budget.month_to_date_by_team(session, at, timezone=zone)
        each = {
            team_id: await budget.month_to_date_credits(session, team_id, at, timezone=zone)
            for team_id in ("team-a", "team-b", "team-idle")
        }
    assert grouped["team-b"] > grouped["team-a"] > 0
    assert {t: grouped.get(t, Decimal("0.000000")) for t in each} == each
