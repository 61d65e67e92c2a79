"""How UpstreamClient maps upstream failures onto app.upstream.errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.upstream.client import UpstreamClient
from app.upstream.errors import (
    UpstreamBadRequest,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnauthorized,
    UpstreamUnavailable,
)

API_KEY = "csb_v1_super_secret_key"


def make_client(handler: Callable[[httpx.Request], httpx.Response]) -> UpstreamClient:
    return UpstreamClient(
        "https://api.example.test",
        API_KEY,
        transport=httpx.MockTransport(handler),
        max_attempts=1,
    )


def answer(status: int, **kwargs: Any) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, **kwargs)

    return handler


def fail_with(
    exc: Callable[[httpx.Request], Exception],
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc(request)

    return handler


class TestStatusMapping:
    @pytest.mark.parametrize(
        ("status", "kind"),
        [
            (400, UpstreamBadRequest),
            (409, UpstreamBadRequest),
            (422, UpstreamBadRequest),
            (401, UpstreamUnauthorized),
            (403, UpstreamUnauthorized),
            (404, UpstreamNotFound),
            (429, UpstreamRateLimited),
        ],
    )
    async def test_4xx_is_rejected(self, status: int, kind: type[UpstreamError]) -> None:
        async with make_client(answer(status, json={"errors": ["nope"]})) as client:
            with pytest.raises(kind) as caught:
                await client.get_sandbox("abc123")
        err = caught.value
        assert isinstance(err, UpstreamRejected)
        assert type(err) is kind
        assert (err.operation, err.status, err.messages) == ("get", status, ["nope"])

    @pytest.mark.parametrize(
        ("status", "maybe_applied"), [(500, True), (502, True), (503, False), (504, True)]
    )
    async def test_5xx_is_unavailable(self, status: int, maybe_applied: bool) -> None:
        async with make_client(answer(status, text="<html>Bad gateway</html>")) as client:
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.fork("pcz35m")
        assert type(caught.value) is UpstreamUnavailable
        assert caught.value.status == status
        assert caught.value.maybe_applied is maybe_applied
        assert caught.value.messages == ["<html>Bad gateway</html>"]

    async def test_503_retry_after_is_exposed(self) -> None:
        handler = answer(503, json={"errors": ["overloaded"]}, headers={"Retry-After": "7"})
        async with make_client(handler) as client:
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.get_sandbox("abc123")
        assert caught.value.retry_after == 7.0

    async def test_hibernate_of_a_stopped_vm_is_not_found(self) -> None:
        async with make_client(answer(404, json={"errors": ["VM not running"]})) as client:
            with pytest.raises(UpstreamNotFound):
                await client.hibernate("abc123")
            with pytest.raises(UpstreamNotFound):
                await client.shutdown("abc123")


class TestMessages:
    @pytest.mark.parametrize(
        ("kwargs", "messages"),
        [
            ({"json": {"errors": ["a", {"message": "b"}, {"code": 7}]}}, ["a", "b", '{"code": 7}']),
            ({"json": {"success": False, "errors": []}}, []),
            ({"json": {"error": {"errors": ["nested"]}}}, ["nested"]),
            ({"json": {"error": "flat"}}, ["flat"]),
            ({"json": {"message": "msg"}}, ["msg"]),
            ({"json": {"detail": "fastapi style"}}, ["fastapi style"]),
            ({"json": ["bare", "list"]}, ["bare", "list"]),
            ({"json": None}, []),
            ({"json": 42}, ["42"]),
            ({"text": "plain text\n"}, ["plain text"]),
            ({"content": b""}, []),
            ({"content": b"\xff\xfe"}, ["\ufffd\ufffd"]),
        ],
    )
    async def test_any_body_shape(self, kwargs: dict[str, Any], messages: list[str]) -> None:
        async with make_client(answer(400, **kwargs)) as client:
            with pytest.raises(UpstreamBadRequest) as caught:
                await client.get_sandbox("abc123")
        assert caught.value.messages == messages

    async def test_huge_bodies_are_clipped(self) -> None:
        async with make_client(answer(500, text="x" * 10_000)) as client:
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.get_sandbox("abc123")
        assert len(caught.value.messages[0]) <= 500


class TestRateLimited:
    async def test_429_without_errors_array_is_handled(self) -> None:
        async with make_client(answer(429, json={})) as client:
            with pytest.raises(UpstreamRateLimited) as caught:
                await client.start("abc123")
        err = caught.value
        assert err.messages == []
        assert err.retry_after is None
        assert err.limit_family is None
        assert err.rate_limits is None

    async def test_429_with_empty_body_is_handled(self) -> None:
        async with make_client(answer(429)) as client:
            with pytest.raises(UpstreamRateLimited):
                await client.fork("pcz35m")

    async def test_429_names_the_exhausted_family_and_its_reset(self) -> None:
        headers = {
            "x-csb-rate-hourly-remaining": "100",
            "x-csb-rate-hourly-used": "900",
            "x-csb-rate-hourly-reset": "3600",
            "x-csb-vms-remaining": "0",
            "x-csb-vms-used": "10",
            "x-csb-sandbox-hourly-remaining": "0",
            "x-csb-sandbox-hourly-used": "50",
            "x-csb-sandbox-hourly-reset": "30",
        }
        handler = answer(429, json={"errors": ["Too many"]}, headers=headers)
        async with make_client(handler) as client:
            with pytest.raises(UpstreamRateLimited) as caught:
                await client.fork("pcz35m")
        err = caught.value
        # The SDK checks sandbox-hourly first, so it is the family blamed when several are empty.
        assert err.limit_family == "sandbox_hourly"
        assert err.retry_after == 30.0
        assert err.messages == ["Too many"]
        assert err.rate_limits is not None
        assert err.rate_limits.vms is not None and err.rate_limits.vms.limit == 10
        assert err.rate_limits.sandbox_hourly is not None
        assert err.rate_limits.sandbox_hourly.reset == "30"

    async def test_retry_after_header_wins_over_reset(self) -> None:
        headers = {"retry-after": "5", "x-csb-vms-remaining": "0", "x-csb-vms-used": "10"}
        async with make_client(answer(429, headers=headers)) as client:
            with pytest.raises(UpstreamRateLimited) as caught:
                await client.start("abc123")
        assert caught.value.limit_family == "vms"
        assert caught.value.retry_after == 5.0


class TestTransportFailures:
    @pytest.mark.parametrize(
        ("exc", "kind", "maybe_applied"),
        [
            (lambda r: httpx.ConnectError("refused", request=r), UpstreamUnavailable, False),
            (lambda r: httpx.ConnectTimeout("slow", request=r), UpstreamTimeout, False),
            (lambda r: httpx.PoolTimeout("pool", request=r), UpstreamTimeout, False),
            (lambda r: httpx.ReadTimeout("read", request=r), UpstreamTimeout, True),
            (lambda r: httpx.WriteTimeout("write", request=r), UpstreamTimeout, True),
            (lambda r: httpx.ReadError("reset", request=r), UpstreamUnavailable, True),
            (lambda r: httpx.RemoteProtocolError("eof", request=r), UpstreamUnavailable, True),
            (lambda r: RuntimeError("app crashed"), UpstreamUnavailable, True),
            (lambda r: TimeoutError(), UpstreamUnavailable, True),
        ],
    )
    async def test_mapped_without_leaking_httpx(
        self,
        exc: Callable[[httpx.Request], Exception],
        kind: type[UpstreamUnavailable],
        maybe_applied: bool,
    ) -> None:
        async with make_client(fail_with(exc)) as client:
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.fork("pcz35m")
        err = caught.value
        assert type(err) is kind
        assert err.status is None
        assert err.maybe_applied is maybe_applied
        assert err.operation == "fork"
        assert err.messages
        assert API_KEY not in str(err) and API_KEY not in repr(err)
