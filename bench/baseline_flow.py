"""The baselines' one flow, written once so that floor and peer do exactly the same thing;
each gives it its library's way to talk to ARI (`Ops`) and feeds it events (`Call.apply`).

The flow is the least any ARI application does for one of the bench's calls, and the same
call phonemfa makes (what the person hears is the same): create and dial the channel, wait
for the answer; behind a switchboard, key the extension (auto attendant) and play the
extension prompt, or play the operator prompt, until '#'; play the greeting (stopped at the
first key: Asterisk does not stop it by itself), read the answer up to '#', say the closing
words to the end, hang up, wait until the channel is gone. No API, store, catalog, timeline,
time-outs or retries.

Standard library only (the peer's venv imports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from bench.plan import (
    APPROVED,
    AUTO,
    DIRECT,
    DTMF_GAP_MS,
    DTMF_MS,
    FRAUD,
    OPERATOR,
    PRE_DELAY,
    CallResult,
    Kind,
    asterisk_time,
)

# phonemfa's prompts for the bench's tenants (English, fraud reporting on), media as ARI takes
# them: several in one playback, comma-separated.
SOUNDS = "sound:phonemfa/en/"
GREETING = SOUNDS + "greeting_fraud"
EXTENSION_PROMPT = SOUNDS + "extension_prompt"
# The extension said digit by digit from Asterisk's own sounds, as phonemfa plays it: a stop
# while Asterisk says `digits:5678` is ignored (phonemfa.prompts.Prompt.playable).
OPERATOR_PROMPT = SOUNDS + "operator_transfer,{}," + SOUNDS + "operator_after_digits"
CLOSING = {APPROVED: SOUNDS + "success", FRAUD: SOUNDS + "fraud_confirmation"}
WAIT = 30.0  # any one wait; the bots act within a few seconds
# The event types `Call.apply` acts on. Each baseline has Asterisk send it only these, as
# phonemfa does with its own (ARI's per-application event filter, Asterisk >= 13.26/16.3):
# the rest (ChannelVarset, ChannelDialplan, Dial, PlaybackStarted...) would cost both
# Asterisk and the baseline for nothing, and the comparison would be of configurations.
EVENTS = ("StasisStart", "ChannelStateChange", "ChannelDtmfReceived", "PlaybackFinished",
          "ChannelDestroyed")  # fmt: skip
EVENT_FILTER = {"allowed": [{"type": t} for t in EVENTS]}  # the body of PUT .../eventFilter


class Call:
    """What the events said about one channel; `changed` wakes the flow."""

    __slots__ = ("stasis", "up", "gone", "keys", "key_times", "answered_at", "playing", "changed")

    def __init__(self) -> None:
        self.stasis = self.up = self.gone = False
        self.playing = ""  # the playback in progress, by id
        self.keys: list[str] = []
        self.key_times: list[str] = []
        self.answered_at = ""
        self.changed = asyncio.Event()

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "StasisStart":
            self.stasis = True
        elif kind == "ChannelStateChange":
            state = event["channel"]["state"]
            self.up = state == "Up"
            if self.up and not self.answered_at:
                self.answered_at = event["timestamp"]
        elif kind == "ChannelDtmfReceived":
            self.keys.append(event["digit"])
            self.key_times.append(event["timestamp"])
        elif kind == "PlaybackFinished":
            if event["playback"]["id"] == self.playing:  # not a stopped one's late news
                self.playing = ""
        elif kind == "ChannelDestroyed":
            self.gone = True
        else:
            return
        self.changed.set()

    async def until(self, done: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                if self.gone:
                    raise RuntimeError("the channel went away")
                self.changed.clear()
                await self.changed.wait()

    async def idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await self.until(lambda: False, seconds)


class Ops(Protocol):
    """One call's ARI requests, in the baseline's library."""

    async def create(self, endpoint: str, channel_id: str) -> None: ...
    async def dial(self, channel_id: str) -> None: ...
    async def dtmf(self, channel_id: str, digits: str) -> None: ...
    async def play(self, channel_id: str, playback_id: str, media: str) -> None: ...
    async def stop_playback(self, playback_id: str) -> None: ...  # gone already: fine
    async def hangup(self, channel_id: str) -> None: ...  # gone already: fine


async def verify_call(
    ops: Ops, call: Call, kind: Kind, channel_id: str, result: CallResult
) -> None:
    """One call, start to finish; fills in `result`. The caller registered `call` under
    `channel_id` for events before this (the first event can beat the create's answer)."""
    result.t_request = time.time()
    try:
        await ops.create(f"PJSIP/{kind.number}@trunk", channel_id)
        await call.until(lambda: call.stasis)
        await ops.dial(channel_id)
        await call.until(lambda: call.up)
        result.t_answered_ast = asterisk_time(call.answered_at)
        if kind.mode == AUTO and kind.extension:
            await call.idle(PRE_DELAY)
            await ops.dtmf(channel_id, kind.extension)
            await call.idle(len(kind.extension) * (DTMF_MS + DTMF_GAP_MS) / 1000)
        if kind.mode != DIRECT:  # until the '#' that says the person is there
            prompt = EXTENSION_PROMPT
            if kind.mode == OPERATOR:
                digits = ",".join(f"sound:digits/{d}" for d in kind.extension)
                prompt = OPERATOR_PROMPT.format(digits)
            await _play(ops, call, channel_id, prompt, lambda: "#" in call.keys)
            await call.until(lambda: "#" in call.keys)
            cut = call.keys.index("#") + 1
            del call.keys[:cut], call.key_times[:cut]
        await _play(ops, call, channel_id, GREETING, lambda: bool(call.keys))
        await call.until(lambda: "#" in call.keys)
        end = call.keys.index("#")
        entry = "".join(call.keys[: end + 1])
        result.t_key_ast = asterisk_time(call.key_times[end])
        result.outcome = {"#": APPROVED, "0#": FRAUD}.get(entry, "denied")
        result.t_decided = result.t_visible = time.time()
        closing = CLOSING.get(result.outcome)
        if closing is not None:
            with contextlib.suppress(RuntimeError):  # they hung up: no need to finish it
                await _play(ops, call, channel_id, closing, lambda: False)
    finally:
        if not call.gone:
            await ops.hangup(channel_id)
            with contextlib.suppress(TimeoutError, RuntimeError):
                await call.until(lambda: call.gone, 10)
        result.t_end = time.time()


async def _play(
    ops: Ops, call: Call, channel_id: str, media: str, stop_on: Callable[[], bool]
) -> None:
    """Play `media` to the end, or stop it as soon as `stop_on()` holds."""
    playback_id = call.playing = str(uuid.uuid4())
    await ops.play(channel_id, playback_id, media)
    await call.until(lambda: stop_on() or not call.playing)
    if call.playing:
        await ops.stop_playback(playback_id)
        call.playing = ""
