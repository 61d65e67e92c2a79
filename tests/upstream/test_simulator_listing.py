"""Reads: sandbox listing and pagination, get, /vm/running with staleness, preview tokens."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx

from app.upstream.simulator import Simulator
from tests.upstream.conftest import SimDriver


class TestListSandboxes:
    async def test_pagination_and_next_page(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        ids = [await drive.fork() for _ in range(5)]
        first = (await sim_client.get("/sandbox", params={"page_size": 2})).json()["data"]
        assert first["pagination"] == {"total_records": 5, "current_page": 1, "next_page": 2}
        last = (await sim_client.get("/sandbox", params={"page_size": 2, "page": 3})).json()
        assert last["data"]["pagination"]["next_page"] is None
        assert len(last["data"]["sandboxes"]) == 1
        seen = []
        for page in (1, 2, 3):
            body = (
                await sim_client.get(
                    "/sandbox",
                    params={"page_size": 2, "page": page, "order_by": "inserted_at"},
                )
            ).json()
            seen += [s["id"] for s in body["data"]["sandboxes"]]
        assert seen == list(reversed(ids))

    async def test_templates_are_not_listed_but_can_be_read(
        self, sim_client: httpx.AsyncClient
    ) -> None:
        listed = (await sim_client.get("/sandbox")).json()["data"]
        assert listed["sandboxes"] == []
        assert listed["pagination"]["total_records"] == 0
        template = (await sim_client.get("/sandbox/pcz35m")).json()["data"]
        assert template["id"] == "pcz35m"

    async def test_page_size_above_50_is_clamped(
        self, drive: SimDriver, sim_client: httpx.AsyncClient, sim: Simulator
    ) -> None:
        for _ in range(55):
            await drive.fork()
        body = (await sim_client.get("/sandbox", params={"page_size": 200})).json()["data"]
        assert len(body["sandboxes"]) == 50
        assert body["pagination"]["next_page"] == 2

    async def test_bad_query_values_are_422(self, sim_client: httpx.AsyncClient) -> None:
        for params in (
            {"page": 0},
            {"page_size": 0},
            {"page_size": "many"},
            {"order_by": "title"},
            {"direction": "up"},
            {"status": "hibernated"},
        ):
            response = await sim_client.get("/sandbox", params=params)
            assert response.status_code == 422, params
            assert isinstance(response.json()["errors"][0], str)

    async def test_tags_filter_requires_every_listed_tag(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        both = await drive.fork(tags=["corral", "corral-op-1"])
        await drive.fork(tags=["corral"])
        await drive.fork(tags=["other"])

        async def ids(tags: str) -> list[str]:
            body = (await sim_client.get("/sandbox", params={"tags": tags})).json()
            return [s["id"] for s in body["data"]["sandboxes"]]

        assert await ids("corral-op-1") == [both]
        assert await ids("corral,corral-op-1") == [both]
        assert len(await ids("corral")) == 2

    async def test_order_by_updated_at_follows_lifecycle_changes(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        older = await drive.fork()
        newer = await drive.fork()
        await drive.advance(5)
        await drive.start(older)
        body = (await sim_client.get("/sandbox", params={"direction": "desc"})).json()
        assert [s["id"] for s in body["data"]["sandboxes"]] == [older, newer]
        body = (await sim_client.get("/sandbox", params={"direction": "asc"})).json()
        assert [s["id"] for s in body["data"]["sandboxes"]] == [newer, older]

    async def test_status_running_lists_only_running_vms(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        running = await drive.started()
        await drive.fork()
        body = (await sim_client.get("/sandbox", params={"status": "running"})).json()
        assert [s["id"] for s in body["data"]["sandboxes"]] == [running]

    async def test_get_returns_the_sandbox_without_runtime_state(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork(title="t", description="d", privacy=1, tags=["x"])
        data = (await sim_client.get(f"/sandbox/{vm_id}")).json()["data"]
        assert data["title"] == "t" and data["description"] == "d"
        assert data["privacy"] == 1 and data["tags"] == ["x"]
        assert "state" not in data
        assert (await sim_client.get("/sandbox/zzzzzz")).status_code == 404


class TestRunning:
    async def test_running_rows_have_iso_timestamps_and_tier_specs(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.started(tier="Pico")
        data = (await sim_client.get("/vm/running")).json()["data"]
        assert data["concurrent_vm_count"] == 1
        row = data["vms"][0]
        assert row["id"] == vm_id
        assert row["credit_basis"] == "5"
        assert row["specs"] == {"cpu": 1, "memory": 2, "storage": 20}
        for field in ("last_active_at", "session_started_at"):
            assert row[field].endswith("Z")
            assert datetime.fromisoformat(row[field]).tzinfo is not None

    async def test_staleness_serves_a_snapshot_until_it_expires(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(running_staleness_seconds=30)
        assert await drive.running_ids() == []
        vm_id = await drive.started()
        assert await drive.running_ids() == []
        await drive.advance(29)
        assert await drive.running_ids() == []
        await drive.advance(1.5)
        assert await drive.running_ids() == [vm_id]

    async def test_running_is_fast_with_ten_thousand_vms(
        self, drive: SimDriver, sim: Simulator, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(concurrent_vm_limit=20_000)
        from app.upstream.simulator.schemas import OutsideVmRequest

        for _ in range(10_000):
            sim.start_outside(OutsideVmRequest())
        await sim_client.get("/vm/running")
        started = time.perf_counter()
        for _ in range(5):
            response = await sim_client.get("/vm/running")
        elapsed = (time.perf_counter() - started) / 5
        assert response.json()["data"]["concurrent_vm_count"] == 10_000
        assert elapsed < 0.25, elapsed


class TestPreviewTokens:
    async def test_create_list_update_and_revoke(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork()
        expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        created = await sim_client.post(f"/sandbox/{vm_id}/tokens", json={"expires_at": expires})
        assert created.status_code == 201
        token = created.json()["data"]["token"]
        assert token["token"].startswith("prv_v1_")
        assert token["token"].startswith(token["token_prefix"])
        assert token["token_id"].startswith("prv_")

        listed = await sim_client.get(f"/sandbox/{vm_id}/tokens")
        assert listed.status_code == 201
        assert [t["token_id"] for t in listed.json()["data"]["tokens"]] == [token["token_id"]]
        assert "token" not in listed.json()["data"]["tokens"][0]

        never = await sim_client.patch(
            f"/sandbox/{vm_id}/tokens/{token['token_id']}", json={"expires_at": None}
        )
        assert never.status_code == 201
        assert never.json()["data"]["token"]["expires_at"] is None

        revoked = await sim_client.delete(f"/sandbox/{vm_id}/tokens")
        assert revoked.status_code == 200 and revoked.json()["data"] == {}
        after = (await sim_client.get(f"/sandbox/{vm_id}/tokens")).json()["data"]["tokens"]
        assert after[0]["expires_at"] is not None

    async def test_unknown_token_or_sandbox_is_404(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork()
        missing = await sim_client.patch(f"/sandbox/{vm_id}/tokens/prv_x", json={})
        assert missing.status_code == 404
        assert (await sim_client.post("/sandbox/zzzzzz/tokens", json={})).status_code == 404

    async def test_clusters(self, sim_client: httpx.AsyncClient) -> None:
        clusters = (await sim_client.get("/vm/clusters")).json()["data"]["clusters"]
        assert clusters and {"host", "slug"} <= clusters[0].keys()
