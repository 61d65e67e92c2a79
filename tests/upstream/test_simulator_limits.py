"""Concurrency and hourly limits: 429 bodies and the x-csb-* header families, and auth."""

from __future__ import annotations

import asyncio

import httpx

from tests.upstream.conftest import SIM_BASE_URL, SimDriver

FAMILIES = (
    "x-csb-sandbox-hourly-remaining",
    "x-csb-sandbox-hourly-used",
    "x-csb-sandbox-hourly-reset",
    "x-csb-rate-hourly-remaining",
    "x-csb-rate-hourly-used",
    "x-csb-rate-hourly-reset",
    "x-csb-vms-remaining",
    "x-csb-vms-used",
)


def assert_error_body(response: httpx.Response) -> None:
    body = response.json()
    assert body["success"] is False
    assert body["data"] is None
    assert body["errors"] and all(isinstance(e, str) for e in body["errors"])


class TestConcurrencyLimit:
    async def test_start_beyond_the_limit_is_429_with_vm_headers(self, drive: SimDriver) -> None:
        await drive.configure(concurrent_vm_limit=2)
        await drive.started()
        await drive.started()
        third = await drive.fork()
        response = await drive.start(third)
        assert response.status_code == 429
        assert_error_body(response)
        assert response.headers["x-csb-vms-remaining"] == "0"
        assert response.headers["x-csb-vms-used"] == "2"
        assert "x-csb-vms-reset" not in response.headers
        assert (await drive.vm(third))["state"] == "created"

    async def test_starting_an_already_running_vm_is_allowed_at_the_limit(
        self, drive: SimDriver
    ) -> None:
        await drive.configure(concurrent_vm_limit=1)
        vm_id = await drive.started()
        response = await drive.start(vm_id)
        assert response.status_code == 200
        assert response.json()["data"]["bootup_type"] == "RUNNING"

    async def test_a_refused_fork_with_start_options_leaves_no_sandbox(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(concurrent_vm_limit=0)
        response = await sim_client.post("/sandbox/pcz35m/fork", json={"start_options": {}})
        assert response.status_code == 429
        assert (await sim_client.get("/_simulator/vms")).json()["vms"] == []

    async def test_a_burst_of_30_starts_at_limit_10_admits_exactly_10(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_ids = [await drive.fork() for _ in range(30)]
        # Latency makes every request yield to the others before it reaches the state.
        await drive.configure(concurrent_vm_limit=10, latency_ms=5)
        responses = await asyncio.gather(*(drive.start(vm_id) for vm_id in vm_ids))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 10 + [429] * 20
        for refused in (r for r in responses if r.status_code == 429):
            assert_error_body(refused)
            assert refused.headers["x-csb-vms-remaining"] == "0"
            assert refused.headers["x-csb-vms-used"] == "10"
        running = (await sim_client.get("/vm/running")).json()["data"]
        assert running["concurrent_vm_count"] == 10
        assert running["concurrent_vm_limit"] == 10

    async def test_a_burst_of_forks_with_start_never_exceeds_the_limit(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(concurrent_vm_limit=5, latency_ms=2)
        responses = await asyncio.gather(
            *(
                sim_client.post("/sandbox/pcz35m/fork", json={"start_options": {}})
                for _ in range(40)
            )
        )
        assert sum(r.status_code == 201 for r in responses) == 5
        assert len((await sim_client.get("/_simulator/vms")).json()["vms"]) == 5


class TestHourlyLimits:
    async def test_request_limit_refuses_with_rate_headers_until_the_hour_turns(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(requests_hourly_limit=3)
        for _ in range(3):
            assert (await sim_client.get("/vm/running")).status_code == 200
        refused = await sim_client.get("/vm/running")
        assert refused.status_code == 429
        assert_error_body(refused)
        assert refused.headers["x-csb-rate-hourly-remaining"] == "0"
        assert refused.headers["x-csb-rate-hourly-used"] == "3"
        reset = int(refused.headers["x-csb-rate-hourly-reset"])
        assert reset % 3600 == 0
        await drive.advance(3600)
        assert (await sim_client.get("/vm/running")).status_code == 200

    async def test_sandbox_creation_limit_counts_forks_and_creates(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(sandboxes_hourly_limit=2)
        await drive.fork()
        created = await sim_client.post("/sandbox", json={"files": {}})
        assert created.headers["x-csb-sandbox-hourly-used"] == "2"
        refused = await sim_client.post("/sandbox/pcz35m/fork", json={})
        assert refused.status_code == 429
        assert_error_body(refused)
        assert refused.headers["x-csb-sandbox-hourly-remaining"] == "0"
        assert refused.headers["x-csb-sandbox-hourly-used"] == "2"
        # Other calls are not sandbox creations and still go through.
        assert (await sim_client.get("/sandbox")).status_code == 200


class TestHeadersAndAuth:
    async def test_every_upstream_answer_carries_all_three_header_families(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.started()
        for response in (
            await sim_client.get("/vm/running"),
            await sim_client.get("/sandbox/nosuch"),
            await sim_client.post(f"/vm/{vm_id}/hibernate"),
            await sim_client.get("/meta/info"),
        ):
            for header in FAMILIES:
                assert response.headers[header].isdigit(), (header, response.request.url)

    async def test_control_answers_carry_no_limit_headers(
        self, sim_client: httpx.AsyncClient
    ) -> None:
        response = await sim_client.get("/_simulator/config")
        assert "x-csb-vms-used" not in response.headers

    async def test_missing_or_wrong_key_is_401_with_errors(self, sim_app: object) -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=sim_app),  # type: ignore[arg-type]
            base_url=SIM_BASE_URL,
        ) as anonymous:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
                for method, path in (
                    ("POST", "/sandbox/pcz35m/fork"),
                    ("GET", "/vm/running"),
                    ("GET", "/meta/info"),
                ):
                    response = await anonymous.request(method, path, headers=headers)
                    assert response.status_code == 401
                    assert_error_body(response)
            # The control API needs no key.
            assert (await anonymous.get("/_simulator/vms")).status_code == 200

    async def test_meta_info_is_unwrapped_and_reports_the_limits(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(
            concurrent_vm_limit=4, requests_hourly_limit=500, sandboxes_hourly_limit=50
        )
        await drive.started()
        info = (await sim_client.get("/meta/info")).json()
        assert "success" not in info
        assert info["api"]["latest_version"] == "2023-07-01"
        limits = info["rate_limits"]
        assert limits["concurrent_vms"] == {"limit": 4, "remaining": 3}
        assert limits["sandboxes_hourly"]["limit"] == 50
        assert limits["sandboxes_hourly"]["remaining"] == 49
        assert limits["requests_hourly"]["limit"] == 500
        assert limits["requests_hourly"]["remaining"] == 500 - 3
        assert isinstance(limits["requests_hourly"]["reset"], int)
