"""Fault injection, latency, the control API's configuration, reset and request counters."""

from __future__ import annotations

import time

import httpx

from tests.upstream.conftest import SimDriver


async def vm_count(client: httpx.AsyncClient) -> int:
    return len((await client.get("/_simulator/vms")).json()["vms"])


class TestFaults:
    async def test_an_error_fault_answers_its_status_without_doing_the_work(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(faults={"fork": {"error_rate": 1.0, "status": 503}})
        response = await sim_client.post("/sandbox/pcz35m/fork", json={})
        assert response.status_code == 503
        assert isinstance(response.json()["errors"][0], str)
        assert await vm_count(sim_client) == 0
        assert (await sim_client.get("/_simulator/requests")).json()["fork"] == 1

    async def test_the_default_error_status_is_503(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork()
        await drive.configure(faults={"start": {"error_rate": 1.0}})
        assert (await drive.start(vm_id)).status_code == 503
        assert (await drive.vm(vm_id))["state"] == "created"

    async def test_a_timeout_fault_waits_then_answers_504_without_the_work(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork()
        await drive.configure(timeout_seconds=0.05, faults={"start": {"timeout_rate": 1.0}})
        started = time.perf_counter()
        response = await drive.start(vm_id)
        assert time.perf_counter() - started >= 0.05
        assert response.status_code == 504
        assert (await drive.vm(vm_id))["state"] == "created"

    async def test_a_lost_response_does_the_work_then_answers_502(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(faults={"fork": {"lose_response_rate": 1.0}})
        response = await sim_client.post(
            "/sandbox/pcz35m/fork", json={"tags": ["corral-op-42"], "start_options": {}}
        )
        assert response.status_code == 502
        assert isinstance(response.json()["errors"][0], str)
        vms = (await sim_client.get("/_simulator/vms")).json()["vms"]
        assert len(vms) == 1 and vms[0]["state"] == "running"
        found = (await sim_client.get("/sandbox", params={"tags": "corral-op-42"})).json()
        assert found["data"]["sandboxes"][0]["id"] == vms[0]["id"]

    async def test_faults_only_hit_their_operation(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(faults={"hibernate": {"error_rate": 1.0, "status": 500}})
        vm_id = await drive.started()
        assert (await sim_client.post(f"/vm/{vm_id}/hibernate")).status_code == 500
        assert (await sim_client.post(f"/vm/{vm_id}/shutdown")).status_code == 200

    async def test_a_seed_makes_the_fault_sequence_repeatable(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        async def statuses() -> list[int]:
            await sim_client.post("/_simulator/reset")
            await drive.configure(seed=7, faults={"get": {"error_rate": 0.5}})
            return [(await sim_client.get("/sandbox/pcz35m")).status_code for _ in range(40)]

        first = await statuses()
        assert set(first) == {200, 503}
        assert await statuses() == first

    async def test_latency_delays_every_upstream_call(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(latency_ms=60)
        started = time.perf_counter()
        await sim_client.get("/vm/running")
        assert time.perf_counter() - started >= 0.06


class TestControlConfig:
    async def test_partial_update_keeps_other_fields(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(concurrent_vm_limit=3)
        config = await drive.configure(latency_ms=1)
        assert config["concurrent_vm_limit"] == 3
        assert config["latency_ms"] == 1
        assert (await sim_client.get("/_simulator/config")).json() == config

    async def test_unknown_fields_and_operations_are_422(
        self, sim_client: httpx.AsyncClient
    ) -> None:
        for body in (
            {"bogus": 1},
            {"faults": {"teleport": {"error_rate": 1}}},
            {"faults": {"fork": {"error_rate": 2}}},
            {"faults": {"fork": {"eror_rate": 1}}},
            {"concurrent_vm_limit": -1},
        ):
            assert (await sim_client.put("/_simulator/config", json=body)).status_code == 422

    async def test_reset_forgets_vms_config_counters_and_clock(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(concurrent_vm_limit=3, faults={"get": {"error_rate": 1}})
        await drive.started()
        await drive.advance(1000)
        assert (await sim_client.post("/_simulator/reset")).status_code == 200
        assert await vm_count(sim_client) == 0
        config = (await sim_client.get("/_simulator/config")).json()
        assert config["concurrent_vm_limit"] == 10 and config["faults"] == {}
        assert set((await sim_client.get("/_simulator/requests")).json().values()) == {0}
        assert (await sim_client.get("/_simulator/clock")).json()["offset_seconds"] == 0
        assert (await sim_client.get("/sandbox/pcz35m")).status_code == 200

    async def test_request_counters_count_each_operation(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.started()
        await sim_client.put(f"/vm/{vm_id}/specs", json={"tier": "Small"})
        await sim_client.post(f"/vm/{vm_id}/update_specs", json={"tier": "Micro"})
        await sim_client.get(f"/sandbox/{vm_id}/tokens")
        counts = (await sim_client.get("/_simulator/requests")).json()
        assert (counts["fork"], counts["start"], counts["specs"], counts["tokens"]) == (1, 1, 2, 1)
        assert counts["delete"] == 0

    async def test_the_clock_can_be_frozen_and_only_moves_forward(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.freeze()
        first = (await sim_client.get("/_simulator/clock")).json()["now"]
        assert (await sim_client.get("/_simulator/clock")).json()["now"] == first
        advanced = await drive.advance(10)
        assert advanced["frozen"] is True and advanced["now"] > first
        refused = await sim_client.post("/_simulator/clock/advance", json={"seconds": -1})
        assert refused.status_code == 422
        unfrozen = (await sim_client.post("/_simulator/clock/unfreeze")).json()
        assert unfrozen["frozen"] is False and unfrozen["now"] >= advanced["now"]
