"""Each drift kind, end to end: the in-process simulator's clock and faults make the upstream
drift, one reconcile period repairs it, and the database shows the repair (state, ledger,
event, drift row, audit row)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.db import transaction
from app.models import OrgPlan, Sandbox, UsageInterval
from app.reconcile import service
from app.runtime import Runtime
from tests.fixtures import factories
from tests.reconcile.helpers import (
    at,
    audits,
    by_upstream_id,
    configure,
    drifts,
    events,
    intervals,
    reconcile,
    runs,
    sandbox,
    vm,
    vms,
)


class TestStoppedUpstream:
    async def test_auto_hibernation_closes_the_interval_within_the_sighting_bounds(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, hibernation_timeout_seconds=60)
        seen = await reconcile(runtime)
        assert (await sandbox(runtime, created["id"])).last_seen_running_at is not None

        advanced = await sim.post("/_simulator/clock/advance", json={"seconds": 120})
        assert created["upstream_id"] in advanced.json()["hibernated"]

        first_miss = await reconcile(runtime)
        row = await sandbox(runtime, created["id"])
        assert (row.state, row.missed_polls) == ("running", 1), "one miss is not enough"
        assert first_miss.drift == {}

        closing = await reconcile(runtime)
        assert closing.drift == {"stopped_upstream": 1}
        row = await sandbox(runtime, created["id"])
        assert (row.state, row.last_cause) == ("hibernated", "upstream")
        [interval] = await intervals(runtime, created["id"])
        assert interval.ended_at is not None and interval.end_cause == "upstream"
        # Clamped between the last sighting running and the first sighting stopped, so it
        # is not the moment the second miss was noticed.
        assert seen.started_at <= interval.ended_at <= first_miss.started_at
        assert interval.ended_at < closing.started_at

        last = (await events(runtime, created["id"]))[-1]
        assert (last.from_state, last.to_state, last.cause) == ("running", "hibernated", "upstream")
        [drift] = await drifts(runtime, "stopped_upstream")
        assert (drift.sandbox_id, drift.action) == (created["id"], "hibernated")
        assert drift.run_id == closing.run_id
        assert any(
            a.action == "sandbox.hibernate" and a.cause == "upstream"
            for a in await audits(runtime, created["id"])
        )

    async def test_a_first_miss_written_by_a_period_that_failed_later_dates_the_stop(
        self,
        client: httpx.AsyncClient,
        sim: httpx.AsyncClient,
        runtime: Runtime,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The database went away after a period wrote its first misses: that period's poll is
        still when the VM was first seen stopped, not the last period that finished."""
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, hibernation_timeout_seconds=60)
        await reconcile(runtime)
        await sim.post("/_simulator/clock/advance", json={"seconds": 3600})
        written = service._record_sightings

        async def then_the_database_fails(*args: Any) -> None:
            await written(*args)
            raise ConnectionResetError("the database went away")

        monkeypatch.setattr(service, "_record_sightings", then_the_database_fails)
        failed = await reconcile(runtime)
        assert failed.outcome == "failed"
        monkeypatch.undo()
        await sim.post("/_simulator/clock/advance", json={"seconds": 3600})
        assert (await reconcile(runtime)).drift == {"stopped_upstream": 1}
        [closed] = [e for e in await events(runtime, created["id"]) if e.to_state == "hibernated"]
        assert at(closed.detail["first_seen_stopped_at"]) == failed.started_at
        [stretch] = (await vm(sim, created["upstream_id"]))["ledger"]["stretches"]
        [interval] = await intervals(runtime, created["id"])
        assert interval.ended_at is not None
        assert abs(interval.ended_at - at(stretch["ended_at"])) < timedelta(seconds=1)

    async def test_a_sandbox_seen_again_after_one_miss_is_not_closed(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, hibernation_timeout_seconds=60)
        await reconcile(runtime)
        await sim.post("/_simulator/clock/advance", json={"seconds": 120})
        await reconcile(runtime)
        # Woken upstream before the second poll: the miss counter starts again.
        assert (await sim.post(f"/_simulator/vms/{created['upstream_id']}/wake")).status_code == 200
        await reconcile(runtime)
        await reconcile(runtime)
        row = await sandbox(runtime, created["id"])
        assert (row.state, row.missed_polls) == ("running", 0)
        # Not closed on the one miss; but the listing shows a new session, so the stretch it
        # slept through is not billed: the first interval lasts as long as the upstream's did
        # (it began when Corral sent the start, a call's latency before the upstream's).
        first, second = await intervals(runtime, created["id"])
        stretches = (await vm(sim, created["upstream_id"]))["ledger"]["stretches"]
        assert first.ended_at is not None
        assert first.ended_at - first.started_at == at(stretches[0]["ended_at"]) - at(
            stretches[0]["started_at"]
        )
        assert second.ended_at is None
        assert second.started_at == at(stretches[1]["started_at"])


