"""PooledTransport over real loopback sockets.

A scripted server (`serve`) plays the upstream: each test's responder writes exact bytes, so
framing, connection reuse and every failure are deterministic. The server numbers its
connections, so reuse is visible from both sides.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.upstream.client import UpstreamClient
from app.upstream.schemas import StartOptions
from app.upstream.transport import PooledTransport
from tests import processes

# -- the scripted server -----------------------------------------------------------------------


@dataclass
class Received:
    """One request as the server read it off the wire."""

    connection: int
    head: bytes
    body: bytes = b""

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def path(self) -> str:
        return self.line.split(b" ")[1].decode()

    def header(self, name: str) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.decode().lower() == name.lower():
                return value.strip()
        return None


@dataclass
class Peer:
    """The server's end of one connection."""

    number: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, *parts: bytes) -> None:
        # One write per part, so that the client sees them in separate reads when it can.
        for part in parts:
            self.writer.write(part)
            await self.writer.drain()


Responder = Callable[[Received, Peer], Awaitable[bool]]
"""Answers one request; returns whether to keep the connection for another."""


@dataclass
class Server:
    respond: Responder
    url: str = ""
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    peak: int = 0
    closed_by_client: set[int] = field(default_factory=set)
    ended: set[int] = field(default_factory=set)
    errors: list[BaseException] = field(default_factory=list)
    peers: list[Peer] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    shutting_down: bool = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        peer = Peer(self.connections, reader, writer)
        self.peers.append(peer)
        self.open_now += 1
        self.peak = max(self.peak, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    if not self.shutting_down:
                        self.closed_by_client.add(peer.number)
                    return
                request = Received(peer.number, head)
                if request.header("transfer-encoding") == b"chunked":
                    request.body = await reader.readuntil(b"0\r\n\r\n")
                else:
                    request.body = await reader.readexactly(
                        int(request.header("content-length") or 0)
                    )
                self.received.append(request)
                self.arrived.set()
                if not await self.respond(request, peer):
                    return
        except Exception as exc:
            self.errors.append(exc)
        finally:
            self.open_now -= 1
            writer.close()
            with suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            self.ended.add(peer.number)

    async def until_ended(self, number: int) -> None:
        """Waits until the server has closed connection ``number`` and the client has seen it.

        Sleeping on a timer, at least once after the close, lets the event loop poll the
        client's socket: it runs I/O callbacks before the timers that came due.
        """
        async with asyncio.timeout(5):
            while True:
                await asyncio.sleep(0.005)
                if number in self.ended:
                    return


@asynccontextmanager
async def serve(respond: Responder, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(respond)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield server
    finally:
        listener.close()
        # Ending each connection from this side lets every handler finish on its own.
        server.shutting_down = True
        for peer in server.peers:
            peer.writer.close()
        for peer in server.peers:
            await server.until_ended(peer.number)
        await listener.wait_closed()
    assert server.errors == []


def response(body: bytes = b"", *headers: bytes, status: bytes = b"200 OK") -> bytes:
    lines = [b"HTTP/1.1 " + status, *headers, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def echo(request: Received, peer: Peer) -> bool:
    """Answers with the path and the connection number, keeping the connection."""
    body = json.dumps({"path": request.path, "connection": peer.number}).encode()
    await peer.send(response(body, b"Content-Type: application/json", b"X-Served: yes"))
    return True


@asynccontextmanager
async def client_for(server: Server, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    timeout = options.pop("timeout", httpx.Timeout(5.0))
    async with httpx.AsyncClient(
        transport=PooledTransport(**options), base_url=server.url, timeout=timeout
    ) as client:
        yield client


# -- reuse and framing ------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection() -> None:
    async with serve(echo) as server, client_for(server) as client:
        answers = [await client.get(f"/items/{n}") for n in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json() for a in answers] == [
        {"path": f"/items/{n}", "connection": 1} for n in range(3)
    ]
    assert all(a.headers["x-served"] == "yes" for a in answers)
    assert answers[0].reason_phrase == "OK"
    assert server.connections == 1


async def test_post_sends_headers_and_body_exactly() -> None:
    async def created(request: Received, peer: Peer) -> bool:
        await peer.send(response(b'{"made": true}', status=b"201 Created"))
        return True

    payload = {"tags": ["x", "ü"], "n": 1}
    async with serve(created) as server, client_for(server) as client:
        answer = await client.post("/things?x=1", json=payload, headers={"X-Trace": "abc"})

    assert (answer.status_code, answer.json()) == (201, {"made": True})
    [received] = server.received
    assert received.line == b"POST /things?x=1 HTTP/1.1"
    assert received.header("host") == server.url.removeprefix("http://").encode()
    assert received.header("x-trace") == b"abc"
    assert received.header("content-type") == b"application/json"
    assert received.header("content-length") == str(len(received.body)).encode()
    assert json.loads(received.body) == payload


async def test_streamed_upload_is_sent_chunked() -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b"world"

    async with serve(echo) as server, client_for(server) as client:
        answer = await client.post("/upload", content=parts())

    assert answer.status_code == 200
    [received] = server.received
    assert received.header("transfer-encoding") == b"chunked"
    assert received.body == b"b\r\nhello world\r\n0\r\n\r\n"


async def test_chunked_response_is_reassembled_and_keeps_the_connection() -> None:
    async def chunked(request: Received, peer: Peer) -> bool:
        if request.path == "/chunked":
            await peer.send(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b'5\r\n{"a":\r\n',
                b"7\r\n [1, 2]\r\n1\r\n}\r\n",
                b"0\r\nX-Trailer: t\r\n\r\n",
            )
            return True
        return await echo(request, peer)

    async with serve(chunked) as server, client_for(server) as client:
        first = await client.get("/chunked")
        second = await client.get("/after")

    assert first.json() == {"a": [1, 2]}
    assert "x-trailer" not in first.headers
    assert second.json() == {"path": "/after", "connection": 1}


async def test_gzip_body_is_decoded_by_the_client() -> None:
    payload = {"data": {"id": "abc123", "items": list(range(50))}}

    async def gzipped(request: Received, peer: Peer) -> bool:
        body = gzip.compress(json.dumps(payload).encode())
        await peer.send(response(body, b"Content-Encoding: gzip"))
        return True

    async with serve(gzipped) as server, client_for(server) as client:
        answer = await client.get("/")

    assert b"gzip" in (server.received[0].header("accept-encoding") or b"")
    assert answer.json() == payload


async def test_body_without_length_ends_at_close() -> None:
    async def until_close(request: Received, peer: Peer) -> bool:
        if request.path == "/eof":
            await peer.send(b"HTTP/1.1 200 OK\r\n\r\n", b"first half, ", b"second half")
            return False
        return await echo(request, peer)

    async with serve(until_close) as server, client_for(server) as client:
        first = await client.get("/eof")
        second = await client.get("/next")

    assert first.text == "first half, second half"
    assert second.json() == {"path": "/next", "connection": 2}


async def test_head_response_has_no_body_whatever_its_content_length() -> None:
    async def head_then_get(request: Received, peer: Peer) -> bool:
        if request.line.startswith(b"HEAD"):
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            return True
        return await echo(request, peer)

    async with serve(head_then_get) as server, client_for(server) as client:
        head = await client.head("/thing")
        after = await client.get("/after")

    assert (head.status_code, head.headers["content-length"], head.content) == (200, "5", b"")
    assert after.json() == {"path": "/after", "connection": 1}


async def test_no_content_response_has_no_body_and_keeps_the_connection() -> None:
    async def no_content(request: Received, peer: Peer) -> bool:
        if request.path == "/empty":
            await peer.send(b"HTTP/1.1 204 No Content\r\n\r\n")
            return True
        return await echo(request, peer)

    async with serve(no_content) as server, client_for(server) as client:
        empty = await client.delete("/empty")
        after = await client.get("/after")

    assert (empty.status_code, empty.content) == (204, b"")
    assert after.json() == {"path": "/after", "connection": 1}


async def test_interim_response_is_skipped() -> None:
    async def continue_first(request: Received, peer: Peer) -> bool:
        await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n", response(b"final"))
        return True

    async with serve(continue_first) as server, client_for(server) as client:
        answer = await client.post("/", content=b"x")

    assert (answer.status_code, answer.text) == (200, "final")


# -- when connections end ---------------------------------------------------------------------


async def test_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def answer_then_close(request: Received, peer: Peer) -> bool:
        await echo(request, peer)
        return False  # closes without having said "Connection: close"

    async with serve(answer_then_close) as server, client_for(server) as client:
        first = await client.get("/one")
        await server.until_ended(1)
        second = await client.get("/two")

    assert first.json() == {"path": "/one", "connection": 1}
    assert second.json() == {"path": "/two", "connection": 2}


async def test_connection_close_header_is_honoured() -> None:
    async def says_close(request: Received, peer: Peer) -> bool:
        body = json.dumps({"connection": peer.number}).encode()
        await peer.send(response(body, b"Connection: close"))
        return True  # but leaves the socket open: closing is the client's job

    async with serve(says_close) as server, client_for(server) as client:
        first = await client.get("/")
        await server.until_ended(1)
        second = await client.get("/")

    assert [first.json(), second.json()] == [{"connection": 1}, {"connection": 2}]
    assert 1 in server.closed_by_client


async def test_idle_connection_past_keepalive_expiry_is_not_reused() -> None:
    async with serve(echo) as server, client_for(server, keepalive_expiry=0.05) as client:
        first = await client.get("/one")
        await asyncio.sleep(0.1)
        second = await client.get("/two")
        await server.until_ended(1)

    assert [first.json()["connection"], second.json()["connection"]] == [1, 2]
    assert 1 in server.closed_by_client


async def test_closing_the_transport_closes_idle_connections_and_refuses_requests() -> None:
    async with serve(echo) as server:
        transport = PooledTransport()
        async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
            assert (await client.get("/")).status_code == 200
            await transport.aclose()
            await server.until_ended(1)
            with pytest.raises(RuntimeError, match="closed"):
                await client.get("/")

    assert server.closed_by_client == {1}


# -- failures ---------------------------------------------------------------------------------


async def test_disconnect_mid_response_raises_and_the_next_request_reconnects() -> None:
    async def cut_short(request: Received, peer: Peer) -> bool:
        if request.path == "/cut":
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"only ten b")
            return False
        return await echo(request, peer)

    async with serve(cut_short) as server, client_for(server) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.get("/cut")
        after = await client.get("/after")

    assert after.json() == {"path": "/after", "connection": 2}


async def test_malformed_response_raises_and_discards_the_connection() -> None:
    async def malformed(request: Received, peer: Peer) -> bool:
        if request.path == "/bad":
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n")
            return True  # the server would happily go on; the client must not
        return await echo(request, peer)

    async with serve(malformed) as server, client_for(server) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/bad")
        after = await client.get("/after")
        await server.until_ended(1)

    assert after.json() == {"path": "/after", "connection": 2}
    assert 1 in server.closed_by_client


@pytest.mark.parametrize(
    "extra",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo", b"junk\r\n"],
    ids=["unsolicited-response", "junk"],
)
async def test_bytes_after_a_response_discard_the_connection(extra: bytes) -> None:
    async def overflowing(request: Received, peer: Peer) -> bool:
        if request.path == "/over":
            await peer.send(response(b"one") + extra)  # one write: one read for the client
            return True
        return await echo(request, peer)

    async with serve(overflowing) as server, client_for(server) as client:
        first = await client.get("/over")
        after = await client.get("/after")
        await server.until_ended(1)

    assert (first.text, first.reason_phrase) == ("one", "OK")
    assert after.json() == {"path": "/after", "connection": 2}
    assert 1 in server.closed_by_client


async def test_body_over_max_response_bytes_is_refused() -> None:
    async def sized(request: Received, peer: Peer) -> bool:
        size = int(request.path.strip("/"))
        await peer.send(response(b"x" * size))
        return True

    async with serve(sized) as server, client_for(server, max_response_bytes=1000) as client:
        at_limit = await client.get("/1000")
        with pytest.raises(httpx.RemoteProtocolError, match="1000 bytes"):
            await client.get("/1001")
        await server.until_ended(1)

    assert len(at_limit.content) == 1000
    assert 1 in server.closed_by_client


async def test_connect_to_closed_port_raises_connect_error() -> None:
    port = processes.free_port()
    async with httpx.AsyncClient(transport=PooledTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


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


async def test_connect_beyond_the_connect_timeout_raises_connect_timeout() -> None:
    timeout = httpx.Timeout(5.0, connect=0.2)
    with unanswered_listener() as port:
        async with httpx.AsyncClient(transport=PooledTransport(), timeout=timeout) as client:
            with pytest.raises(httpx.ConnectTimeout):
                await client.get(f"http://127.0.0.1:{port}/")


async def silent(request: Received, peer: Peer) -> bool:
    """Never answers /hang, so the connection lasts until the client gives up on it."""
    if request.path == "/hang":
        return True
    return await echo(request, peer)


async def test_no_answer_within_the_read_timeout_raises_read_timeout() -> None:
    timeout = httpx.Timeout(5.0, read=0.1)
    async with serve(silent) as server, client_for(server, timeout=timeout) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/hang")
        await server.until_ended(1)

    assert 1 in server.closed_by_client


async def test_cancelled_request_releases_its_slot_and_discards_its_connection() -> None:
    # A leaked slot would make the second request wait for the pool and fail fast.
    timeout = httpx.Timeout(5.0, pool=1.0)
    async with (
        serve(silent) as server,
        client_for(server, max_connections=1, timeout=timeout) as client,
    ):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.get("/hang")
        after = await client.get("/after")
        await server.until_ended(1)

    assert after.json() == {"path": "/after", "connection": 2}
    assert 1 in server.closed_by_client


async def test_waiting_for_a_slot_beyond_the_pool_timeout_raises_pool_timeout() -> None:
    timeout = httpx.Timeout(5.0, pool=0.1)
    async with (
        serve(silent) as server,
        client_for(server, max_connections=1, timeout=timeout) as client,
    ):
        hanging = asyncio.create_task(client.get("/hang"))
        await server.arrived.wait()
        with pytest.raises(httpx.PoolTimeout):
            await client.get("/after")
        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging

    assert [r.path for r in server.received] == ["/hang"]


async def test_max_connections_caps_concurrent_exchanges() -> None:
    async def slow(request: Received, peer: Peer) -> bool:
        await asyncio.sleep(0.05)
        return await echo(request, peer)

    async with serve(slow) as server, client_for(server, max_connections=2) as client:
        answers = await asyncio.gather(*(client.get(f"/{n}") for n in range(6)))

    assert [a.json()["path"] for a in answers] == [f"/{n}" for n in range(6)]
    assert server.peak == 2
    assert server.connections == 2


async def test_header_with_a_line_break_is_refused_before_sending() -> None:
    async with serve(echo) as server, client_for(server) as client:
        with pytest.raises(httpx.LocalProtocolError):
            await client.get("/", headers={"X-Note": "a\r\nX-Injected: 1"})
        after = await client.get("/after")

    assert [r.path for r in server.received] == ["/after"]
    assert after.status_code == 200


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_origin_with_a_trusted_self_signed_certificate(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async with serve(echo, tls=server_tls) as server:
        async with client_for(server, ssl_context=trusting) as client:
            answers = [await client.get(f"/{n}") for n in range(2)]
        # The default trust store does not know the certificate.
        async with client_for(server) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get("/untrusted")

    assert [a.json() for a in answers] == [
        {"path": "/0", "connection": 1},
        {"path": "/1", "connection": 1},
    ]


# -- the real simulator -----------------------------------------------------------------------


async def test_upstream_client_forks_and_starts_on_the_simulator(tmp_path: Path) -> None:
    key = "transport-test-key"
    with processes.simulator(key, tmp_path) as simulator:
        async with UpstreamClient(simulator.url, key, transport=PooledTransport()) as upstream:
            forked = await upstream.fork("pcz35m", tags=["x"])
            started = await upstream.start(forked.id, StartOptions(tier="Pico"))
            running = await upstream.running_vms()

    assert forked.id
    assert started.id == forked.id
    assert started.pitcher_url
    assert forked.id in [vm.id for vm in running.vms]
