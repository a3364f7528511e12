"""The ARI REST client's own HTTP/1.1 (phonemfa.ari.http), against local servers on loopback:
an aiohttp application for the ordinary paths, a raw socket server for what a real server
may do at the edges (chunked bodies, closing, garbage, silence)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from phonemfa.ari.client import AriClient, AriNotFound, AriUnavailable
from phonemfa.ari.http import HttpPool, HttpProtocolError


@pytest.fixture
async def app_server() -> AsyncIterator[tuple[str, list[web.Request], set[int]]]:
    """An aiohttp server echoing what it got; the requests and the client ports it saw."""
    seen: list[web.Request] = []
    ports: set[int] = set()

    async def echo(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        assert request.transport is not None
        ports.add(request.transport.get_extra_info("peername")[1])
        body = await request.read()
        if request.path.endswith("/missing"):
            return web.json_response({"message": "Channel not found"}, status=404)
        if request.path.endswith("/empty"):
            return web.Response(status=204)
        if request.path.endswith("/slow"):
            await asyncio.sleep(1)
        if request.path.endswith("/stream"):
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for part in (b'{"parts":', b"[1,2,", b"3]}"):
                await resp.write(part)
            await resp.write_eof()
            return resp
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "body": body.decode(),
                "auth": request.headers.get("Authorization"),
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen, ports
    await runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(handler: Handler) -> tuple[str, asyncio.Server]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def test_requests_reuse_one_kept_alive_connection(app_server: tuple) -> None:
    url, seen, ports = app_server
    pool = HttpPool(url + "/ari", {"Authorization": "Basic eDp5"})
    for i in range(5):
        status, body = await pool.request("POST", f"/channels/c{i}/dial?timeout=20")
        assert status == 200
        got = json.loads(body)
        assert (got["path"], got["query"], got["auth"]) == (
            f"/ari/channels/c{i}/dial",
            "timeout=20",
            "Basic eDp5",
        )
    assert len(ports) == 1
    await pool.close()


async def test_bodies_204_and_errors(app_server: tuple) -> None:
    url, _, _ = app_server
    pool = HttpPool(url, {})
    status, body = await pool.request("POST", "/x", b'{"a":1}')
    assert status == 200 and json.loads(json.loads(body)["body"]) == {"a": 1}
    assert await pool.request("DELETE", "/empty") == (204, b"")
    status, body = await pool.request("GET", "/missing")
    assert status == 404 and json.loads(body)["message"] == "Channel not found"
    status, body = await pool.request("GET", "/stream")  # chunked
    assert status == 200 and json.loads(body) == {"parts": [1, 2, 3]}
    # ...and the connection is still good after all of those.
    assert (await pool.request("GET", "/again"))[0] == 200
    await pool.close()


async def test_at_most_limit_connections_at_once(app_server: tuple) -> None:
    url, _, ports = app_server
    pool = HttpPool(url, {}, limit=3)
    results = await asyncio.gather(*(pool.request("GET", f"/n{i}") for i in range(20)))
    assert all(status == 200 for status, _ in results)
    assert len(ports) <= 3
    await pool.close()


async def test_time_out_drops_the_connection_and_the_pool_goes_on(app_server: tuple) -> None:
    url, _, ports = app_server
    pool = HttpPool(url, {}, limit=1, timeout=0.2)
    with pytest.raises(TimeoutError):
        await pool.request("GET", "/slow")
    pool.timeout = 5
    assert (await pool.request("GET", "/fast"))[0] == 200
    assert len(ports) == 2  # the timed-out connection was not reused
    await pool.close()


async def test_cancelled_request_frees_its_slot(app_server: tuple) -> None:
    url, _, _ = app_server
    pool = HttpPool(url, {}, limit=1)
    slow = asyncio.create_task(pool.request("GET", "/slow"))
    await asyncio.sleep(0.1)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert (await asyncio.wait_for(pool.request("GET", "/fast"), 2))[0] == 200
    await pool.close()


async def test_server_closing_after_the_response_is_not_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    url, server = await raw_server(handler)
    pool = HttpPool(url, {})
    for _ in range(3):
        assert await pool.request("GET", "/") == (200, b"{}")
    assert connections == 3
    await pool.close()
    server.close()


async def test_body_until_close_and_a_connection_lost_mid_response() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request(reader)
        if b"/cut" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{partial")
        else:
            writer.write(b'HTTP/1.1 200 OK\r\n\r\n{"whole": true}')
        await writer.drain()
        writer.close()

    url, server = await raw_server(handler)
    pool = HttpPool(url, {})
    assert await pool.request("GET", "/") == (200, b'{"whole": true}')
    with pytest.raises(ConnectionError):
        await pool.request("GET", "/cut")
    await pool.close()
    server.close()


async def test_garbage_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    url, server = await raw_server(handler)
    pool = HttpPool(url, {})
    with pytest.raises(HttpProtocolError):
        await pool.request("GET", "/")
    await pool.close()
    server.close()


async def test_nobody_listening_is_an_os_error() -> None:
    url, server = await raw_server(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    pool = HttpPool(url, {})
    with pytest.raises(OSError):
        await pool.request("GET", "/")
    await pool.close()


async def test_ari_client_maps_statuses_and_failures(app_server: tuple) -> None:
    url, seen, _ = app_server
    client = AriClient(url, "user", "secret", "app")
    await client.play("chan-1", "pb-1", ["sound:phonemfa/en/greeting", "digits:5678"], lang="fr")
    query = seen[-1].query
    assert (seen[-1].path, query["media"], query["lang"]) == (
        "/ari/channels/chan-1/play/pb-1",
        "sound:phonemfa/en/greeting,digits:5678",
        "fr",
    )
    assert seen[-1].headers["Authorization"] == "Basic dXNlcjpzZWNyZXQ="
    with pytest.raises(AriNotFound):
        await client.request("GET", "/missing")
    assert await client.stop_playback("missing") is False  # 404: it had ended
    assert await client.stop_playback("pb-1") is True
    await client.close()
    closed = AriClient("http://127.0.0.1:9", "u", "p", "app")  # discard port: refused
    with pytest.raises(AriUnavailable):
        await closed.request("GET", "/asterisk/info")
    await closed.close()


async def test_create_channel_presents_the_caller_id_as_the_connected_line(
    app_server: tuple,
) -> None:
    """/channels/create has no callerId parameter (Asterisk ignores one): the caller id goes
    in as the variable chan_pjsip builds the INVITE's From from, in the same request."""
    url, seen, _ = app_server
    client = AriClient(url, "user", "secret", "app")

    async def created(**kw: Any) -> dict[str, Any]:
        echo: Any = await client.create_channel(
            "PJSIP/+14255550100@trunk", "chan-1", app_args="call,1", **kw
        )
        assert (echo["method"], echo["path"]) == ("POST", "/ari/channels/create")
        return dict(json.loads(echo["body"]))

    body = await created(variables={"TALK_DETECT(set)": ""}, caller_id="+14255550199")
    assert "callerId" not in body
    assert body == {
        "endpoint": "PJSIP/+14255550100@trunk",
        "app": "app",
        "channelId": "chan-1",
        "appArgs": "call,1",
        "variables": {"TALK_DETECT(set)": "", "CONNECTEDLINE(num,i)": "+14255550199"},
    }
    assert (await created(caller_id="+14255550199"))["variables"] == {
        "CONNECTEDLINE(num,i)": "+14255550199"
    }
    # No caller id (unset or empty): no variable, the endpoint's own identity.
    for unset in ({}, {"caller_id": None}, {"caller_id": ""}):
        assert "variables" not in await created(**unset)
    assert (await created(variables={"A": "1"}))["variables"] == {"A": "1"}
    assert len(seen) == 6  # one request per channel
    await client.close()