class TestWokenUpstream:
    async def test_a_vm_woken_by_traffic_runs_again_from_its_session_start(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        response = await client.post(f"/v1/sandboxes/{created['id']}/hibernate", headers=headers)
        assert response.status_code == 200, response.text
        woken = await sim.post(f"/_simulator/vms/{created['upstream_id']}/wake")
        assert woken.status_code == 200
        session_started_at = at(woken.json()["session_started_at"])

        summary = await reconcile(runtime)
        assert summary.drift == {"woken_upstream": 1}
        row = await sandbox(runtime, created["id"])
        assert (row.state, row.last_cause) == ("running", "upstream")
        first, second = await intervals(runtime, created["id"])
        assert first.ended_at is not None
        assert second.ended_at is None
        assert second.started_at == session_started_at
        last = (await events(runtime, created["id"]))[-1]
        assert (last.from_state, last.to_state, last.cause) == ("hibernated", "running", "upstream")

        # Steady state: nothing more to repair.
        assert (await reconcile(runtime)).drift == {}
        assert len(await intervals(runtime, created["id"])) == 2


class TestStaleListing:
    async def test_a_stale_listing_does_not_close_a_fresh_sandbox(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await configure(sim, running_staleness_seconds=600)
        await reconcile(runtime)  # the snapshot now cached upstream predates the sandbox
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        for _ in range(3):
            summary = await reconcile(runtime)
            assert summary.drift == {}
        row = await sandbox(runtime, created["id"])
        assert (row.state, row.missed_polls) == ("running", 0)
        assert [i.ended_at for i in await intervals(runtime, created["id"])] == [None]

    async def test_a_stale_listing_does_not_restart_a_sandbox_stopped_here(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        await configure(sim, running_staleness_seconds=600)
        await reconcile(runtime)  # cached while it runs
        response = await client.post(f"/v1/sandboxes/{created['id']}/hibernate", headers=headers)
        assert response.status_code == 200
        assert (await reconcile(runtime)).drift == {}
        assert (await sandbox(runtime, created["id"])).state == "hibernated"
        assert len(await intervals(runtime, created["id"])) == 1

    async def test_a_stale_listing_does_not_undo_a_resize_made_here(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, tier="Nano")
        await configure(sim, running_staleness_seconds=600)
        await reconcile(runtime)  # cached while it runs at Nano
        resized = await client.patch(
            f"/v1/sandboxes/{created['id']}", json={"tier": "Small"}, headers=headers
        )
        assert resized.status_code == 200, resized.text
        assert (await reconcile(runtime)).drift == {}
        assert (await sandbox(runtime, created["id"])).tier == "Small"
        tiers = [(i.tier, i.ended_at is None) for i in await intervals(runtime, created["id"])]
        assert tiers == [("Nano", False), ("Small", True)]


class TestUnresolved:
    async def test_a_lost_create_is_adopted_without_a_second_sandbox(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        await configure(
            sim, faults={"fork": {"lose_response_rate": 1.0}, "list": {"error_rate": 1.0}}
        )
        response = await client.post("/v1/sandboxes", json={}, headers=headers)
        assert response.status_code >= 500
        await configure(sim, faults={})
        [listed] = (await client.get("/v1/sandboxes", headers=headers)).json()["items"]
        assert listed["state"] == "unknown"
        [forked] = await vms(sim)

        for _ in range(2):
            await reconcile(runtime)
        row = await sandbox(runtime, listed["id"])
        assert row.upstream_id == forked["id"]
        # The fork was never started, so it is adopted stopped, with no usage.
        assert (row.state, row.last_cause) == ("shutdown", "reconciler")
        assert await intervals(runtime, listed["id"]) == []
        assert len(await vms(sim)) == 1
        assert len(await by_upstream_id(runtime, forked["id"])) == 1
        [drift] = await drifts(runtime, "unresolved")
        assert (drift.sandbox_id, drift.action) == (listed["id"], "adopted")

    async def test_an_expired_reservation_whose_vm_runs_is_adopted_running(
        self, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        operation_id = uuid.uuid4().hex
        upstream_id = await _forked_and_started(sim, operation_id)
        sandbox_id = await _starting_row(runtime, operation_id, expired=True)
        session_started_at = at((await vm(sim, upstream_id))["session_started_at"])
        reserved_at = (await sandbox(runtime, sandbox_id)).state_changed_at

        summary = await reconcile(runtime)
        assert summary.drift == {"unresolved": 1}, "the VM is ours, not unmanaged"
        row = await sandbox(runtime, sandbox_id)
        assert (row.state, row.upstream_id, row.reservation_expires_at) == (
            "running",
            upstream_id,
            None,
        )
        [interval] = await intervals(runtime, sandbox_id)
        assert interval.ended_at is None
        # From the upstream's session start, never before the reservation began.
        assert interval.started_at == max(session_started_at, reserved_at)
        assert await reconcile(runtime) is not None
        assert len(await intervals(runtime, sandbox_id)) == 1
        assert len(await by_upstream_id(runtime, upstream_id)) == 1

    async def test_a_create_still_in_flight_is_not_taken_for_unmanaged(
        self, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        operation_id = uuid.uuid4().hex
        upstream_id = await _forked_and_started(sim, operation_id)
        sandbox_id = await _starting_row(runtime, operation_id, expired=False)
        assert (await reconcile(runtime)).drift == {}
        assert (await sandbox(runtime, sandbox_id)).state == "starting"
        assert await by_upstream_id(runtime, upstream_id) == []

    async def test_an_expired_reservation_with_no_fork_upstream_fails(
        self, runtime: Runtime
    ) -> None:
        sandbox_id = await _starting_row(runtime, uuid.uuid4().hex, expired=True)
        assert (await reconcile(runtime)).drift == {"unresolved": 1}
        row = await sandbox(runtime, sandbox_id)
        assert (row.state, row.last_cause, row.reservation_expires_at) == (
            "failed",
            "reconciler",
            None,
        )


class TestUnmanaged:
    async def test_a_vm_started_outside_corral_is_recorded_under_unassigned(
        self, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        outside = (await sim.post("/_simulator/vms", json={"tier": "Micro"})).json()
        summary = await reconcile(runtime)
        assert summary.drift == {"unmanaged": 1}
        [row] = await by_upstream_id(runtime, outside["id"])
        assert (row.team_id, row.managed, row.state, row.tier) == (
            "unassigned",
            False,
            "running",
            "Micro",
        )
        [interval] = await intervals(runtime, row.id)
        assert interval.ended_at is None
        assert interval.started_at == at(outside["session_started_at"])
        [drift] = await drifts(runtime, "unmanaged")
        assert drift.action == "adopted"
        # Recorded once: the next period knows it.
        assert (await reconcile(runtime)).drift == {}
        assert len(await by_upstream_id(runtime, outside["id"])) == 1

    async def test_the_shutdown_policy_stops_it_upstream(
        self, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        runtime.settings = runtime.settings.model_copy(update={"unmanaged_policy": "shutdown"})
        outside = (await sim.post("/_simulator/vms", json={})).json()
        assert (await reconcile(runtime)).drift == {"unmanaged": 1}
        assert (await vm(sim, outside["id"]))["state"] == "shutdown"
        [row] = await by_upstream_id(runtime, outside["id"])
        assert (row.state, row.last_cause) == ("shutdown", "reconciler")
        [interval] = await intervals(runtime, row.id)
        assert interval.ended_at is not None


class TestTierChanged:
    async def test_a_tier_changed_upstream_splits_the_interval_at_the_sighting(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, tier="Nano")
        response = await sim.put(f"/vm/{created['upstream_id']}/specs", json={"tier": "Small"})
        assert response.status_code == 200, response.text
        # Written here moments ago: a listing within the grace may predate the row's tier.
        assert (await reconcile(runtime)).drift == {}
        grace = runtime.settings.reconcile_sighting_grace_seconds
        await sim.post("/_simulator/clock/advance", json={"seconds": grace + 10})
        summary = await reconcile(runtime)
        assert summary.drift == {"tier_changed": 1}
        assert (await sandbox(runtime, created["id"])).tier == "Small"
        before, after = await intervals(runtime, created["id"])
        assert (before.tier, before.ended_at, before.end_cause) == (
            "Nano",
            summary.started_at,
            "resize",
        )
        assert (after.tier, after.started_at, after.ended_at) == ("Small", summary.started_at, None)
        assert after.credits_per_hour > before.credits_per_hour


class TestPeriod:
    async def test_the_observed_limit_is_stored_for_admission(
        self, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await configure(sim, concurrent_vm_limit=42)
        summary = await reconcile(runtime)
        assert summary.observed_limit == 42
        async with transaction(runtime.sessions) as session:
            plan = await session.get(OrgPlan, 1)
            assert plan is not None
            assert plan.observed_limit == 42 and plan.observed_at is not None

    async def test_an_upstream_error_is_a_failed_run_that_changes_nothing(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        await reconcile(runtime)
        await configure(sim, faults={"running": {"error_rate": 1.0, "status": 500}})
        for _ in range(3):
            summary = await reconcile(runtime)
            assert summary.outcome == "failed" and summary.error
        row = await sandbox(runtime, created["id"])
        assert (row.state, row.missed_polls) == ("running", 0)
        assert [r.outcome for r in await runs(runtime)] == ["ok", "failed", "failed", "failed"]

    async def test_one_bad_sandbox_does_not_stop_the_others(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        good = await factories.sandbox(client, headers)
        bad = await factories.sandbox(client, headers)
        for created in (good, bad):
            await client.post(f"/v1/sandboxes/{created['id']}/hibernate", headers=headers)
            await sim.post(f"/_simulator/vms/{created['upstream_id']}/wake")
        # The database refuses every write of one sandbox's event, so its move fails whole.
        async with transaction(runtime.sessions) as session:
            await session.execute(
                text(
                    "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$"
                    f" BEGIN IF NEW.sandbox_id = '{bad['id']}' THEN"
                    " RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
                )
            )
            await session.execute(
                text(
                    "CREATE TRIGGER refuse_bad BEFORE INSERT ON sandbox_events"
                    " FOR EACH ROW EXECUTE FUNCTION refuse_bad()"
                )
            )
        try:
            summary = await reconcile(runtime)
        finally:
            async with transaction(runtime.sessions) as session:
                await session.execute(text("DROP TRIGGER refuse_bad ON sandbox_events"))
                await session.execute(text("DROP FUNCTION refuse_bad()"))
        assert summary.outcome == "ok"
        assert summary.drift == {"woken_upstream": 1}
        assert (await sandbox(runtime, good["id"])).state == "running"
        assert (await sandbox(runtime, bad["id"])).state == "hibernated"
        assert [i.ended_at for i in await intervals(runtime, bad["id"])][-1] is not None

    async def test_a_stale_open_interval_is_not_opened_twice(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        """The ledger rule is the ledger's own state: a sandbox that enters `running` while an
        interval is somehow still open keeps that one instead of failing on the
        one-open-interval index."""
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        await client.post(f"/v1/sandboxes/{created['id']}/hibernate", headers=headers)
        await sim.post(f"/_simulator/vms/{created['upstream_id']}/wake")
        async with transaction(runtime.sessions) as session:
            session.add(
                UsageInterval(
                    sandbox_id=created["id"],
                    team_id="search-ui",
                    tier="Nano",
                    credits_per_hour=10,
                    started_at=datetime.now(UTC) - timedelta(hours=1),
                )
            )
        summary = await reconcile(runtime)
        assert summary.drift == {"woken_upstream": 1}
        assert (await sandbox(runtime, created["id"])).state == "running"
        # The stale interval (an hour old, so first) stays the open one; no second is opened.
        assert [i.ended_at is None for i in await intervals(runtime, created["id"])] == [
            True,
            False,
        ]


async def _forked_and_started(sim: httpx.AsyncClient, operation_id: str) -> str:
    """A VM made upstream the way Corral's create makes one, whose answer Corral never saw."""
    fork = await sim.post(
        "/sandbox/pcz35m/fork", json={"tags": ["corral", f"corral-op-{operation_id}"]}
    )
    assert fork.status_code in (200, 201), fork.text
    upstream_id: str = fork.json()["data"]["id"]
    started = await sim.post(f"/vm/{upstream_id}/start", json={})
    assert started.status_code == 200, started.text
    return upstream_id


async def _starting_row(runtime: Runtime, operation_id: str, *, expired: bool) -> str:
    """A `starting` row whose process died before it learnt the fork's id."""
    sandbox_id = "sbx_" + uuid.uuid4().hex[:12]
    lapse = timedelta(seconds=-5 if expired else 120)
    async with transaction(runtime.sessions) as session:
        await session.execute(
            text(
                "INSERT INTO teams (id, name, created_at) VALUES ('search-ui', 'search-ui', :at)"
                " ON CONFLICT DO NOTHING"
            ),
            {"at": datetime.now(UTC)},
        )
        session.add(
            Sandbox(
                id=sandbox_id,
                team_id="search-ui",
                template="pcz35m",
                tier="Nano",
                hibernation_timeout_seconds=300,
                state="starting",
                last_cause="api",
                operation_id=operation_id,
                reservation_expires_at=datetime.now(UTC) + lapse,
            )
        )
    return sandbox_id
