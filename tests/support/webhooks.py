"""A webhook receiver on loopback: what an identity system's callback URL would get."""

from __future__ import annotations

import asyncio

from aiohttp import web

from phonemfa.webhooks import DELIVERY_HEADER


class WebhookReceiver:
    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.changed = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        self.posts.append((dict(request.headers), await request.read()))
        self.changed.set()
        return web.Response(status=204)

    def for_call(self, call_id: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.posts if h.get(DELIVERY_HEADER) == call_id]

    async def wait_for(self, call_id: str, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while not self.for_call(call_id):
                self.changed.clear()
                await self.changed.wait()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
