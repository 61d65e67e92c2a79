"""UpstreamClient requests and results, driven through httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from app.upstream.client import UpstreamClient, infer_base_url
from app.upstream.errors import UpstreamUnavailable
from app.upstream.schemas import AutomaticWakeupConfig, StartOptions

API_KEY = "csb_v1_super_secret_key"
BASE = "https://api.example.test"

START_DATA: dict[str, Any] = {
    "id": "abc123",
    "bootup_type": "FORK",
    "cluster": "fc-eu-3",
    "pitcher_url": "wss://abc123.pitcher.test",
    "pitcher_token": "pt_secret_token",
    "reconnect_token": None,
    "workspace_path": "/project/sandbox",
    "user_workspace_path": "/project/workspace",
    "pitcher_version": "0.310.2",
    "latest_pitcher_version": "0.310.2",
    "pitcher_manager_version": "1.47.0",
    "use_pint": False,
    "some_future_field": {"ignored": True},
}

SANDBOX_DATA: dict[str, Any] = {
    "id": "abc123",
    "title": None,
    "description": "d",
    "privacy": 2,
    "is_frozen": False,
    "tags": ["sdk", "corral"],
    "settings": {"use_pint": False},
    "created_at": "2025-01-02T03:04:05Z",
    "updated_at": "2025-01-02T03:04:06.5+00:00",
}

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records requests and answers from a fixed response."""

    def __init__(self, status: int = 200, body: Any = None, headers: dict[str, str] | None = None):
        self.requests: list[httpx.Request] = []
        self.status = status
        self.body = {"data": {}} if body is None else body
        self.headers = headers or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json=self.body, headers=self.headers)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def last_json(self) -> Any:
        return json.loads(self.last.content)


def make_client(handler: Handler, base_url: str = BASE, **kwargs: Any) -> UpstreamClient:
    return UpstreamClient(base_url, API_KEY, transport=httpx.MockTransport(handler), **kwargs)


