"""Raw ARI for the tests of the sandbox itself: aiohttp, one websocket, no phonemfa code.

The simulated network is proven with this, independently of `phonemfa.ari`, so a bug in our
client cannot hide a bug in the sandbox (or the reverse).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

Event = dict[str, Any]


class RawAri:
    def __init__(self, session: aiohttp.ClientSession, base: str, app: str) -> None:
        self.session = session
        self.base = base.rstrip("/") + "/ari"
        self.app = app
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self.created: list[str] = []

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            async with self._changed:
                self.events.append(json.loads(msg.data))
                self._changed.notify_all()

    async def connect(self) -> None:
        ws = await self.session.ws_connect(f"{self.base}/events", params={"app": self.app})
        self._reader = asyncio.create_task(self._read(ws))

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        async with self.session.request(method, self.base + path, **kw) as resp:
            body = await resp.text()
            if resp.status >= 300:
                raise AssertionError(f"{method} {path}: {resp.status} {body}")
            return json.loads(body) if body else None

    async def dial(
        self, number: str, timeout: int = 30, variables: dict[str, str] | None = None
    ) -> str:
        """Create a channel on the trunk to `number` and dial it; returns its id."""
        cid = str(uuid.uuid4())
        self.created.append(cid)
        await self.request(
            "POST",
            "/channels/create",
            json={
                "endpoint": f"PJSIP/{number}@trunk",
                "app": self.app,
                "channelId": cid,
                "variables": variables or {},
            },
        )
        await self.wait_for("StasisStart", cid)
        await self.request("POST", f"/channels/{cid}/dial", params={"timeout": timeout})
        return cid

    async def wait_for(
        self,
        event_type: str,
        channel_id: str | None = None,
        where: Callable[[Event], bool] = lambda e: True,
        timeout: float = 15,
    ) -> Event:
        """The first event (already seen or coming) of that type for that channel."""

        def match(e: Event) -> bool:
            return (
                e.get("type") == event_type
                and (channel_id is None or e.get("channel", {}).get("id") == channel_id)
                and where(e)
            )

        async with asyncio.timeout(timeout):
            async with self._changed:
                while True:
                    for e in self.events:
                        if match(e):
                            return e
                    await self._changed.wait()

    async def hangup(self, cid: str) -> None:
        with contextlib.suppress(AssertionError):  # already gone
            await self.request("DELETE", f"/channels/{cid}")

    async def enter_verify(self, number: str, app: str, user: str) -> None:
        """A caller entering `Stasis(app,verify,number,user,default)` (extensions.conf's
        phonemfa-test-entry); the Local channel's other half waits in this client's app."""
        await self.request(
            "POST",
            "/channels",
            json={
                "endpoint": f"Local/{number}@phonemfa-test-entry",
                "app": self.app,
                "variables": {"__APP": app, "__VERIFY_USER": user},
            },
        )

    async def global_var(self, name: str) -> str:
        out = await self.request("GET", "/asterisk/variable", params={"variable": name})
        return str(out["value"])

    async def global_var_once_set(self, name: str, timeout: float) -> str:
        """The global variable's value as soon as it is not empty (TimeoutError after
        `timeout`)."""
        async with asyncio.timeout(timeout):
            while not (value := await self.global_var(name)):
                await asyncio.sleep(0.2)
        return value

    async def set_global_var(self, name: str, value: str) -> None:
        await self.request("POST", "/asterisk/variable", params={"variable": name, "value": value})

    async def live_channels(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/channels"))

    async def close(self) -> None:
        """Hang up what this client made and check that Asterisk let go of it."""
        for cid in self.created:
            await self.hangup(cid)
        async with asyncio.timeout(5):
            while {c["id"] for c in await self.live_channels()} & set(self.created):
                await asyncio.sleep(0.05)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


@contextlib.asynccontextmanager
async def raw_ari(url: str, user: str, password: str, app: str) -> AsyncIterator[RawAri]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as session:
        ari = RawAri(session, url, app)
        await ari.connect()
        try:
            yield ari
        finally:
            await ari.close()
