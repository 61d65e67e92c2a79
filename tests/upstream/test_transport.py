"""The upstream client's transport (aiohttp under httpx) on real loopback sockets.

A scripted upstream (`serve`) reads each request off the wire and answers with exact bytes, or
with none: a refused port, a SYN never answered, silence, a clean close, a reset, a cut-short or
malformed answer. Each failure must come out as the `app.upstream.errors` class and
``maybe_applied`` it did before: nothing sent (refused, connect or pool timeout) is
``maybe_applied=False``; anything after the request may have been sent is ``True``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from httpx_aiohttp import AiohttpTransport

from app.upstream.client import UpstreamClient
from app.upstream.errors import UpstreamTimeout, UpstreamUnavailable
from app.upstream.schemas import StartOptions
from tests import processes

KEY = "transport-test-key"

Answer = Callable[[asyncio.StreamWriter], Awaitable[bool]]
"""Writes (or withholds) the answer to one request; returns whether to keep the connection."""


@dataclass
class Upstream:
    answer: Answer
    url: str = ""
    request_lines: list[bytes] = field(default_factory=list)
    connections: int = 0
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                await reader.readexactly(_content_length(head))
                async with self.arrived:
                    self.request_lines.append(head.split(b"\r\n", 1)[0])
                    self.arrived.notify_all()
                if not await self.answer(writer):
                    return
        finally:
            writer.close()

    async def until_received(self, count: int) -> None:
        async with asyncio.timeout(30), self.arrived:
            await self.arrived.wait_for(lambda: len(self.request_lines) >= count)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@asynccontextmanager
async def serve(answer: Answer) -> AsyncIterator[Upstream]:
    upstream = Upstream(answer)
    listener = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    try:
        yield upstream
    finally:
        listener.close()
        for writer in upstream.writers:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()
        await listener.wait_closed()


def answer_bytes(body: bytes, *, status: bytes = b"200 OK", length: int | None = None) -> bytes:
    declared = len(body) if length is None else length
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % declared + body
    )


FORKED = json.dumps({"success": True, "data": {"id": "vm1"}, "errors": []}).encode()


async def forked(writer: asyncio.StreamWriter) -> bool:
    writer.write(answer_bytes(FORKED))
    await writer.drain()
    return True


async def silence(writer: asyncio.StreamWriter) -> bool:
    """Keeps the connection and never answers, as an upstream that hangs after reading."""
    return True


async def close(writer: asyncio.StreamWriter) -> bool:
    """Closes cleanly (FIN) after reading the request: the answer is lost."""
    return False


async def reset(writer: asyncio.StreamWriter) -> bool:
    """Resets the connection (RST) after reading the request."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return False


async def cut_short(writer: asyncio.StreamWriter) -> bool:
    """Promises more body than it sends, then closes."""
    writer.write(answer_bytes(FORKED[:10], length=len(FORKED)))
    await writer.drain()
    return False


async def malformed(writer: asyncio.StreamWriter) -> bool:
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    return False


def client(url: str, **options: Any) -> UpstreamClient:
    # One attempt, so that each test sees one classification and not a retry's.
    return UpstreamClient(url, KEY, max_attempts=1, **options)


async def failure_of(call: Callable[[UpstreamClient], Awaitable[object]], url: str) -> Exception:
    async with client(url, timeout=0.5) as upstream:
        with pytest.raises(UpstreamUnavailable) as caught:
            await call(upstream)
    return caught.value


def fork(upstream: UpstreamClient) -> Awaitable[object]:
    return upstream.fork("pcz35m")