class TestRequests:
    async def test_sends_bearer_key_and_corral_user_agent(self) -> None:
        rec = Recorder(body={"data": START_DATA})
        async with make_client(rec) as client:
            await client.start("abc123")
        assert rec.last.headers["authorization"] == f"Bearer {API_KEY}"
        assert rec.last.headers["user-agent"].startswith("corral/")

    async def test_base_url_path_prefix_is_kept(self) -> None:
        rec = Recorder(body={"data": START_DATA})
        async with make_client(rec, base_url="https://api.together.ai/csb/sdk") as client:
            await client.start("abc123")
        assert str(rec.last.url) == "https://api.together.ai/csb/sdk/vm/abc123/start"

    async def test_fork_sends_only_given_fields_and_encodes_alias(self) -> None:
        rec = Recorder(201, {"data": {"id": "new1", "alias": "new1", "title": "t"}})
        async with make_client(rec) as client:
            result = await client.fork(
                "ns@alias",
                title="t",
                privacy=2,
                private_preview=False,
                tags=("sdk",),
                start_options=StartOptions(tier="Nano"),
            )
        assert rec.last.method == "POST"
        assert rec.last.url.raw_path == b"/sandbox/ns%40alias/fork"
        assert rec.last_json() == {
            "title": "t",
            "privacy": 2,
            "private_preview": False,
            "tags": ["sdk"],
            "start_options": {"tier": "Nano"},
        }
        assert result.id == "new1"
        assert result.start_response is None

    async def test_fork_parses_start_response(self) -> None:
        data = {"id": "new1", "alias": "new1", "title": None, "start_response": START_DATA}
        async with make_client(Recorder(201, {"data": data})) as client:
            result = await client.fork("pcz35m")
        assert result.start_response is not None
        assert result.start_response.pitcher_token == "pt_secret_token"

    async def test_start_sends_empty_object_without_options(self) -> None:
        rec = Recorder(body={"data": START_DATA})
        async with make_client(rec) as client:
            result = await client.start("abc123")
        assert rec.last_json() == {}
        assert result.bootup_type == "FORK"
        assert result.reconnect_token is None

    async def test_start_options_are_serialised_without_nones(self) -> None:
        rec = Recorder(body={"data": START_DATA})
        options = StartOptions(
            hibernation_timeout_seconds=600,
            automatic_wakeup_config=AutomaticWakeupConfig(http=False),
        )
        async with make_client(rec) as client:
            await client.start("abc123", options)
        assert rec.last_json() == {
            "hibernation_timeout_seconds": 600,
            "automatic_wakeup_config": {"http": False},
        }

    @pytest.mark.parametrize("operation", ["hibernate", "shutdown"])
    async def test_hibernate_and_shutdown_send_no_body(self, operation: str) -> None:
        rec = Recorder()
        async with make_client(rec) as client:
            assert await getattr(client, operation)("abc123") is None
        assert rec.last.method == "POST"
        assert rec.last.url.path == f"/vm/abc123/{operation}"
        assert rec.last.content == b""

    async def test_delete(self) -> None:
        rec = Recorder()
        async with make_client(rec) as client:
            await client.delete("abc123")
        assert (rec.last.method, rec.last.url.path) == ("DELETE", "/vm/abc123")

    async def test_update_specs_puts_tier(self) -> None:
        rec = Recorder(body={"data": {"id": "abc123", "tier": "Small"}})
        async with make_client(rec) as client:
            result = await client.update_specs("abc123", "Small")
        assert (rec.last.method, rec.last.url.path) == ("PUT", "/vm/abc123/specs")
        assert rec.last_json() == {"tier": "Small"}
        assert result.tier == "Small"

    async def test_update_hibernation_timeout(self) -> None:
        rec = Recorder(body={"data": {"id": "abc123", "hibernation_timeout_seconds": 600}})
        async with make_client(rec) as client:
            result = await client.update_hibernation_timeout("abc123", 600)
        assert rec.last.url.path == "/vm/abc123/hibernation_timeout"
        assert rec.last_json() == {"hibernation_timeout_seconds": 600}
        assert result.hibernation_timeout_seconds == 600

    @pytest.mark.parametrize("seconds", [0, 86401])
    async def test_hibernation_timeout_out_of_range_is_refused_locally(self, seconds: int) -> None:
        rec = Recorder()
        async with make_client(rec) as client:
            with pytest.raises(ValueError):
                await client.update_hibernation_timeout("abc123", seconds)
        assert rec.requests == []

    async def test_create_session(self) -> None:
        data = {
            "username": "alice",
            "pitcher_token": "single_use_secret",
            "pitcher_url": "wss://x",
            "user_workspace_path": "/project/workspace",
            "capabilities": ["fs"],
            "permissions": {"write": False},
        }
        rec = Recorder(body={"data": data})
        async with make_client(rec) as client:
            result = await client.create_session("abc123", "alice", "read")
        assert rec.last.url.path == "/vm/abc123/sessions"
        assert rec.last_json() == {"session_id": "alice", "permission": "read"}
        assert result.username == "alice"
        assert "single_use_secret" not in repr(result)


class TestPathSafety:
    @pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "/"])
    async def test_unsafe_ids_are_refused_before_any_request(self, bad: str) -> None:
        rec = Recorder()
        async with make_client(rec) as client:
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: client.start(bad),
                lambda: client.fork(bad),
                lambda: client.delete(bad),
                lambda: client.get_sandbox(bad),
                lambda: client.update_preview_token("abc123", bad, None),
            ]
            for call in calls:
                with pytest.raises(ValueError):
                    await call()
        assert rec.requests == []

    async def test_reserved_characters_are_percent_encoded(self) -> None:
        rec = Recorder(body={"data": SANDBOX_DATA})
        async with make_client(rec) as client:
            await client.get_sandbox("a b?c#d%2F")
        assert rec.last.url.raw_path == b"/sandbox/a%20b%3Fc%23d%252F"


