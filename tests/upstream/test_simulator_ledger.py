"""The ground-truth billing ledger: per-stretch rounding up to started minutes, tier splits."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from tests.upstream.conftest import SimDriver


@pytest.fixture
async def frozen(drive: SimDriver) -> SimDriver:
    await drive.freeze()
    return drive


class TestLedger:
    @pytest.mark.parametrize(
        ("seconds", "minutes"), [(0.5, 1), (59.999, 1), (60, 1), (60.001, 2), (3 * 60 + 25, 4)]
    )
    async def test_each_started_minute_is_billed(
        self, frozen: SimDriver, sim_client: httpx.AsyncClient, seconds: float, minutes: int
    ) -> None:
        vm_id = await frozen.started(tier="Nano")
        await frozen.advance(seconds)
        await sim_client.post(f"/vm/{vm_id}/hibernate")
        (stretch,) = (await frozen.vm(vm_id))["ledger"]["stretches"]
        assert stretch["seconds"] == pytest.approx(seconds)
        assert stretch["billed_minutes"] == minutes
        assert stretch["credit_minutes"] == minutes * 10

    async def test_a_tier_change_closes_the_stretch_and_opens_another(
        self, frozen: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await frozen.started(tier="Nano")
        await frozen.advance(90)
        await sim_client.put(f"/vm/{vm_id}/specs", json={"tier": "Small"})
        await frozen.advance(30)
        await sim_client.post(f"/vm/{vm_id}/shutdown")
        ledger = (await frozen.vm(vm_id))["ledger"]
        nano, small = ledger["stretches"]
        assert (nano["tier"], nano["billed_minutes"], nano["credits"]) == ("Nano", 2, "0.333333")
        assert (small["tier"], small["billed_minutes"], small["credits"]) == (
            "Small",
            1,
            "0.666667",
        )
        assert nano["ended_at"] == small["started_at"]
        assert ledger["billed_minutes"] == 3
        assert ledger["credit_minutes"] == 60
        assert ledger["credits"] == "1.000000"

    async def test_the_same_tier_does_not_split(
        self, frozen: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await frozen.started(tier="Micro")
        await sim_client.put(f"/vm/{vm_id}/specs", json={"tier": "Micro"})
        assert len((await frozen.vm(vm_id))["ledger"]["stretches"]) == 1

    async def test_stopped_time_is_not_billed_and_each_run_rounds_separately(
        self, frozen: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await frozen.started(tier="XLarge")
        await frozen.advance(10)
        await sim_client.post(f"/vm/{vm_id}/hibernate")
        await frozen.advance(3600)
        await frozen.start(vm_id)
        await frozen.advance(10)
        await sim_client.delete(f"/vm/{vm_id}")
        await frozen.advance(3600)
        vm = await frozen.vm(vm_id)
        assert [s["billed_minutes"] for s in vm["ledger"]["stretches"]] == [1, 1]
        assert vm["billed_minutes"] == 2
        # 2 minutes of XLarge at 320 credits/hour.
        assert vm["credits"] == "10.666667"

    async def test_an_open_stretch_is_billed_up_to_now(self, frozen: SimDriver) -> None:
        vm_id = await frozen.started(tier="Pico")
        await frozen.advance(125)
        (stretch,) = (await frozen.vm(vm_id))["ledger"]["stretches"]
        assert stretch["ended_at"] is None
        assert stretch["billed_minutes"] == 3
        assert stretch["credits"] == "0.250000"

    async def test_auto_hibernation_ends_the_stretch_at_the_deadline(
        self, frozen: SimDriver
    ) -> None:
        vm_id = await frozen.started(tier="Medium", hibernation_timeout_seconds=300)
        await frozen.advance(7200)
        (stretch,) = (await frozen.vm(vm_id))["ledger"]["stretches"]
        started = datetime.fromisoformat(stretch["started_at"])
        assert datetime.fromisoformat(stretch["ended_at"]) - started == timedelta(seconds=300)
        assert stretch["billed_minutes"] == 5
        assert stretch["credits"] == "6.666667"
