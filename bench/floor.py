"""The floor: the least any ARI application spends on the bench's calls, on bare aiohttp.

The flow of bench/baseline_flow.py with REST requests made directly on one aiohttp session and
one event websocket whose reader hands each event to its call's state: no models, no routing
layers, nothing to spare. Run by the bench as its own process (bench/baseline_proto.py):

    python -m bench.floor --scenario burst --app bench-floor --ari-url ... --ari-user ...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import uuid
from typing import Any

import aiohttp

from bench.baseline_flow import EVENT_FILTER, Call, verify_call
from bench.baseline_proto import main
from bench.plan import DTMF_GAP_MS, DTMF_MS, KINDS, CallResult, PlannedCall


class Floor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.base = args.ari_url.rstrip("/") + "/ari"
        self.app = args.app
        password = os.environ["BENCH_ARI_PASSWORD"]
        token = base64.b64encode(f"{args.ari_user}:{password}".encode()).decode()
        # The same pool size as phonemfa's ARI client.
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Basic {token}"},
            connector=aiohttp.TCPConnector(limit=64),
        )
        self.calls: dict[str, Call] = {}
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ws = await self.session.ws_connect(
            f"{self.base}/events", params={"app": self.app}, max_msg_size=0
        )
        self.reader = asyncio.create_task(self._read(ws))
        await self._request("PUT", f"/applications/{self.app}/eventFilter", body=EVENT_FILTER)

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        await self.session.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        calls = self.calls
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            channel = event.get("channel")
            if channel is not None:
                call = calls.get(channel["id"])
            else:  # playback events name their channel as "channel:<id>"
                call = calls.get((event.get("playback") or {}).get("target_uri", "")[8:])
            if call is not None:
                call.apply(event)

    async def _request(self, method: str, path: str, body: Any = None, **params: Any) -> None:
        async with self.session.request(method, self.base + path, params=params, json=body) as resp:
            answer = await resp.read()
            if resp.status >= 300 and not (method == "DELETE" and resp.status == 404):
                raise RuntimeError(f"{method} {path}: {resp.status} {answer[:200]!r}")

    # --- Ops ---
    async def create(self, endpoint: str, channel_id: str) -> None:
        await self._request(
            "POST", "/channels/create", endpoint=endpoint, app=self.app, channelId=channel_id
        )

    async def dial(self, channel_id: str) -> None:
        await self._request("POST", f"/channels/{channel_id}/dial", timeout=20)

    async def dtmf(self, channel_id: str, digits: str) -> None:
        await self._request(
            "POST", f"/channels/{channel_id}/dtmf", dtmf=digits, duration=DTMF_MS,
            between=DTMF_GAP_MS,
        )  # fmt: skip

    async def play(self, channel_id: str, playback_id: str, media: str) -> None:
        await self._request("POST", f"/channels/{channel_id}/play/{playback_id}", media=media)

    async def stop_playback(self, playback_id: str) -> None:
        await self._request("DELETE", f"/playbacks/{playback_id}")

    async def hangup(self, channel_id: str) -> None:
        await self._request("DELETE", f"/channels/{channel_id}")

    async def place(self, planned: PlannedCall, result: CallResult) -> None:
        channel_id = str(uuid.uuid4())
        call = self.calls[channel_id] = Call()
        try:
            await verify_call(self, call, KINDS[planned.kind], channel_id, result)
        finally:
            del self.calls[channel_id]


if __name__ == "__main__":
    main(Floor)