class TestReads:
    async def test_list_sandboxes_flattens_pagination_and_joins_tags(self) -> None:
        body = {
            "data": {
                "sandboxes": [SANDBOX_DATA],
                "pagination": {"total_records": 51, "current_page": 1, "next_page": 2},
            }
        }
        rec = Recorder(body=body)
        async with make_client(rec) as client:
            page = await client.list_sandboxes(tags=["a", "b"], status="running", page_size=10)
        assert dict(rec.last.url.params) == {
            "page": "1",
            "page_size": "10",
            "tags": "a,b",
            "status": "running",
        }
        assert (page.total_records, page.current_page, page.next_page) == (51, 1, 2)
        sandbox = page.sandboxes[0]
        assert sandbox.tags == ["sdk", "corral"]
        assert sandbox.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    async def test_get_sandbox(self) -> None:
        async with make_client(Recorder(body={"data": SANDBOX_DATA})) as client:
            sandbox = await client.get_sandbox("abc123")
        assert sandbox.privacy == 2
        assert sandbox.updated_at.tzinfo is not None

    async def test_running_vms_accepts_every_timestamp_shape(self) -> None:
        moment = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
        epoch = int(moment.timestamp())
        vms = [
            {"id": "iso", "last_active_at": "2025-06-01T14:00:00+02:00"},
            {"id": "s", "last_active_at": epoch, "session_started_at": str(epoch)},
            {"id": "ms", "last_active_at": epoch * 1000, "session_started_at": f"{epoch * 1000}"},
            {"id": "bare"},
            {"credit_basis": "10", "specs": {"cpu": 2, "memory": 4, "storage": 20}},
        ]
        body = {"data": {"concurrent_vm_count": 5, "concurrent_vm_limit": 10, "vms": vms}}
        async with make_client(Recorder(body=body)) as client:
            running = await client.running_vms()
        by_id = {vm.id: vm for vm in running.vms}
        assert by_id["iso"].last_active_at == moment
        assert by_id["s"].last_active_at == moment
        assert by_id["s"].session_started_at == moment
        assert by_id["ms"].last_active_at == moment
        assert by_id["ms"].session_started_at == moment
        assert by_id["bare"].last_active_at is None
        specs = by_id[None].specs
        assert specs is not None and specs.cpu == 2
        assert running.concurrent_vm_limit == 10

    async def test_meta_info_is_not_wrapped(self) -> None:
        body = {"api": {"name": "csb", "latest_version": "2023-07-01"}, "rate_limits": {}}
        async with make_client(Recorder(body=body)) as client:
            meta = await client.meta_info()
        assert meta.api["latest_version"] == "2023-07-01"
        assert meta.auth is None

    async def test_last_rate_limits_tracks_responses(self) -> None:
        headers = {"x-csb-rate-hourly-remaining": "99", "x-csb-rate-hourly-used": "1"}
        async with make_client(Recorder(body={"data": SANDBOX_DATA}, headers=headers)) as client:
            assert client.last_rate_limits is None
            await client.get_sandbox("abc123")
        assert client.last_rate_limits is not None
        assert client.last_rate_limits.rate_hourly is not None
        assert client.last_rate_limits.rate_hourly.limit == 100


