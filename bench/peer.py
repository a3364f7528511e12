"""The peer: the floor's flow (bench/baseline_flow.py) on aioari, the existing asyncio ARI
library (PyPI `aioari`, on aioswagger11; unmaintained since 2021).

It runs from a venv of its own, bench/.venv-peer (`make bench` makes it from
bench/requirements-peer.txt), so aioari is never one of phonemfa's dependencies. aioari 0.10.2
runs unchanged on Python 3.11 with aiohttp 3.14: no pin beyond its version, no shim.

Used the way aioari is meant to be used: `aioari.connect` (operations generated from ARI's
Swagger description), `client.on_channel_event` / `on_playback_event` listeners (aioari wraps
each event's objects in its model classes), and operations on the objects it returns
(`channel.dial()`, `channel.playWithId()`...). One listener per event type routes to the call
by channel id, as an application with many calls at once must (aioari scans every listener
for every event, so a listener per channel would cost O(calls) per event).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import uuid
from typing import Any

import aioari
from aiohttp import web_exceptions

from bench.baseline_flow import EVENT_FILTER, EVENTS, Call, verify_call
from bench.baseline_proto import main
from bench.plan import DTMF_GAP_MS, DTMF_MS, KINDS, CallResult, PlannedCall


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.url = args.ari_url.rstrip("/") + "/"
        self.user = args.ari_user
        self.app = args.app
        self.client: Any = None
        self.calls: dict[str, Call] = {}
        self.channels: dict[str, Any] = {}  # aioari's Channel objects, by id
        self.runner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.client = c = await aioari.connect(
            self.url, self.user, os.environ["BENCH_ARI_PASSWORD"]
        )
        for event_type in EVENTS:  # the types its event filter asks Asterisk for, below
            if event_type.startswith("Playback"):
                c.on_playback_event(event_type, self._playback_event)
            else:
                c.on_channel_event(event_type, self._channel_event)
        self.runner = asyncio.create_task(c.run(apps=self.app))
        async with asyncio.timeout(10):  # aioari has no "connected" signal: watch for it
            while not c.websockets:
                await asyncio.sleep(0.01)
        # The events the flow acts on only, as the floor and phonemfa ask. aioari's generated
        # `applications.filter` sends its body wrapped as {"filter": {...}}, which Asterisk
        # reads as an empty filter, so this one request goes through aioari's HTTP client.
        response = await c.swagger.http_client.request(
            "PUT", f"{self.url}ari/applications/{self.app}/eventFilter",
            data=json.dumps(EVENT_FILTER), headers={"Content-Type": "application/json"},
        )  # fmt: skip
        response.release()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.runner is not None:
            self.runner.cancel()

    def _channel_event(self, channel: Any, event: dict[str, Any]) -> None:
        if isinstance(channel, dict):  # events with two Channel fields (StasisStart) give both
            channel = channel.get("channel")
        call = self.calls.get(channel.id) if channel is not None else None
        if call is not None:
            call.apply(event)

    def _playback_event(self, playback: Any, event: dict[str, Any]) -> None:
        call = self.calls.get(playback.json.get("target_uri", "")[8:])
        if call is not None:
            call.apply(event)

    # --- Ops ---
    async def create(self, endpoint: str, channel_id: str) -> None:
        self.channels[channel_id] = await self.client.channels.create(
            endpoint=endpoint, app=self.app, channelId=channel_id
        )

    async def dial(self, channel_id: str) -> None:
        await self.channels[channel_id].dial(timeout=20)

    async def dtmf(self, channel_id: str, digits: str) -> None:
        await self.channels[channel_id].sendDTMF(dtmf=digits, duration=DTMF_MS, between=DTMF_GAP_MS)

    async def play(self, channel_id: str, playback_id: str, media: str) -> None:
        await self.channels[channel_id].playWithId(playbackId=playback_id, media=media)

    async def stop_playback(self, playback_id: str) -> None:
        with contextlib.suppress(web_exceptions.HTTPNotFound):
            await self.client.playbacks.stop(playbackId=playback_id)

    async def hangup(self, channel_id: str) -> None:
        with contextlib.suppress(web_exceptions.HTTPNotFound):
            await self.client.channels.hangup(channelId=channel_id)

    async def place(self, planned: PlannedCall, result: CallResult) -> None:
        channel_id = str(uuid.uuid4())
        call = self.calls[channel_id] = Call()
        try:
            await verify_call(self, call, KINDS[planned.kind], channel_id, result)
        finally:
            del self.calls[channel_id]
            self.channels.pop(channel_id, None)


if __name__ == "__main__":
    main(Peer)
