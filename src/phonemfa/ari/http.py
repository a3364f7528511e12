"""A small HTTP/1.1 client for ARI's REST calls: keep-alive connections, nothing else.

Every call phonemfa places makes half a dozen REST requests to Asterisk (create, dial, play,
stop, hang up...). Through aiohttp's ClientSession each costs about 300 µs of CPU (request
and response objects, URL parsing, tracing hooks, cookie and redirect handling) that ARI
never needs; measured with the bench, that was a third of phonemfa's CPU per call. Here a
request is one write of pre-built bytes on a kept-alive connection and a parse of the status
line, the headers we act on and the body: about a third of the cost.

What it does: HTTP and HTTPS, a pool of at most `limit` connections (callers wait for one),
Content-Length, chunked and read-until-close bodies, `Connection: close`, a total time-out
per request. A connection is never reused unless its last response was read in full; idle
ones are closed before the server's keep-alive time-out (Asterisk: http.conf
session_keep_alive, 15 s by default) could close them under a request. A request is never
retried: a create or dial sent twice is not the same as once.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

# Below Asterisk's default session_keep_alive (15 s): we close idle connections first.
IDLE_TIMEOUT = 10.0
_MAX_HEAD = 64 * 1024


class HttpProtocolError(ConnectionError):
    """The server sent something that is not an HTTP/1.1 response we can read."""


class _Response:
    """What we parse out of a response as it arrives."""

    __slots__ = ("status", "length", "chunked", "close", "body", "head_done", "until_close")

    def __init__(self) -> None:
        self.status = 0
        self.length = -1
        self.chunked = False
        self.close = False
        self.until_close = False
        self.head_done = False
        self.body = bytearray()


class _Connection(asyncio.Protocol):
    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.response: _Response | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False
        self.no_body = False  # the request was HEAD
        self.idle_since = 0.0

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (create_connection's); uvloop's is not an asyncio.Transport
        # subclass, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: this connection is not sane
            self.abort()
            return
        self.buffer += data
        try:
            self._parse()
        except HttpProtocolError as exc:
            self._fail(exc)
            self.abort()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None and response.until_close and response.head_done:
            response.body += self.buffer
            self._done(response)
        else:
            self._fail(exc or ConnectionResetError("the server closed the connection"))
        self.pool._lost(self)

    # --- requests ---
    def send(self, data: bytes, head_only: bool) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.response = _Response()
        self.no_body = head_only
        self.transport.write(data)
        return self.waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter, self.response = self.waiter, None, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _done(self, response: _Response) -> None:
        waiter, self.waiter, self.response = self.waiter, None, None
        if response.close:
            self.abort()
        if waiter is not None and not waiter.done():
            waiter.set_result((response.status, bytes(response.body)))

    def _parse(self) -> None:
        response = self.response
        if response is None:
            return
        buffer = self.buffer
        if not response.head_done:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    raise HttpProtocolError("response head too long")
                return
            self._head(response, bytes(buffer[:end]))
            del buffer[: end + 4]
        if response.chunked:
            if self._chunks(response):
                self._done(response)
        elif response.until_close:
            return  # connection_lost finishes it
        elif len(buffer) >= response.length:
            response.body = buffer[: response.length]
            del buffer[: response.length]
            self._done(response)

    def _head(self, response: _Response, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
            raise HttpProtocolError(f"bad status line {lines[0][:80]!r}")
        response.status = int(status[1])
        response.close = status[0] == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    response.length = int(value)
                except ValueError:
                    raise HttpProtocolError("bad Content-Length") from None
            elif name == b"transfer-encoding":
                response.chunked = b"chunked" in value.lower()
            elif name == b"connection":
                token = value.strip().lower()
                response.close = token == b"close" or (response.close and token != b"keep-alive")
        response.head_done = True
        if self.no_body or response.status in (204, 304) or 100 <= response.status < 200:
            response.length = 0
            response.chunked = False
        elif not response.chunked and response.length < 0:
            response.until_close = True
            response.close = True

    def _chunks(self, response: _Response) -> bool:
        """Move complete chunks from the buffer to the body; True once the last one came."""
        buffer = self.buffer
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                return False
            size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpProtocolError("bad chunk size") from None
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", end)
                if trailer_end == end:  # no trailers: "0\r\n\r\n"
                    del buffer[: end + 4]
                    return True
                if trailer_end < 0:
                    return False
                del buffer[: trailer_end + 4]
                return True
            if len(buffer) < end + 2 + size + 2:
                return False
            response.body += buffer[end + 2 : end + 2 + size]
            del buffer[: end + 2 + size + 2]


class HttpPool:
    """Requests to one server (`base_url`: scheme://host[:port]) on up to `limit`
    keep-alive connections. `headers` go with every request."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        limit: int = 64,
        timeout: float = 10,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            self.ssl = ssl_context or ssl.create_default_context()
        self.prefix = url.path.rstrip("/")
        host = url.netloc.rpartition("@")[2]
        common = {"Host": host, "Accept": "application/json", **headers}
        self._common = "".join(f"{k}: {v}\r\n" for k, v in common.items()).encode("latin-1")
        self.limit = limit
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    async def request(
        self, method: str, target: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        """`target` is the path (after the base URL's) with its query string. Returns the
        status and the body. Raises OSError (ConnectionError: lost mid-request) or
        TimeoutError when there is no full answer within the time-out."""
        head = f"{method} {self.prefix}{target} HTTP/1.1\r\n".encode("latin-1") + self._common
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            data = head + body
        else:
            data = head + (b"Content-Length: 0\r\n\r\n" if method in ("POST", "PUT") else b"\r\n")
        async with asyncio.timeout(self.timeout):
            conn = await self._acquire()
            reusable = False
            try:
                result = await conn.send(data, method == "HEAD")
                reusable = not conn.closed
                return result
            finally:
                self._release(conn, reusable)

    async def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.abort()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("the pool is closed"))

    # --- the pool ---
    async def _acquire(self) -> _Connection:
        if self._closed:
            raise ConnectionError("the pool is closed")
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_TIMEOUT:
                return conn
            conn.abort()  # stale: the server may close it under our next request
        while self._open >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # we were handed a slot we will not use: pass it on
                raise
            if self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        self._open += 1
        try:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(
                lambda: _Connection(self),
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            )
        except BaseException:
            self._open -= 1
            self._wake()
            raise
        return conn

    def _release(self, conn: _Connection, reusable: bool) -> None:
        if reusable and not conn.closed and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        elif not conn.closed:
            conn.abort()  # mid-response (time-out, cancel): never reusable; _lost follows
        self._wake()

    def _lost(self, conn: _Connection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