class TestPreviewTokens:
    TOKEN = {
        "token_id": "prv_1",
        "token_prefix": "prv_v1_ab",
        "expires_at": None,
        "last_used_at": None,
    }

    async def test_create_sends_utc_expiry_and_hides_secret(self) -> None:
        data = {"sandbox_id": "abc123", "token": {**self.TOKEN, "token": "prv_v1_secret"}}
        rec = Recorder(201, {"data": data})
        expires = datetime(2025, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
        async with make_client(rec) as client:
            created = await client.create_preview_token("abc123", expires)
        assert rec.last_json() == {"expires_at": "2025-01-01T12:00:00Z"}
        assert created.token.token == "prv_v1_secret"
        assert "prv_v1_secret" not in repr(created)

    async def test_create_without_expiry_omits_the_field(self) -> None:
        data = {"sandbox_id": "abc123", "token": {**self.TOKEN, "token": "s"}}
        rec = Recorder(201, {"data": data})
        async with make_client(rec) as client:
            await client.create_preview_token("abc123", None)
        assert rec.last_json() == {}

    async def test_naive_expiry_is_refused(self) -> None:
        rec = Recorder()
        async with make_client(rec) as client:
            with pytest.raises(ValueError):
                await client.create_preview_token("abc123", datetime(2025, 1, 1))
        assert rec.requests == []

    async def test_list_update_and_revoke(self) -> None:
        listed = {"data": {"sandbox_id": "abc123", "tokens": [self.TOKEN]}}
        updated = {"data": {"sandbox_id": "abc123", "token": self.TOKEN}}
        answers = iter([(201, listed), (201, updated), (200, {"data": {}})])
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            status, body = next(answers)
            return httpx.Response(status, json=body)

        async with make_client(handler) as client:
            tokens = await client.list_preview_tokens("abc123")
            await client.update_preview_token("abc123", "prv_1", None)
            await client.revoke_preview_tokens("abc123")
        assert tokens.tokens[0].token_id == "prv_1"
        assert [(r.method, r.url.path) for r in seen] == [
            ("GET", "/sandbox/abc123/tokens"),
            ("PATCH", "/sandbox/abc123/tokens/prv_1"),
            ("DELETE", "/sandbox/abc123/tokens"),
        ]
        assert json.loads(seen[1].content) == {"expires_at": None}


class TestEnvelope:
    @pytest.mark.parametrize(
        "content",
        [b"", b"not json", b"[]", b'{"success": true}', b'{"data": null}', b'{"data": []}'],
    )
    async def test_2xx_without_usable_data_is_unavailable_and_maybe_applied(
        self, content: bytes
    ) -> None:
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            return httpx.Response(201, content=content)

        async with make_client(handler) as client:
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.fork("pcz35m")
        assert caught.value.maybe_applied is True
        assert caught.value.status == 201
        assert calls == 1

    async def test_invalid_data_error_does_not_echo_values(self) -> None:
        data = {**START_DATA, "pitcher_token": {"leaked": "s3cr3t-value"}}
        async with make_client(Recorder(body={"data": data}), max_attempts=1) as client:
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.start("abc123")
        assert "pitcher_token" in str(caught.value)
        assert "s3cr3t-value" not in str(caught.value)

    @pytest.mark.parametrize("operation", ["hibernate", "shutdown", "delete"])
    async def test_bodiless_operations_accept_any_2xx(self, operation: str) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(204)

        async with make_client(handler) as client:
            await getattr(client, operation)("abc123")


class TestConstruction:
    async def test_key_is_not_in_repr(self) -> None:
        async with make_client(Recorder()) as client:
            assert API_KEY not in repr(client)
            assert API_KEY not in repr(client._requester.http.headers)

    @pytest.mark.parametrize(
        ("kwargs", "base_url"),
        [({}, "ftp://x"), ({"max_attempts": 0}, BASE), ({"deadline": 0}, BASE)],
    )
    def test_bad_configuration_is_refused(self, kwargs: dict[str, Any], base_url: str) -> None:
        with pytest.raises(ValueError):
            UpstreamClient(base_url, API_KEY, **kwargs)

    def test_infer_base_url_follows_the_sdk(self) -> None:
        assert infer_base_url("csb_v1_x") == "https://api.codesandbox.io"
        assert infer_base_url("tgp_x") == "https://api.together.ai/csb/sdk"

    def test_start_options_refuse_unknown_and_out_of_range_fields(self) -> None:
        with pytest.raises(ValueError):
            StartOptions(tierr="Nano")  # type: ignore[call-arg]
        with pytest.raises(ValueError):
            StartOptions(hibernation_timeout_seconds=0)
        with pytest.raises(ValueError):
            StartOptions(ipcountry="nl")
