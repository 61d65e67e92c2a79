"""A lean httpx transport: keep-alive HTTP/1.1 on asyncio streams, parsed by httptools.

httpx's default transport (httpcore over anyio and h11) spends several times the CPU per
request of this one. The upstream answers small JSON bodies from a handful of origins, so plain
HTTP/1.1 with a connection pool is all it needs; httpx above the transport still builds
requests, decodes content encodings and raises its own exceptions.

Invariants:

- At most ``max_connections`` exchanges are in flight at once, connecting included, and an
  exchange's slot is released however it ends.
- A connection returns to the idle pool only after a complete response whose server allowed
  keep-alive. Any error or cancellation during an exchange closes the connection.
- Idle connections are reused most recent first. One is discarded instead of reused when its
  peer has closed it or it has been idle longer than ``keepalive_expiry``. At most ``max_idle``
  are kept in all.
- A response body is read whole and bounded by ``max_response_bytes``.

Errors, by how far the exchange got (callers retry only the first group safely)::

    nothing can have reached the server
    ├── httpx.PoolTimeout          no free slot within the pool timeout
    ├── httpx.ConnectTimeout       connecting (TLS handshake included) outlived the connect timeout
    ├── httpx.ConnectError         refused, DNS, TLS verification: any OSError while connecting
    ├── httpx.UnsupportedProtocol  a scheme other than http or https
    └── httpx.LocalProtocolError   CR or LF in a header, which would split the request
    the request may have been applied
    ├── httpx.WriteTimeout         the request could not be written within the write timeout
    ├── httpx.WriteError           the connection failed while writing
    ├── httpx.ReadTimeout          no bytes arrived within the read timeout
    ├── httpx.ReadError            the connection failed while reading
    └── httpx.RemoteProtocolError  a malformed response, EOF before a complete one, or a body
                                   over max_response_bytes
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Final

import httptools
import httpx

__all__ = ["PooledTransport"]

_Origin = tuple[str, str, int]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_READ_SIZE: Final = 64 * 1024
# h11 allows 16 KiB for a response head; a head bigger than this is a broken or hostile peer.
_MAX_HEAD_BYTES: Final = 64 * 1024


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def is_stale(self, now: float, expiry: float | None) -> bool:
        # A FIN that arrived while idle has already been fed to the reader by the event loop,
        # so a server's idle timeout is seen here rather than as a failed request.
        return (
            self.reader.at_eof()
            or self.reader.exception() is not None
            or self.writer.transport.is_closing()
            or (expiry is not None and now - self.idle_since > expiry)
        )

    def close(self) -> None:
        self.writer.close()


class _Stop(Exception):
    """Raised from a parser callback to stop parsing at bytes that follow the response."""


class _Response:
    """httptools callbacks that collect one response."""

    __slots__ = (
        "body",
        "complete",
        "head_only",
        "headers",
        "headers_done",
        "http_version",
        "keep_alive",
        "parser",
        "reason",
        "size",
        "status",
    )

    def __init__(self, head_only: bool) -> None:
        self.head_only = head_only
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = b""
        self.http_version = b"HTTP/1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.complete:
                # Bytes after a complete response (a second message, or data after
                # "Connection: close"): the response stands but the connection is out of step.
                self.keep_alive = False
                return
            if isinstance(exc, httptools.HttpParserUpgrade):  # never asked for
                raise httpx.RemoteProtocolError("unexpected protocol upgrade") from exc
            raise httpx.RemoteProtocolError(f"malformed response: {exc}") from exc

    def end_of_stream(self) -> None:
        if self.headers_done and _delimited_by_eof(self.headers):
            self.complete = True
            self.keep_alive = False
            return
        what = "a complete response" if self.status else "a response"
        raise httpx.RemoteProtocolError(f"server disconnected without sending {what}")

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Stop

    def on_status(self, reason: bytes) -> None:
        # llhttp may hand over the reason phrase in pieces when it spans two reads.
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:  # a chunked body's trailers, which httpx drops too
            return
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.status = parser.get_status_code()
        self.headers_done = True
        # llhttp clears the flags this depends on once the message completes, so ask now.
        self.keep_alive = parser.should_keep_alive()
        version = parser.get_http_version()
        if version != "1.1":
            self.http_version = f"HTTP/{version}".encode("ascii")
        if self.head_only and not 100 <= self.status < 200:
            # llhttp cannot be told the request was HEAD; it would wait for Content-Length bytes.
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body.append(body)
            self.size += len(body)

    def on_message_complete(self) -> None:
        if self.complete:
            return
        if 100 <= self.status < 200:
            # An interim response (100 Continue, 103 Early Hints): the real one follows.
            self.reason = b""
            self.headers = []
            self.headers_done = False
            return
        self.complete = True


def _delimited_by_eof(headers: list[tuple[bytes, bytes]]) -> bool:
    # Looked for only when the connection ends early, not on every header of every response.
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            return False
        if lowered == b"transfer-encoding" and value.rstrip().lower().endswith(b"chunked"):
            return False
    return True


def _encode_head(request: httpx.Request) -> tuple[bytes, bool]:
    """The request line and headers, and whether the body must be sent chunked."""
    raw = request.headers.raw
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in raw:
        parts += (name, b": ", value, b"\r\n")
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            chunked = value.rstrip().lower().endswith(b"chunked")
    parts.append(b"\r\n")
    head = b"".join(parts)
    # httpx does not refuse CR or LF in header values (h11 does); one would split the request.
    lines = len(raw) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise httpx.LocalProtocolError("CR or LF in the request line or a header")
    return head, chunked


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PooledTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections pooled per origin. Use it as an httpx ``transport``."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_idle: int = 100,
        ssl_context: ssl.SSLContext | None = None,
        max_response_bytes: int = 16 * 1024 * 1024,
        keepalive_expiry: float | None = 5.0,
    ) -> None:
        if max_connections < 1 or max_idle < 0 or max_response_bytes < 0:
            raise ValueError(
                "max_connections must be positive, max_idle and max_response_bytes not negative"
            )
        self._max_idle = max_idle
        self._max_response_bytes = max_response_bytes
        # httpx's own default is 5 seconds too: a connection idle that long is likely to be
        # near the server's idle timeout, where reusing it races the server closing it.
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._idle_count = 0
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._send(request)
        except httpx.RequestError as exc:
            # httpx's client does the same; this serves callers of the transport itself.
            exc.request = request
            raise

    async def _send(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("PooledTransport is closed")
        url = request.url
        scheme = url.scheme
        default_port = _DEFAULT_PORTS.get(scheme)
        if default_port is None or not url.raw_host:
            raise httpx.UnsupportedProtocol(f"cannot send to {url!r}")
        origin = (scheme, url.raw_host.decode("ascii"), url.port or default_port)
        head, chunked = _encode_head(request)
        # Read before taking a slot, so that a slow upload source does not hold one.
        body = await request.aread()
        if chunked:
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        timeouts = request.extensions.get("timeout", {})

        await self._acquire(timeouts.get("pool"))
        try:
            connection = self._checkout(origin)
            if connection is None:
                connection = await self._connect(origin, timeouts.get("connect"))
            try:
                response, keep_alive = await self._exchange(
                    connection, request, head + body, timeouts
                )
            except BaseException:
                connection.close()
                raise
            if keep_alive:
                self._checkin(origin, connection)
            else:
                connection.close()
            return response
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        """Close every idle connection and refuse new requests (`RuntimeError`, as httpx's
        closed client does); connections in use close when their exchange ends."""
        self._closed = True
        idle, self._idle, self._idle_count = self._idle, {}, 0
        for connections in idle.values():
            for connection in connections:
                connection.close()

    async def _acquire(self, pool_timeout: float | None) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # returns without suspending
            return
        try:
            async with asyncio.timeout(pool_timeout):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no free connection slot") from exc

    def _checkout(self, origin: _Origin) -> _Connection | None:
        connections = self._idle.get(origin)
        if not connections:
            return None
        now = time.monotonic()
        while connections:
            connection = connections.pop()
            self._idle_count -= 1
            if not connection.is_stale(now, self._keepalive_expiry):
                return connection
            connection.close()
        return None

    def _checkin(self, origin: _Origin, connection: _Connection) -> None:
        if self._closed or self._max_idle == 0:
            connection.close()
            return
        now = time.monotonic()
        connection.idle_since = now
        connections = self._idle.setdefault(origin, deque())
        # LIFO reuse never reaches the bottom of a busy origin's stack, so drop its stale
        # connections here, oldest first, rather than let them hold idle places.
        while connections and connections[0].is_stale(now, self._keepalive_expiry):
            connections.popleft().close()
            self._idle_count -= 1
        if self._idle_count >= self._max_idle:
            if not connections:
                connection.close()
                return
            connections.popleft().close()
            self._idle_count -= 1
        connections.append(connection)
        self._idle_count += 1

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # Loading the trust store takes milliseconds: do it once, and only for https.
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    async def _connect(self, origin: _Origin, connect_timeout: float | None) -> _Connection:
        scheme, host, port = origin
        tls = self._tls() if scheme == "https" else None
        scope = asyncio.timeout(connect_timeout)
        try:
            async with scope:
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls is not None else None
                )
        except TimeoutError as exc:  # an OSError too, so it is told apart first
            if scope.expired():
                raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
            raise httpx.ConnectError(_describe(exc)) from exc
        except OSError as exc:  # refused, DNS (gaierror), TLS (SSLError) alike
            raise httpx.ConnectError(_describe(exc)) from exc
        return _Connection(reader, writer)

    async def _exchange(
        self,
        connection: _Connection,
        request: httpx.Request,
        data: bytes,
        timeouts: dict[str, float | None],
    ) -> tuple[httpx.Response, bool]:
        writer = connection.writer
        scope = asyncio.timeout(timeouts.get("write"))
        try:
            writer.write(data)
            # Usually the kernel took every byte at once and there is nothing to wait for; a
            # connection lost meanwhile shows up when reading.
            if writer.transport.get_write_buffer_size():
                async with scope:
                    await writer.drain()
        except TimeoutError as exc:
            if scope.expired():
                raise httpx.WriteTimeout("writing the request timed out") from exc
            raise httpx.WriteError(_describe(exc)) from exc
        except OSError as exc:
            raise httpx.WriteError(_describe(exc)) from exc

        response = _Response(head_only=request.method == "HEAD")
        reader = connection.reader
        read_timeout = timeouts.get("read")
        loop = asyncio.get_running_loop()
        received = 0
        scope = asyncio.timeout(read_timeout)
        try:
            async with scope:
                while not response.complete:
                    chunk = await reader.read(_READ_SIZE)
                    if not chunk:
                        response.end_of_stream()
                        break
                    received += len(chunk)
                    response.feed(chunk)
                    if response.size > self._max_response_bytes:
                        raise httpx.RemoteProtocolError(
                            f"response body over {self._max_response_bytes} bytes"
                        )
                    if not response.headers_done and received > _MAX_HEAD_BYTES:
                        raise httpx.RemoteProtocolError(
                            f"response head over {_MAX_HEAD_BYTES} bytes"
                        )
                    if read_timeout is not None and not response.complete:
                        # Like httpx's, the read timeout bounds each wait for bytes, not the whole.
                        scope.reschedule(loop.time() + read_timeout)
        except TimeoutError as exc:
            if scope.expired():
                raise httpx.ReadTimeout("timed out waiting for the response") from exc
            raise httpx.ReadError(_describe(exc)) from exc
        except OSError as exc:
            raise httpx.ReadError(_describe(exc)) from exc

        extensions = {"http_version": response.http_version}
        if response.reason:
            extensions["reason_phrase"] = response.reason
        return (
            httpx.Response(
                response.status,
                headers=response.headers,
                stream=httpx.ByteStream(b"".join(response.body)),
                request=request,
                extensions=extensions,
            ),
            response.keep_alive,
        )
