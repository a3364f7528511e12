"""The event websocket's reader: what Asterisk sends that is not an event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from phonemfa.ari import Event, EventRouter
from phonemfa.ari.events import EventStream


class _Message:
    def __init__(self, data: str) -> None:
        self.type = aiohttp.WSMsgType.TEXT
        self.data = data


class _Socket:
    def __init__(self, *texts: str) -> None:
        self.texts = texts

    async def __aiter__(self) -> AsyncIterator[_Message]:
        for text in self.texts:
            yield _Message(text)


async def test_a_message_that_is_not_an_event_is_dropped_and_reading_goes_on() -> None:
    # Found by review: a JSON list or number raised out of the reader, which then stopped
    # for good (no reconnect), deaf to every call's keys.
    seen: list[Event] = []
    router = EventRouter(seen.append)
    stream = EventStream(None, router)  # type: ignore[arg-type]
    event = '{"type": "StasisStart", "channel": {"id": "c1"}}'
    socket: Any = _Socket("[1, 2]", "42", "not json", event)
    await stream._read(socket)
    assert [e.type for e in seen] == ["StasisStart"]
