"""A call's mailbox (phonemfa.ari.events.Mailbox): events in order, waits that end on an event
or at a deadline, and nothing left behind by a wait that was cancelled."""

from __future__ import annotations

import asyncio

import pytest

from phonemfa.ari import Event, Mailbox


def event(n: int) -> Event:
    return Event({"type": "ChannelDtmfReceived", "digit": str(n), "channel": {"id": "c"}})


async def test_events_come_out_in_order() -> None:
    box = Mailbox()
    for n in range(3):
        box.put_nowait(event(n))
    assert box.qsize() == 3
    assert [(await box.get()).digit for _ in range(3)] == ["0", "1", "2"]
    assert box.empty()
    with pytest.raises(asyncio.QueueEmpty):
        box.get_nowait()


async def test_wait_ends_with_an_event_or_at_the_deadline() -> None:
    box = Mailbox()
    loop = asyncio.get_running_loop()
    assert await box.wait(loop.time() + 0.05) is False  # nothing came
    assert await box.wait(loop.time() - 1) is False  # already past: no waiting at all
    loop.call_later(0.01, box.put_nowait, event(7))
    started = loop.time()
    assert await box.wait(loop.time() + 5) is True
    assert loop.time() - started < 1
    assert box.get_nowait().digit == "7"
    box.put_nowait(event(8))
    assert await box.wait(loop.time()) is True  # one is there: no deadline matters


async def test_a_cancelled_wait_leaves_the_mailbox_usable() -> None:
    box = Mailbox()
    waiting = asyncio.create_task(box.wait(None))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    box.put_nowait(event(1))  # nobody to wake: no error
    assert (await asyncio.wait_for(box.get(), 1)).digit == "1"
