"""What a REST request to ARI costs on each of its two transports, side by side.

    python -m bench.ari_transport [--requests 4000] [--concurrency 20] [--rounds 2]

* **http**: phonemfa's own keep-alive HTTP pool (`phonemfa.ari.http`), what it uses.
* **websocket**: REST over the event websocket (Asterisk 20.14, 21.9, 22.4 and later): a
  `RESTRequest` message out, a `RESTResponse` event back, matched by `request_id`.

Every request asks Asterisk to dial a channel that does not exist: a 404 with a JSON body, so
Asterisk authorises, routes and looks up, and nothing else happens. `concurrency` tasks send
`requests` requests in all, on uvloop (phonemfa's loop). Printed: CPU per request of this
process and of the sandbox Asterisk, for each transport, `rounds` times in turn.

Measured 2026-11-26, six rounds (4000 and 8000 requests, 20 at once): http 47-79 µs here
and 36-58 µs in Asterisk; websocket 63-113 and 50-61. No gain that the noise does not cover,
and Asterisk runs the requests of one websocket one after another, in that websocket's thread
(res/ari/ari_websockets.c), where over HTTP each connection has its own thread.
phonemfa stays on HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench import procstat
from bench.sandbox import ARI_URL, ari_auth, sandbox_lock
from phonemfa.ari.http import HttpPool

TRANSPORTS = ("http", "websocket")
APP = "phonemfa-transport-bench"  # its own ARI app: nothing of phonemfa's sees its events
TIMEOUT = 10.0  # seconds for one answer; the whole run is bounded by requests x this

Request = Callable[[str, str], Awaitable[int]]  # (method, path without /ari/) -> status


async def _http() -> tuple[Request, Callable[[], Awaitable[None]]]:
    pool = HttpPool(f"{ARI_URL}/ari", {"Authorization": ari_auth()}, limit=64, timeout=TIMEOUT)

    async def request(method: str, path: str) -> int:
        status, body = await pool.request(method, "/" + path)
        if body:
            json.loads(body)  # as phonemfa's client reads every answer
        return status

    return request, pool.close


async def _websocket() -> tuple[Request, Callable[[], Awaitable[None]]]:
    session = aiohttp.ClientSession(headers={"Authorization": ari_auth()})
    ws = await session.ws_connect(
        f"{ARI_URL}/ari/events", params={"app": APP, "subscribeAll": "false"}, max_msg_size=0
    )
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
    ids = itertools.count()

    async def read() -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if data.get("type") == "RESTResponse":
                future = waiting.pop(data.get("request_id", ""), None)
                if future is not None and not future.done():
                    future.set_result(data)
        for future in waiting.values():  # the socket closed under them
            if not future.done():
                future.set_exception(ConnectionError("ARI websocket closed"))

    reader = asyncio.create_task(read())

    async def request(method: str, path: str) -> int:
        request_id = str(next(ids))
        future = asyncio.get_running_loop().create_future()
        waiting[request_id] = future
        message = {"type": "RESTRequest", "request_id": request_id, "method": method, "uri": path}
        await ws.send_str(json.dumps(message, separators=(",", ":")))
        async with asyncio.timeout(TIMEOUT):
            answer = await future
        if answer.get("message_body"):
            json.loads(answer["message_body"])
        return int(answer["status_code"])

    async def close() -> None:
        await ws.close()
        reader.cancel()
        await session.close()

    return request, close


async def measure(transport: str, requests: int, concurrency: int) -> dict[str, float]:
    """One transport: a warm-up of `requests`, then `requests` measured. CPU per request
    (µs) of this process and of Asterisk."""
    request, close = await (_http() if transport == "http" else _websocket())
    asterisk = procstat.asterisk_pid()
    each = max(1, requests // concurrency)

    async def worker(k: int) -> None:
        for i in range(each):
            status = await request("POST", f"channels/no-such-{k}-{i}/dial?timeout=5")
            if status != 404:
                raise RuntimeError(f"{transport}: dialling a missing channel answered {status}")

    try:
        await asyncio.gather(*(worker(k) for k in range(concurrency)))  # connections, caches
        ours, theirs = time.process_time(), procstat.sample(asterisk).cpu
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        ours, theirs = time.process_time() - ours, procstat.sample(asterisk).cpu - theirs
    finally:
        await close()
    n = each * concurrency
    return {"requests": n, "ours_us": ours / n * 1e6, "asterisk_us": theirs / n * 1e6}


async def run(requests: int, concurrency: int, rounds: int) -> list[tuple[str, dict[str, float]]]:
    results = []
    for _ in range(rounds):
        for transport in TRANSPORTS:
            results.append((transport, await measure(transport, requests, concurrency)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lock-held", action="store_true", help="as python -m bench's")
    args = parser.parse_args()
    import uvloop

    with sandbox_lock(held=args.lock_held):
        results = uvloop.run(run(args.requests, args.concurrency, args.rounds))
    for transport, r in results:
        print(
            f"{transport:>9}: {r['ours_us']:5.0f} µs CPU per request here, "
            f"{r['asterisk_us']:5.0f} µs in Asterisk ({r['requests']:.0f} requests)"
        )


if __name__ == "__main__":
    main()