def test_the_pool_runs_on_uvloop() -> None:
    """`phonemfa serve` runs on uvloop, whose transports are not asyncio's classes: a kept-
    alive connection, a server that closes, and a refused one, on a uvloop loop."""
    uvloop = pytest.importorskip("uvloop")  # a dependency on Linux: skipped only elsewhere
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            head = await read_request(reader)
            last = head.startswith(b"GET /last ")
            close = b"Connection: close\r\n" if last else b""
            writer.write(b"HTTP/1.1 200 OK\r\n" + close + b"Content-Length: 2\r\n\r\n{}")
            await writer.drain()
            if last:
                writer.close()
                return

    async def main() -> None:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        url, server = await raw_server(handler)
        pool = HttpPool(url, {})
        for path in ("/a", "/b", "/last", "/again"):
            assert await pool.request("GET", path) == (200, b"{}")
        assert connections == 2  # one kept alive for three requests, then a new one
        await pool.close()
        server.close()
        refused = HttpPool("http://127.0.0.1:9", {})  # discard port: nobody listens
        with pytest.raises(OSError):
            await refused.request("GET", "/")
        await refused.close()

    uvloop.run(main())


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_https_with_a_kept_alive_connection_on_either_loop(tmp_path: Path, loop_name: str) -> None:
    """ARI over TLS (an `https://` ari.url), on asyncio's loop and on uvloop (serve's)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=asterisk.test", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))  # trusts this certificate only
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_tls)
        port = server.sockets[0].getsockname()[1]
        pool = HttpPool(f"https://127.0.0.1:{port}/ari", {}, ssl_context=client_tls)
        for path in ("/asterisk/info", "/channels"):
            assert await pool.request("GET", path) == (200, b"{}")
        assert connections == 1
        await pool.close()
        untrusting = HttpPool(f"https://127.0.0.1:{port}/ari", {})  # the system's CAs only
        with pytest.raises(ssl.SSLError):
            await untrusting.request("GET", "/asterisk/info")
        await untrusting.close()
        server.close()

    if loop_name == "uvloop":
        pytest.importorskip("uvloop").run(main())
    else:
        asyncio.run(main())
