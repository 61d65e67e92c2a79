"""Retries, backoff, the per-call deadline and the attempt observer of UpstreamClient."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest

from app.upstream.client import UpstreamClient
from app.upstream.errors import (
    UpstreamBadRequest,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)

START_DATA = {
    "id": "abc123",
    "bootup_type": "RESUME",
    "pitcher_url": "wss://x",
    "pitcher_token": "t",
}

Step = httpx.Response | Exception


class Script:
    """Answers requests with a fixed sequence of responses or exceptions, repeating the last."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.count = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = self.steps[min(self.count, len(self.steps) - 1)]
        self.count += 1
        if isinstance(step, Exception):
            raise step
        return step


class FakeTime:
    """A clock that only moves when the client sleeps, so backoff never costs real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(
    handler: Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]],
    fake: FakeTime | None = None,
    **kwargs: Any,
) -> UpstreamClient:
    client = UpstreamClient(
        "https://api.example.test", "key", transport=httpx.MockTransport(handler), **kwargs
    )
    if fake is not None:
        client._requester.sleep = fake.sleep
        client._requester.clock = fake.clock
    return client


def unavailable() -> httpx.Response:
    return httpx.Response(503, json={"errors": ["The sandbox is currently overloaded"]})


def ok(data: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.Response(200, json={"data": data if data is not None else {}})


class TestRetried:
    async def test_start_retries_503_then_succeeds(self) -> None:
        script, fake = Script(unavailable(), unavailable(), ok(START_DATA)), FakeTime()
        async with make_client(script, fake) as client:
            result = await client.start("abc123")
        assert result.bootup_type == "RESUME"
        assert script.count == 3
        assert len(fake.sleeps) == 2

    @pytest.mark.parametrize("operation", ["hibernate", "shutdown"])
    async def test_hibernate_and_shutdown_retry_on_transport_errors(self, operation: str) -> None:
        script = Script(httpx.ReadError("reset"), httpx.ConnectError("refused"), ok())
        async with make_client(script, FakeTime()) as client:
            await getattr(client, operation)("abc123")
        assert script.count == 3

    async def test_gives_up_after_max_attempts(self) -> None:
        script, fake = Script(unavailable()), FakeTime()
        async with make_client(script, fake, max_attempts=4) as client:
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.hibernate("abc123")
        assert script.count == 4
        assert caught.value.status == 503

    async def test_backoff_is_exponential_capped_and_jittered(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        caps: list[float] = []

        def top_of_range(low: float, high: float) -> float:
            caps.append(high)
            return high

        monkeypatch.setattr("app.upstream.requester.random.uniform", top_of_range)
        fake = FakeTime()
        kwargs: dict[str, Any] = {
            "max_attempts": 6,
            "backoff_base": 0.5,
            "backoff_max": 3.0,
            "deadline": 100.0,
        }
        async with make_client(Script(unavailable()), fake, **kwargs) as client:
            with pytest.raises(UpstreamUnavailable):
                await client.start("abc123")
        # Full jitter draws from [0, cap]; with the draw pinned to the cap we see the caps.
        assert caps == [0.5, 1.0, 2.0, 3.0, 3.0]
        assert fake.sleeps == caps

    async def test_jittered_delays_stay_within_the_cap(self) -> None:
        fake = FakeTime()
        kwargs: dict[str, Any] = {"max_attempts": 5, "backoff_base": 0.1, "backoff_max": 0.3}
        async with make_client(Script(unavailable()), fake, **kwargs) as client:
            with pytest.raises(UpstreamUnavailable):
                await client.start("abc123")
        caps = [0.1, 0.2, 0.3, 0.3]
        assert all(0 <= d <= cap for d, cap in zip(fake.sleeps, caps, strict=True))

    async def test_retry_after_is_honoured_as_a_minimum_delay(self) -> None:
        response = httpx.Response(503, headers={"Retry-After": "2"})
        fake = FakeTime()
        async with make_client(Script(response, ok(START_DATA)), fake, deadline=10.0) as client:
            await client.start("abc123")
        assert fake.sleeps == [2.0]

    async def test_maybe_applied_sticks_once_any_attempt_may_have_acted(self) -> None:
        script = Script(httpx.ReadTimeout("slow"), unavailable())
        async with make_client(script, FakeTime(), max_attempts=2) as client:
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.shutdown("abc123")
        assert caught.value.status == 503
        assert caught.value.maybe_applied is True

    async def test_maybe_applied_is_false_when_no_attempt_got_through(self) -> None:
        script = Script(httpx.ConnectError("refused"), unavailable())
        async with make_client(script, FakeTime(), max_attempts=2) as client:
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.start("abc123")
        assert caught.value.maybe_applied is False

    @pytest.mark.parametrize(
        ("status", "kind"),
        [(400, UpstreamBadRequest), (404, UpstreamNotFound), (429, UpstreamRateLimited)],
    )
    async def test_4xx_and_429_are_never_retried(self, status: int, kind: type[Exception]) -> None:
        script = Script(httpx.Response(status, json={}), ok(START_DATA))
        async with make_client(script, FakeTime()) as client:
            with pytest.raises(kind):
                await client.start("abc123")
        assert script.count == 1


class TestNotRetried:
    @pytest.mark.parametrize(
        "failure",
        [unavailable(), httpx.ReadTimeout("slow"), httpx.ConnectError("refused")],
        ids=["503", "read-timeout", "connect-error"],
    )
    async def test_fork_is_sent_exactly_once(self, failure: Step) -> None:
        script = Script(failure, httpx.Response(201, json={"data": {"id": "x"}}))
        async with make_client(script, FakeTime()) as client:
            with pytest.raises(UpstreamUnavailable):
                await client.fork("pcz35m")
        assert script.count == 1

    @pytest.mark.parametrize(
        ("method", "args"),
        [
            ("delete", ("abc123",)),
            ("update_specs", ("abc123", "Small")),
            ("update_hibernation_timeout", ("abc123", 60)),
            ("get_sandbox", ("abc123",)),
            ("running_vms", ()),
            ("create_session", ("abc123", "alice", "write")),
            ("list_preview_tokens", ("abc123",)),
        ],
    )
    async def test_other_operations_are_sent_once(self, method: str, args: tuple[Any, ...]) -> None:
        script = Script(unavailable())
        async with make_client(script, FakeTime()) as client:
            with pytest.raises(UpstreamUnavailable):
                await getattr(client, method)(*args)
        assert script.count == 1


class TestDeadline:
    async def test_no_sleep_may_outlive_the_deadline(self) -> None:
        # Each retry waits exactly 0.4 s (Retry-After), so a 1 s deadline fits three attempts.
        response = httpx.Response(503, headers={"Retry-After": "0.4"})
        script, fake = Script(response), FakeTime()
        kwargs: dict[str, Any] = {"deadline": 1.0, "max_attempts": 10, "backoff_base": 0.001}
        async with make_client(script, fake, **kwargs) as client:
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.start("abc123")
        assert script.count == 3
        assert fake.sleeps == [0.4, 0.4]
        # The last real answer is reported, not a synthetic timeout.
        assert caught.value.status == 503

    async def test_a_hanging_upstream_is_cut_off_at_the_deadline(self) -> None:
        async def hang(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(5)
            return ok()

        loop = asyncio.get_running_loop()
        started = loop.time()
        async with make_client(hang, timeout=1.0, deadline=0.05, max_attempts=3) as client:
            with pytest.raises(UpstreamTimeout) as caught:
                await client.hibernate("abc123")
        assert loop.time() - started < 1.0
        assert caught.value.maybe_applied is True
        assert caught.value.status is None

    async def test_per_attempt_timeout_then_retry_succeeds(self) -> None:
        calls = 0

        async def slow_then_fast(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            if calls == 1:
                await asyncio.sleep(5)
            return ok(START_DATA)

        kwargs: dict[str, Any] = {"timeout": 0.05, "deadline": 2.0, "backoff_base": 0.001}
        async with make_client(slow_then_fast, **kwargs) as client:
            result = await client.start("abc123")
        assert result.id == "abc123"
        assert calls == 2


class TestObserver:
    async def test_reports_every_attempt(self) -> None:
        seen: list[tuple[str, int | None, float]] = []
        script = Script(unavailable(), httpx.ConnectError("refused"), ok(START_DATA))

        def observe(operation: str, status: int | None, seconds: float) -> None:
            seen.append((operation, status, seconds))

        async with make_client(script, FakeTime(), observer=observe) as client:
            await client.start("abc123")
        assert [(op, status) for op, status, _ in seen] == [
            ("start", 503),
            ("start", None),
            ("start", 200),
        ]
        assert all(seconds >= 0 for _, _, seconds in seen)

    async def test_a_failing_observer_does_not_fail_the_call(self) -> None:
        def broken(operation: str, status: int | None, seconds: float) -> None:
            raise RuntimeError("metrics down")

        async with make_client(Script(ok(START_DATA)), observer=broken) as client:
            result = await client.start("abc123")
        assert result.id == "abc123"