@contextmanager
def unanswered_listener() -> Iterator[int]:
    """A port whose accept queue is full, so that a new connection's SYN is dropped."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(2)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            yield port
        finally:
            for filler in fillers:
                filler.close()


# -- wiring -----------------------------------------------------------------------------------


class TestWiring:
    async def test_calls_share_one_kept_alive_aiohttp_connection(self) -> None:
        async with serve(forked) as server, client(server.url) as upstream:
            answers = [await upstream.fork("pcz35m") for _ in range(3)]

        assert [a.id for a in answers] == ["vm1"] * 3
        assert server.connections == 1
        assert isinstance(upstream._requester.http._transport, AiohttpTransport)

    async def test_calls_go_through_a_proxy_the_environment_names(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        async with serve(forked) as proxy:
            for name in ("HTTP_PROXY", "http_proxy"):
                monkeypatch.setenv(name, proxy.url)
            async with client("http://upstream.test") as upstream:
                answer = await upstream.fork("pcz35m")

        assert answer.id == "vm1"
        # A proxied request names the whole URL, not just its path.
        assert proxy.request_lines == [b"POST http://upstream.test/sandbox/pcz35m/fork HTTP/1.1"]

    async def test_an_upstream_no_proxy_names_goes_direct(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async with serve(forked) as proxy, serve(forked) as server:
            for name in ("HTTP_PROXY", "http_proxy"):
                monkeypatch.setenv(name, proxy.url)
            for name in ("NO_PROXY", "no_proxy"):
                monkeypatch.setenv(name, "127.0.0.1")
            async with client(server.url) as upstream:
                await upstream.fork("pcz35m")

        assert proxy.request_lines == []
        assert server.request_lines == [b"POST /sandbox/pcz35m/fork HTTP/1.1"]

    async def test_upstream_client_forks_and_starts_on_the_simulator(self, tmp_path: Path) -> None:
        with processes.simulator(KEY, tmp_path) as simulator:
            async with UpstreamClient(simulator.url, KEY) as upstream:
                forked = await upstream.fork("pcz35m", tags=["x"])
                started = await upstream.start(forked.id, StartOptions(tier="Pico"))
                running = await upstream.running_vms()

        assert started.id == forked.id
        assert started.pitcher_url
        assert forked.id in [vm.id for vm in running.vms]


# -- nothing sent: maybe_applied=False --------------------------------------------------------


class TestNotSent:
    async def test_refused_connection(self) -> None:
        error = await failure_of(fork, f"http://127.0.0.1:{processes.free_port()}")

        assert type(error) is UpstreamUnavailable
        assert error.maybe_applied is False
        assert "ClientConnectorError" in str(error)

    async def test_connect_timeout(self) -> None:
        with unanswered_listener() as port:
            error = await failure_of(fork, f"http://127.0.0.1:{port}")

        assert type(error) is UpstreamTimeout
        assert error.maybe_applied is False

    async def test_waiting_for_a_free_connection_beyond_the_pool_timeout(self) -> None:
        # 100 calls hold every connection the pool allows; the 101st never gets one. The holders
        # must still be holding when the 100th connects, however loaded the machine: with a
        # 1 s timeout the first ones could give up before the last were sent.
        async with serve(silence) as server, client(server.url, timeout=5.0) as upstream:
            holding = [asyncio.create_task(upstream.fork("pcz35m")) for _ in range(100)]
            await server.until_received(100)
            with pytest.raises(UpstreamUnavailable) as caught:
                await upstream.fork("pcz35m")
            held = await asyncio.gather(*holding, return_exceptions=True)

        assert type(caught.value) is UpstreamTimeout
        assert caught.value.maybe_applied is False
        assert len(server.request_lines) == 100
        # The calls that held the connections were sent, then timed out: maybe applied.
        assert {(type(e), getattr(e, "maybe_applied", None)) for e in held} == {
            (UpstreamTimeout, True)
        }


# -- sent, then lost: maybe_applied=True ------------------------------------------------------


class TestMaybeApplied:
    async def test_no_answer_within_the_timeout(self) -> None:
        async with serve(silence) as server:
            error = await failure_of(fork, server.url)

        assert type(error) is UpstreamTimeout
        assert error.maybe_applied is True
        assert len(server.request_lines) == 1

    @pytest.mark.parametrize(
        ("answer", "shown"),
        [
            (close, "ServerDisconnectedError"),
            (reset, "Connection reset"),
            (cut_short, "ClientPayloadError"),
            (malformed, "ClientResponseError"),
        ],
    )
    async def test_connection_lost_or_garbled_after_sending(
        self, answer: Answer, shown: str
    ) -> None:
        async with serve(answer) as server:
            error = await failure_of(fork, server.url)

        assert type(error) is UpstreamUnavailable
        assert error.maybe_applied is True
        assert shown in str(error)
        # A fork is never resent: a second one could create a second sandbox.
        assert server.request_lines == [b"POST /sandbox/pcz35m/fork HTTP/1.1"]

    async def test_an_idempotent_call_is_resent_once_by_the_transport(self) -> None:
        async with serve(close) as server:
            error = await failure_of(lambda upstream: upstream.delete("vm1"), server.url)

        assert type(error) is UpstreamUnavailable
        assert error.maybe_applied is True
        # aiohttp retries GET, PUT and DELETE once on a dropped connection (RFC 9112 §9.3.1).
        assert server.request_lines == [b"DELETE /vm/vm1 HTTP/1.1"] * 2
