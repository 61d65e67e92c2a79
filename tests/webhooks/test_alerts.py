"""Which events the figures call for, and that each is written once per its period: budget
thresholds, exhaustion and projection (DESIGN §13), plan headroom, budget hibernations and
the reconciler's findings, each in the transaction of its cause."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select

from app.models import Team, WebhookEvent
from app.runtime import Runtime
from app.usage import budget
from app.webhooks import alerts
from tests.fixtures import factories
from tests.fixtures.budget import spend
from tests.reconcile.helpers import reconcile

UTC_ZONE = ZoneInfo("UTC")


def _team(budget_credits: str | None = "100", thresholds: list[str] | None = None) -> Team:
    return Team(
        id="team-a",
        name="a",
        monthly_budget_credits=None if budget_credits is None else Decimal(budget_credits),
        budget_policy="block",
        budget_thresholds=None if thresholds is None else [Decimal(t) for t in thresholds],
    )


def _kinds(events: list[Any]) -> list[tuple[str, str | None]]:
    return [(e.type, e.data.get("threshold")) for e in events]


async def _written(runtime: Runtime, kind: str | None = None) -> list[WebhookEvent]:
    async with runtime.sessions() as session:
        query = select(WebhookEvent).order_by(WebhookEvent.occurred_at, WebhookEvent.type)
        if kind is not None:
            query = query.where(WebhookEvent.type == kind)
        return list(await session.scalars(query))


class TestBudgetFigures:
    at = datetime(2027, 1, 10, 12, tzinfo=UTC)

    def test_below_the_first_threshold_and_idle_nothing_is_due(self) -> None:
        assert alerts.budget_events(_team(), Decimal("49.99"), Decimal(0), self.at, UTC_ZONE) == []

    def test_each_threshold_reached_is_due_with_its_month_in_the_key(self) -> None:
        due = alerts.budget_events(_team(), Decimal("80"), Decimal(0), self.at, UTC_ZONE)
        assert _kinds(due) == [
            ("budget.threshold_crossed", "0.5"),
            ("budget.threshold_crossed", "0.8"),
        ]
        assert [e.dedupe_key for e in due] == [
            "budget.threshold_crossed:team-a:2027-01:0.5",
            "budget.threshold_crossed:team-a:2027-01:0.8",
        ]
        data = due[0].data
        assert (data["spent_credits"], data["budget_credits"], data["remaining_credits"]) == (
            "80",
            "100",
            "20",
        )
        assert data["resets_at"] == "2027-02-01T00:00:00+00:00"
        assert data["link"] == "/v1/admin/teams/team-a"

    def test_the_budget_reached_is_exhaustion_and_no_projection(self) -> None:
        due = alerts.budget_events(_team(), Decimal("100"), Decimal(5), self.at, UTC_ZONE)
        assert _kinds(due) == [
            ("budget.threshold_crossed", "0.5"),
            ("budget.threshold_crossed", "0.8"),
            ("budget.threshold_crossed", "0.9"),
            ("budget.exhausted", None),
        ]
        assert due[-1].dedupe_key == "budget.exhausted:team-a:2027-01"

    def test_a_burn_that_runs_out_before_the_month_ends_is_projected(self) -> None:
        # 50 credits left at 1 credit/h: gone 50 h from now, on the 12th at 14:00.
        [projected] = alerts.budget_events(_team(), Decimal("50"), Decimal(1), self.at, UTC_ZONE)[
            1:
        ]
        assert projected.type == "budget.projected_exhaustion"
        assert projected.data["projected_at"] == "2027-01-12T14:00:00+00:00"
        assert projected.data["projected_date"] == "2027-01-12"
        assert projected.dedupe_key == "budget.projected_exhaustion:team-a:2027-01-10"

    def test_a_burn_that_lasts_past_the_month_is_not_projected(self) -> None:
        late = datetime(2027, 1, 30, 12, tzinfo=UTC)
        due = alerts.budget_events(_team(), Decimal("10"), Decimal(1), late, UTC_ZONE)
        assert due == []

    def test_the_team_names_its_thresholds_and_none_means_none(self) -> None:
        custom = _team(thresholds=["0.25", "0.75"])
        due = alerts.budget_events(custom, Decimal("76"), Decimal(0), self.at, UTC_ZONE)
        assert _kinds(due) == [
            ("budget.threshold_crossed", "0.25"),
            ("budget.threshold_crossed", "0.75"),
        ]
        assert alerts.budget_events(_team(thresholds=[]), Decimal("99"), 0, self.at, UTC_ZONE) == []

    def test_a_month_and_a_day_are_the_accounting_timezone_s(self) -> None:
        # 23:30 UTC on 31 January is already 1 February in Tokyo: a new budget month.
        tokyo = ZoneInfo("Asia/Tokyo")
        late = datetime(2027, 1, 31, 23, 30, tzinfo=UTC)
        [due] = alerts.budget_events(_team(), Decimal("60"), Decimal(0), late, tokyo)
        assert due.dedupe_key == "budget.threshold_crossed:team-a:2027-02:0.5"

    def test_a_team_without_a_budget_has_no_budget_events(self) -> None:
        assert (
            alerts.budget_events(_team(None), Decimal(10**6), Decimal(1), self.at, UTC_ZONE) == []
        )


class TestOncePerPeriod:
    async def test_a_threshold_is_written_once_however_often_it_is_evaluated(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client, "team-a")
        created = await factories.sandbox(client, headers)
        await spend(runtime, created["id"], "team-a", seconds=600)
        async with runtime.sessions() as session:
            spent = await budget.month_to_date_credits(
                session, "team-a", datetime.now(UTC), timezone=UTC_ZONE
            )
        assert spent > 0
        # A budget the spend is 85 % of (its open interval adds a little more as time passes).
        patched = await client.patch(
            "/v1/admin/teams/team-a",
            json={
                "monthly_budget_credits": str((spent / Decimal("0.85")).quantize(Decimal("1.0000")))
            },
            headers=factories.ADMIN,
        )
        assert patched.status_code == 200, patched.text
        first = await alerts.evaluate(runtime)
        again = await alerts.evaluate(runtime)
        crossed = await _written(runtime, "budget.threshold_crossed")
        assert sorted(e.data["threshold"] for e in crossed) == ["0.5", "0.8"]
        assert len(first) >= 2 and not set(again) & {e.id for e in crossed}
        assert {e.team_id for e in crossed} == {"team-a"}

    async def test_thresholds_are_set_on_the_team_and_audited(
        self, client: httpx.AsyncClient
    ) -> None:
        await factories.team(client, "team-a")
        shown = await client.get("/v1/admin/teams/team-a", headers=factories.ADMIN)
        assert shown.json()["budget_thresholds"] == ["0.5", "0.8", "0.9"]
        patched = await client.patch(
            "/v1/admin/teams/team-a",
            json={"budget_thresholds": ["0.95", "0.6"]},
            headers=factories.ADMIN,
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["budget_thresholds"] == ["0.6", "0.95"]
        for bad in (["0.5", "0.5"], ["1"], ["0"], ["-0.1"], ["0.1"] * 11, "half"):
            refused = await client.patch(
                "/v1/admin/teams/team-a", json={"budget_thresholds": bad}, headers=factories.ADMIN
            )
            assert refused.status_code == 422, bad
        kept = await client.get("/v1/admin/teams/team-a", headers=factories.ADMIN)
        assert kept.json()["budget_thresholds"] == ["0.6", "0.95"]
        log = await client.get(
            "/v1/admin/audit", params={"action": "team.update"}, headers=factories.ADMIN
        )
        [entry] = [e for e in log.json()["items"] if "budget_thresholds" in e["detail"]]
        assert entry["detail"]["budget_thresholds"] == ["0.6", "0.95"]


class TestPlan:
    async def test_the_admission_that_fills_the_plan_tells_once_per_episode(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        plan = await client.put(
            "/v1/admin/plan", json={"plan": "enterprise", "limit": 2}, headers=factories.ADMIN
        )
        assert plan.status_code == 200, plan.text
        headers = await factories.team_with_key(client, "team-a")
        first = await factories.sandbox(client, headers)
        assert await _written(runtime) == []  # 1 of 2: half free
        await factories.sandbox(client, headers)
        # Written by the admission itself, before any evaluation.
        assert [e.type for e in await _written(runtime)] == [
            "org.plan_full",
            "org.plan_headroom_low",
        ]
        full = (await _written(runtime, "org.plan_full"))[0]
        assert (full.data["live"], full.data["effective_limit"], full.data["headroom"]) == (2, 2, 0)
        # Still full: nothing more, however often it is looked at.
        assert await alerts.evaluate(runtime) == []
        stopped = await client.post(f"/v1/sandboxes/{first['id']}/hibernate", headers=headers)
        assert stopped.status_code == 200, stopped.text
        assert await alerts.evaluate(runtime) == []  # re-armed, nothing told
        started = await client.post(f"/v1/sandboxes/{first['id']}/start", headers=headers)
        assert started.status_code == 200, started.text
        assert len(await _written(runtime, "org.plan_full")) == 2


class TestCauses:
    async def test_a_budget_hibernation_is_an_event_in_its_transaction(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(
            client, "team-over", monthly_budget_credits="2", budget_policy="hibernate"
        )
        created = await factories.sandbox(client, headers, owner="carol@corp")
        await spend(runtime, created["id"], "team-over")
        assert await budget.enforce_budgets(runtime) == 1
        [event] = await _written(runtime, "sandbox.hibernated_by_budget")
        assert event.team_id == "team-over"
        assert event.data["sandbox_id"] == created["id"]
        assert event.data["owner"] == "carol@corp"
        # Once: the next run finds it hibernated and stops nothing.
        assert await budget.enforce_budgets(runtime) == 0
        assert len(await _written(runtime, "sandbox.hibernated_by_budget")) == 1

    async def test_an_unmanaged_vm_is_found_and_told_as_drift(
        self, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        outside = (await sim.post("/_simulator/vms", json={"tier": "Micro"})).json()
        assert (await reconcile(runtime)).drift == {"unmanaged": 1}
        [found] = await _written(runtime, "sandbox.unmanaged_found")
        [drift] = await _written(runtime, "reconcile.drift_found")
        assert found.data["upstream_id"] == drift.data["upstream_id"] == outside["id"]
        assert (drift.data["kind"], drift.data["action"]) == ("unmanaged", "adopted")
        await reconcile(runtime)
        assert len(await _written(runtime, "reconcile.drift_found")) == 1

    async def test_an_event_rolled_back_with_its_cause_is_never_written(
        self, runtime: Runtime
    ) -> None:
        from app.webhooks.events import Event, emit

        class Boom(Exception):
            pass

        try:
            async with runtime.sessions() as session, session.begin():
                assert await emit(session, Event("org.plan_full", {"live": 1}))
                raise Boom
        except Boom:
            pass
        assert await _written(runtime) == []

    async def test_an_unknown_event_type_is_refused(self, runtime: Runtime) -> None:
        import pytest

        from app.webhooks.events import Event, emit

        async with runtime.sessions() as session:
            with pytest.raises(ValueError, match="unknown event type"):
                await emit(session, Event("budget.nearly", {}))
