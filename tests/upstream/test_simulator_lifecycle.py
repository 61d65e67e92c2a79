"""The simulator's state machine (CONTRACT §5): bootup types, 404s, auto-hibernation, wake-up."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from app.upstream.simulator import Simulator
from tests.upstream.conftest import SimDriver


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


class TestFork:
    async def test_fork_of_a_template_creates_a_sandbox_that_is_not_running(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        response = await sim_client.post(
            "/sandbox/pcz35m/fork", json={"title": "acc", "tags": ["sdk"], "privacy": 2}
        )
        assert response.status_code == 201
        data = response.json()["data"]
        assert data["start_response"] is None
        assert len(data["id"]) == 6 and data["id"].isalnum() and data["id"].islower()
        assert (await drive.vm(data["id"]))["state"] == "created"
        assert await drive.running_ids() == []

    async def test_fork_with_start_options_starts_right_away_as_fork(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        response = await sim_client.post(
            "/sandbox/7ngcrf/fork",
            json={"start_options": {"tier": "Small", "hibernation_timeout_seconds": 600}},
        )
        assert response.status_code == 201
        data = response.json()["data"]
        assert data["start_response"]["bootup_type"] == "FORK"
        vm = await drive.vm(data["id"])
        assert (vm["state"], vm["tier"], vm["hibernation_timeout_seconds"]) == (
            "running",
            "Small",
            600,
        )

    async def test_a_known_sandbox_can_be_forked_and_tags_are_not_inherited(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        source = await drive.fork(title="base", tags=["a"])
        child = await drive.fork(source)
        got = (await sim_client.get(f"/sandbox/{child}")).json()["data"]
        assert got["title"] == "base (forked)"
        assert got["tags"] == []

    async def test_unknown_source_is_404_with_errors(self, sim_client: httpx.AsyncClient) -> None:
        response = await sim_client.post("/sandbox/nosuch/fork", json={})
        assert response.status_code == 404
        assert isinstance(response.json()["errors"][0], str)

    async def test_a_configured_template_id_can_be_forked(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        await drive.configure(template_ids=["pcz35m", "pt_custom"])
        assert (await sim_client.post("/sandbox/pt_custom/fork", json={})).status_code == 201

    async def test_create_from_files_makes_a_sandbox_that_boots_clean(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        response = await sim_client.post(
            "/sandbox", json={"files": {"index.js": {"code": "1"}}, "title": "files"}
        )
        assert response.status_code == 201
        vm_id = response.json()["data"]["id"]
        assert (await drive.start(vm_id)).json()["data"]["bootup_type"] == "CLEAN"

    async def test_create_without_files_is_refused(self, sim_client: httpx.AsyncClient) -> None:
        response = await sim_client.post("/sandbox", json={"title": "x"})
        assert response.status_code == 422
        assert "files" in response.json()["errors"][0]


class TestStart:
    async def test_every_bootup_type(self, drive: SimDriver, sim_client: httpx.AsyncClient) -> None:
        vm_id = await drive.fork()
        bootups = [(await drive.start(vm_id)).json()["data"]["bootup_type"]]
        bootups.append((await drive.start(vm_id)).json()["data"]["bootup_type"])
        assert (await sim_client.post(f"/vm/{vm_id}/hibernate")).status_code == 200
        bootups.append((await drive.start(vm_id)).json()["data"]["bootup_type"])
        assert (await sim_client.post(f"/vm/{vm_id}/shutdown")).status_code == 200
        bootups.append((await drive.start(vm_id)).json()["data"]["bootup_type"])
        assert bootups == ["FORK", "RUNNING", "RESUME", "CLEAN"]

    async def test_each_start_mints_a_new_pitcher_token(self, drive: SimDriver) -> None:
        vm_id = await drive.started()
        first = (await drive.start(vm_id)).json()["data"]["pitcher_token"]
        second = (await drive.start(vm_id)).json()["data"]["pitcher_token"]
        assert first != second

    async def test_sdk_style_start_without_a_body(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork()
        response = await sim_client.post(f"/vm/{vm_id}/start")
        assert response.status_code == 200
        assert (await drive.vm(vm_id))["tier"] == "Nano"

    async def test_start_options_apply_to_a_stopped_vm_and_omitted_ones_persist(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.started(tier="Micro", hibernation_timeout_seconds=900)
        await sim_client.post(f"/vm/{vm_id}/hibernate")
        await drive.start(vm_id)
        vm = await drive.vm(vm_id)
        assert (vm["tier"], vm["hibernation_timeout_seconds"]) == ("Micro", 900)

    async def test_bad_start_options_are_422(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork()
        for body in (
            {"tier": "Huge"},
            {"hibernation_timeout_seconds": 0},
            {"hibernation_timeout_seconds": 86401},
            {"ipcountry": "nl"},
        ):
            response = await drive.start(vm_id, **body)
            assert response.status_code == 422, body
            assert all(isinstance(e, str) for e in response.json()["errors"])
        assert (await drive.vm(vm_id))["state"] == "created"

    async def test_malformed_json_is_400(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork()
        response = await sim_client.post(
            f"/vm/{vm_id}/start", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["success"] is False

    async def test_a_template_cannot_be_started(self, sim_client: httpx.AsyncClient) -> None:
        assert (await sim_client.post("/vm/pcz35m/start", json={})).status_code == 404


class TestStopping:
    async def test_hibernate_and_shutdown_of_a_stopped_vm_are_404(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork()
        for verb in ("hibernate", "shutdown"):
            response = await sim_client.post(f"/vm/{vm_id}/{verb}")
            assert response.status_code == 404
            assert isinstance(response.json()["errors"][0], str)
        await drive.start(vm_id)
        assert (await sim_client.post(f"/vm/{vm_id}/hibernate")).status_code == 200
        assert (await sim_client.post(f"/vm/{vm_id}/hibernate")).status_code == 404
        assert (await sim_client.post(f"/vm/{vm_id}/shutdown")).status_code == 404

    async def test_hibernate_answers_an_empty_data_object(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.started()
        body = (await sim_client.post(f"/vm/{vm_id}/hibernate")).json()
        assert body == {"success": True, "errors": [], "data": {}}

    async def test_delete_of_a_running_vm_stops_billing_and_everything_404s_after(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.started()
        assert (await sim_client.delete(f"/vm/{vm_id}")).status_code == 200
        vm = await drive.vm(vm_id)
        assert vm["state"] == "deleted"
        assert vm["ledger"]["stretches"][0]["ended_at"] is not None
        assert await drive.running_ids() == []
        for method, path in (
            ("GET", f"/sandbox/{vm_id}"),
            ("POST", f"/vm/{vm_id}/start"),
            ("DELETE", f"/vm/{vm_id}"),
            ("POST", f"/sandbox/{vm_id}/fork"),
            ("GET", f"/sandbox/{vm_id}/tokens"),
        ):
            assert (await sim_client.request(method, path)).status_code == 404, path


class TestSpecsAndTimeout:
    async def test_specs_change_a_running_vm_through_put_and_the_post_alias(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.started()
        response = await sim_client.put(f"/vm/{vm_id}/specs", json={"tier": "Medium"})
        assert response.status_code == 200
        assert response.json()["data"] == {"id": vm_id, "tier": "Medium"}
        response = await sim_client.post(f"/vm/{vm_id}/update_specs", json={"tier": "Large"})
        assert response.json()["data"]["tier"] == "Large"
        running = (await sim_client.get("/vm/running")).json()["data"]["vms"][0]
        assert running["credit_basis"] == "160"
        assert running["specs"] == {"cpu": 32, "memory": 64, "storage": 50}

    async def test_specs_of_a_stopped_vm_are_404_and_bad_tiers_422(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork()
        assert (await sim_client.put(f"/vm/{vm_id}/specs", json={"tier": "Small"})).status_code == (
            404
        )
        await drive.start(vm_id)
        assert (await sim_client.put(f"/vm/{vm_id}/specs", json={"tier": "Giant"})).status_code == (
            422
        )
        assert (await sim_client.put(f"/vm/{vm_id}/specs", json={})).status_code == 422

    async def test_hibernation_timeout_bounds(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.started()
        path = f"/vm/{vm_id}/hibernation_timeout"
        for good in (1, 86400):
            response = await sim_client.put(path, json={"hibernation_timeout_seconds": good})
            assert response.status_code == 200
            assert response.json()["data"] == {"id": vm_id, "hibernation_timeout_seconds": good}
        for bad in (0, 86401, -5, "soon"):
            response = await sim_client.put(path, json={"hibernation_timeout_seconds": bad})
            assert response.status_code == 422, bad
        assert (await sim_client.put(path, json={})).status_code == 422

    async def test_hibernation_timeout_of_a_stopped_vm_is_404(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork()
        response = await sim_client.put(
            f"/vm/{vm_id}/hibernation_timeout", json={"hibernation_timeout_seconds": 60}
        )
        assert response.status_code == 404


class TestAutoHibernation:
    async def test_idle_vm_hibernates_exactly_at_last_activity_plus_timeout(
        self, drive: SimDriver
    ) -> None:
        vm_id = await drive.started(hibernation_timeout_seconds=120)
        before = await drive.vm(vm_id)
        await drive.advance(119)
        assert (await drive.vm(vm_id))["state"] == "running"
        advanced = await drive.advance(2)
        assert advanced["hibernated"] == [vm_id]
        vm = await drive.vm(vm_id)
        expected = ts(before["last_active_at"]) + timedelta(seconds=120)
        assert vm["state"] == "hibernated"
        assert vm["state_cause"] == "auto_hibernate"
        assert ts(vm["state_changed_at"]) == expected
        assert ts(vm["ledger"]["stretches"][0]["ended_at"]) == expected
        assert await drive.running_ids() == []
        assert (await drive.start(vm_id)).json()["data"]["bootup_type"] == "RESUME"

    async def test_activity_postpones_hibernation(self, drive: SimDriver) -> None:
        vm_id = await drive.started(hibernation_timeout_seconds=100)
        await drive.advance(80)
        touched = await drive.client.post(f"/_simulator/vms/{vm_id}/touch")
        assert touched.status_code == 200
        await drive.advance(80)
        assert (await drive.vm(vm_id))["state"] == "running"
        session = {"session_id": "a", "permission": "read"}
        assert (await drive.client.post(f"/vm/{vm_id}/sessions", json=session)).status_code == 200
        await drive.advance(80)
        assert (await drive.vm(vm_id))["state"] == "running"
        await drive.advance(21)
        assert (await drive.vm(vm_id))["state"] == "hibernated"

    async def test_much_activity_still_hibernates_at_the_last_deadline(
        self, drive: SimDriver, sim: Simulator
    ) -> None:
        await drive.freeze()
        vm_id = await drive.started(hibernation_timeout_seconds=50)
        for _ in range(3000):
            sim.touch(vm_id)
            sim.clock.advance(0.01)
        last_active = ts((await drive.vm(vm_id))["last_active_at"])
        await drive.advance(50)
        vm = await drive.vm(vm_id)
        assert vm["state"] == "hibernated"
        assert ts(vm["state_changed_at"]) == last_active + timedelta(seconds=50)

    async def test_a_shorter_timeout_counts_from_the_update(self, drive: SimDriver) -> None:
        vm_id = await drive.started(hibernation_timeout_seconds=1000)
        await drive.advance(500)
        await drive.client.put(
            f"/vm/{vm_id}/hibernation_timeout", json={"hibernation_timeout_seconds": 60}
        )
        await drive.advance(59)
        assert (await drive.vm(vm_id))["state"] == "running"
        await drive.advance(2)
        assert (await drive.vm(vm_id))["state"] == "hibernated"

    async def test_hibernation_frees_a_slot_under_the_limit(self, drive: SimDriver) -> None:
        await drive.configure(concurrent_vm_limit=1)
        await drive.started(hibernation_timeout_seconds=10)
        second = await drive.fork()
        assert (await drive.start(second)).status_code == 429
        await drive.advance(11)
        assert (await drive.start(second)).status_code == 200


class TestWakeAndTouch:
    async def test_wake_resumes_a_hibernated_vm_when_http_wakeup_is_on(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.started()
        await sim_client.post(f"/vm/{vm_id}/hibernate")
        response = await sim_client.post(f"/_simulator/vms/{vm_id}/wake")
        assert response.status_code == 200
        assert response.json()["state"] == "running"
        assert response.json()["state_cause"] == "wake"
        assert await drive.running_ids() == [vm_id]
        assert len(response.json()["ledger"]["stretches"]) == 2

    async def test_wake_is_409_when_wakeup_is_off_or_the_vm_is_not_hibernated(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.started(automatic_wakeup_config={"http": False, "websocket": True})
        assert (await sim_client.post(f"/_simulator/vms/{vm_id}/wake")).status_code == 409
        await sim_client.post(f"/vm/{vm_id}/hibernate")
        assert (await sim_client.post(f"/_simulator/vms/{vm_id}/wake")).status_code == 409
        ws = await sim_client.post(f"/_simulator/vms/{vm_id}/wake", json={"via": "websocket"})
        assert ws.status_code == 200
        other = await drive.started()
        await sim_client.post(f"/vm/{other}/shutdown")
        assert (await sim_client.post(f"/_simulator/vms/{other}/wake")).status_code == 409
        assert (await sim_client.post("/_simulator/vms/zzzzzz/wake")).status_code == 404

    async def test_touch_of_a_stopped_vm_is_409(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork()
        assert (await sim_client.post(f"/_simulator/vms/{vm_id}/touch")).status_code == 409

    async def test_a_vm_started_outside_shows_up_running(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        response = await sim_client.post(
            "/_simulator/vms", json={"tier": "Micro", "tags": ["drift"], "title": "rogue"}
        )
        assert response.status_code == 201
        vm = response.json()
        assert (vm["state"], vm["tier"], vm["origin"]) == ("running", "Micro", "outside")
        assert await drive.running_ids() == [vm["id"]]
        listed = (await sim_client.get("/sandbox", params={"tags": "drift"})).json()["data"]
        assert [s["id"] for s in listed["sandboxes"]] == [vm["id"]]
        bad = await sim_client.post("/_simulator/vms", json={"tier": "Micro", "colour": "red"})
        assert bad.status_code == 422


class TestSessions:
    async def test_session_on_a_running_vm(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.started()
        body = {"session_id": "alice_1", "permission": "read"}
        first = await sim_client.post(f"/vm/{vm_id}/sessions", json=body)
        second = await sim_client.post(f"/vm/{vm_id}/sessions", json=body)
        assert first.status_code == 200
        data = first.json()["data"]
        assert data["username"] == "alice_1"
        assert data["pitcher_url"].startswith("wss://")
        assert data["permissions"] == {"read": True, "write": False}
        assert isinstance(data["capabilities"], list)
        assert data["pitcher_token"] != second.json()["data"]["pitcher_token"]

    async def test_session_on_a_stopped_vm_is_404(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.fork()
        response = await sim_client.post(
            f"/vm/{vm_id}/sessions", json={"session_id": "bob", "permission": "write"}
        )
        assert response.status_code == 404

    async def test_session_body_is_validated(
        self, drive: SimDriver, sim_client: httpx.AsyncClient
    ) -> None:
        vm_id = await drive.started()
        for body in (
            {"session_id": "bad id", "permission": "write"},
            {"session_id": "ok", "permission": "admin"},
            {"permission": "read"},
        ):
            assert (await sim_client.post(f"/vm/{vm_id}/sessions", json=body)).status_code == 422
