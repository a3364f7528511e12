"""A TCP proxy between phonemfa and Asterisk's HTTP server, for fault injection.

phonemfa's `ari.url` points here; the test can then cut the ARI event websocket (as if the
network or Asterisk dropped it) without touching the REST connections, or blackhole it (no
bytes either way, so only the heartbeat can notice).
"""

from __future__ import annotations

import asyncio
import contextlib


class _Link:
    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        # Set when Asterisk answers 101 on this link: a pooled keep-alive connection that
        # served REST requests may carry the websocket later.
        self.websocket = False
        self.blocked = asyncio.Event()
        self.blocked.set()  # set = flowing
        self.tasks: list[asyncio.Task[None]] = []

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.transport.abort()  # RST, not a polite close: like a dropped link
        for task in self.tasks:
            task.cancel()


class AriProxy:
    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 8088) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.links: set[_Link] = set()
        self.websocket_connections = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self.links):
            link.close()

    def cut_websockets(self) -> int:
        """Drop every ARI event websocket now; returns how many were dropped."""
        dropped = [link for link in self.links if link.websocket]
        for link in dropped:
            link.close()
            self.links.discard(link)
        return len(dropped)

    def block_websockets(self) -> None:
        """Stop forwarding websocket bytes both ways (connections stay open)."""
        for link in self.links:
            if link.websocket:
                link.blocked.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.read(65536)
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self.links.add(link)
        up_writer.write(first)
        link.tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, link)),
            asyncio.create_task(self._pipe(up_reader, writer, link, from_asterisk=True)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        link.close()
        self.links.discard(link)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        from_asterisk: bool = False,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if from_asterisk and not link.websocket and data.startswith(b"HTTP/1.1 101"):
                    link.websocket = True
                    self.websocket_connections += 1
                await link.blocked.wait()
                writer.write(data)
                await writer.drain()
        link.close()
