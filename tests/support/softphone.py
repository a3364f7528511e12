"""Softphones for the tests: the people phonemfa calls, on pjsua2.

One pjsua2 library per process, driven from the asyncio loop itself: `threadCnt=0` and
`mainThreadOnly=True` make every callback run inside `libHandleEvents`, which a background task
polls. So callbacks can resolve asyncio futures directly and no locking is needed.

Softphones bind 127.0.0.3 (signalling and RTP): PJSIP identifies 127.0.0.1 as the carrier, so
a softphone there would be taken for it (DESIGN §8).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import wave
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pjsua2 as pj

SOFTPHONE_ADDRESS = "127.0.0.3"
POLL_INTERVAL = 0.005
# A person takes a moment between hearing the call and pressing a key.
SETTLE = 0.8
# How long a key is held (a person's press is about this long).
PRESS_MS = 100
T = TypeVar("T")


class SoftphoneError(AssertionError):
    """A softphone did not see what the test expected (in time)."""


@dataclass
class CallRecord:
    """What one call leg saw: kept after the pjsua2 object is gone."""

    remote_uri: str = ""
    digits: str = ""
    states: list[str] = field(default_factory=list)
    last_status: int = 0
    transfer_status: list[int] = field(default_factory=list)


class PhoneCall(pj.Call):  # type: ignore[misc]
    """One call on a softphone. Awaitable helpers wrap pjsua2's callbacks."""

    def __init__(self, phone: Phone, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(phone, call_id)
        self.phone = phone
        self.loop = phone.net.loop
        self.record = CallRecord()
        self.confirmed: asyncio.Future[None] = self.loop.create_future()
        self.disconnected: asyncio.Future[None] = self.loop.create_future()
        self._media_ready: asyncio.Future[None] = self.loop.create_future()
        self._digit_waiters: list[tuple[str, asyncio.Future[None]]] = []
        self._transfer_done: asyncio.Future[int] | None = None
        self._recorder: pj.AudioMediaRecorder | None = None
        self._audio: pj.AudioMedia | None = None
        self._media_at = 0.0
        self._players: list[pj.AudioMediaPlayer] = []  # kept until the call ends

    # --- pjsua2 callbacks (run inside libHandleEvents, on the loop thread) ---
    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802, ARG002
        info = self.getInfo()
        self.record.states.append(info.stateText)
        self.record.last_status = info.lastStatusCode
        self.record.remote_uri = info.remoteUri
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            _resolve(self.confirmed)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._stop_recording()
            self._players.clear()
            _resolve(self.disconnected)
            _resolve(self.confirmed, SoftphoneError(f"call ended: {info.lastStatusCode}"))
            self.phone.net.retire(self)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802, ARG002
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self._audio = self.getAudioMedia(i)
                if not self._media_ready.done():
                    self._media_at = self.loop.time()
                if self._recorder is not None:
                    self._audio.startTransmit(self._recorder)
                _resolve(self._media_ready)

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:  # noqa: N802
        self.record.digits += prm.digit
        for wanted, fut in list(self._digit_waiters):
            if self.record.digits.endswith(wanted):
                _resolve(fut)

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:  # noqa: N802
        self.record.transfer_status.append(prm.statusCode)
        if prm.finalNotify and self._transfer_done is not None:
            _resolve(self._transfer_done, value=prm.statusCode)

    # --- what tests call ---
    def answer(self, code: int = 200) -> None:
        prm = pj.CallOpParam()
        prm.statusCode = code
        super().answer(prm)

    def hangup(self) -> None:
        if self.disconnected.done():
            return
        prm = pj.CallOpParam()
        prm.statusCode = pj.PJSIP_SC_DECLINE if not self.confirmed.done() else 0
        with contextlib.suppress(pj.Error):
            super().hangup(prm)

    async def send_dtmf(self, digits: str, *, gap: float = 0.25) -> None:
        """Press keys, one RFC 4733 event each, like a person would: not before the audio
        has flowed for a moment (a bridge drops RTP events that come before any media), each
        held PRESS_MS, one every `gap` seconds (pjsua's own 200 ms queues a key sent sooner
        right after the last)."""
        await self._settle()
        for digit in digits:
            prm = pj.CallSendDtmfParam()
            prm.method = pj.PJSUA_DTMF_METHOD_RFC2833
            prm.digits = digit
            prm.duration = PRESS_MS
            self.sendDtmf(prm)
            await asyncio.sleep(gap)

    async def _settle(self) -> None:
        await self.wait_media()
        await asyncio.sleep(max(0.0, self._media_at + SETTLE - self.loop.time()))

    async def wait_media(self, timeout: float = 10) -> None:
        await _wait(self._media_ready, timeout, "no audio on the call")

    async def wait_confirmed(self, timeout: float = 10) -> None:
        await _wait(self.confirmed, timeout, "the call was not answered")

    async def wait_disconnected(self, timeout: float = 10) -> None:
        await _wait(self.disconnected, timeout, "the call did not end")

    async def wait_digits(self, wanted: str, timeout: float = 10) -> None:
        """Until the digits received so far end with `wanted`."""
        if self.record.digits.endswith(wanted):
            return
        fut: asyncio.Future[None] = self.loop.create_future()
        self._digit_waiters.append((wanted, fut))
        try:
            await _wait(fut, timeout, f"DTMF {wanted!r} not received (got {self.record.digits!r})")
        finally:
            self._digit_waiters.remove((wanted, fut))

    async def say(self, path: Path) -> None:
        """Speak into the call: a WAV (8 kHz mono) played once to the far end; returns as it
        starts."""
        await self.wait_media()
        assert self._audio is not None
        player = pj.AudioMediaPlayer()
        player.createPlayer(str(path), pj.PJMEDIA_FILE_NO_LOOP)
        player.startTransmit(self._audio)
        self._players.append(player)

    def start_recording(self, path: Path) -> None:
        """Record what this phone hears into a WAV file (8 kHz mono)."""
        self._recorder = pj.AudioMediaRecorder()
        self._recorder.createRecorder(str(path))
        if self._audio is not None:
            self._audio.startTransmit(self._recorder)

    async def stop_recording(self) -> None:
        """Stop and close the recording; the WAV is complete when this returns."""
        self._stop_recording()
        await asyncio.sleep(0.05)  # pjsua2 finishes the file in libHandleEvents

    def _stop_recording(self) -> None:
        if self._recorder is None:
            return
        if self._audio is not None:
            with contextlib.suppress(pj.Error):
                self._audio.stopTransmit(self._recorder)
        self._recorder = None  # closes the file

    async def blind_transfer(self, target: str, timeout: float = 15) -> int:
        """SIP REFER to `target`; returns the final NOTIFY status. Hangs up after a 2xx,
        like a desk phone does once the transfer has succeeded. Like a person, not before
        the audio has flowed for a moment: Asterisk answers a REFER with 400 while the
        channel is not yet in its bridge (res_pjsip_refer: AST_BRIDGE_TRANSFER_INVALID)."""
        await self._settle()
        self._transfer_done = self.loop.create_future()
        self.xfer(target, pj.CallOpParam(True))
        status = await _wait(self._transfer_done, timeout, "no final NOTIFY for the transfer")
        if 200 <= status < 300:
            self.hangup()
        return status


class Phone(pj.Account):  # type: ignore[misc]
    """A softphone account: registered to the simulated network, or unregistered for calls out."""

    def __init__(self, net: SoftphoneNetwork, username: str) -> None:
        super().__init__()
        self.net = net
        self.username = username
        self.incoming: asyncio.Queue[PhoneCall] = asyncio.Queue()
        self.registered: asyncio.Future[None] = net.loop.create_future()
        self.auto_answer: int | None = None

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # noqa: N802
        if prm.code == 200 and self.getInfo().regIsActive:
            _resolve(self.registered)
        elif prm.code >= 300:
            _resolve(self.registered, SoftphoneError(f"{self.username}: register {prm.code}"))

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        call = PhoneCall(self, prm.callId)
        self.net.keep(call)
        if self.auto_answer is not None:
            call.answer(self.auto_answer)
        else:
            call.answer(180)
        self.incoming.put_nowait(call)

    async def next_call(self, timeout: float = 15) -> PhoneCall:
        """The next incoming call (ringing: answer it with `.answer()`)."""
        try:
            return await asyncio.wait_for(self.incoming.get(), timeout)
        except TimeoutError:
            raise SoftphoneError(f"{self.username}: no incoming call in {timeout} s") from None

    def call(self, uri: str) -> PhoneCall:
        call = PhoneCall(self)
        self.net.keep(call)
        call.makeCall(uri, pj.CallOpParam(True))
        return call


class SoftphoneNetwork:
    """The pjsua2 library for this process, and every account and call it made."""

    def __init__(self, registrar: str, password: str) -> None:
        self.registrar = registrar  # e.g. "127.0.0.2:5060"
        self.password = password
        self.loop = asyncio.get_running_loop()
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.userAgent = "phonemfa-test-softphone"
        cfg.logConfig.level = 1
        cfg.logConfig.consoleLevel = 1
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.noVad = True
        cfg.medConfig.sndAutoCloseTime = -1
        self.ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.boundAddress = SOFTPHONE_ADDRESS
        tcfg.port = 0
        self.transport_id = self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        self.ep.libStart()
        self.ep.audDevManager().setNullDev()
        self._phones: list[Phone] = []
        self._calls: list[PhoneCall] = []
        self._retired: list[PhoneCall] = []
        self._every_call: weakref.WeakSet[PhoneCall] = weakref.WeakSet()
        self._poller = self.loop.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            self.ep.libHandleEvents(0)
            await asyncio.sleep(POLL_INTERVAL)

    def keep(self, call: PhoneCall) -> None:
        self._calls.append(call)
        self._every_call.add(call)

    def retire(self, call: PhoneCall) -> None:
        self._retired.append(call)

    def _account_config(self, username: str | None) -> pj.AccountConfig:
        cfg = pj.AccountConfig()
        cfg.sipConfig.transportId = self.transport_id
        cfg.mediaConfig.transportConfig.boundAddress = SOFTPHONE_ADDRESS
        cfg.mediaConfig.transportConfig.port = 40000
        cfg.mediaConfig.transportConfig.portRange = 10000
        if username is None:
            cfg.idUri = f"sip:tester@{SOFTPHONE_ADDRESS}"
            return cfg
        cfg.idUri = f"sip:{username}@{self.registrar}"
        cfg.regConfig.registrarUri = f"sip:{self.registrar}"
        cfg.regConfig.timeoutSec = 300
        cred = pj.AuthCredInfo("digest", "*", username, 0, self.password)
        cfg.sipConfig.authCreds.append(cred)
        return cfg

    async def register(self, username: str, timeout: float = 10) -> Phone:
        """A softphone registered to the simulated network as `username` (mobile, 5678...)."""
        phone = Phone(self, username)
        phone.create(self._account_config(username))
        self._phones.append(phone)
        await _wait(phone.registered, timeout, f"{username} did not register")
        return phone

    def unregistered(self) -> Phone:
        """A softphone with no registration, to place calls."""
        phone = Phone(self, "tester")
        phone.create(self._account_config(None))
        _resolve(phone.registered)
        self._phones.append(phone)
        return phone

    async def reset(self) -> None:
        """After a test: hang up every call, remove every account."""
        for call in self._calls:
            call._stop_recording()
            call.hangup()
        deadline = self.loop.time() + 5
        while self.loop.time() < deadline and any(not c.disconnected.done() for c in self._calls):
            await asyncio.sleep(0.02)
        for phone in self._phones:
            with contextlib.suppress(pj.Error):
                phone.setRegistration(False)
        await asyncio.sleep(0.1)
        for phone in self._phones:
            phone.shutdown()
        self._phones.clear()
        self._calls.clear()
        self._retired.clear()

    async def close(self) -> None:
        await self.reset()
        self._poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poller
        # A Call destroyed after the library asserts (and aborts the process). A failed test's
        # traceback may still hold one: disown those, leaking them on purpose.
        gc.collect()
        for call in list(self._every_call):
            call.thisown = False
        self.ep.libDestroy()


@contextlib.asynccontextmanager
async def softphone_network(registrar: str, password: str) -> AsyncIterator[SoftphoneNetwork]:
    net = SoftphoneNetwork(registrar, password)
    try:
        yield net
    finally:
        await net.close()


def wav_stats(path: Path) -> tuple[float, float]:
    """(duration in seconds, RMS level 0..1) of a 16-bit mono WAV: is it silent?"""
    import array
    import math

    with wave.open(str(path), "rb") as w:
        frames = w.readframes(w.getnframes())
        rate = w.getframerate()
        width = w.getsampwidth()
    if width != 2 or not frames:
        return 0.0, 0.0
    samples = array.array("h", frames)
    rms = math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768
    return len(samples) / rate, rms


def _resolve(
    fut: asyncio.Future[object] | asyncio.Future[None] | asyncio.Future[int],
    error: BaseException | None = None,
    value: object = None,
) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
        fut.exception()  # mark retrieved: nobody may be waiting
    else:
        fut.set_result(value)  # type: ignore[arg-type]


async def _wait(fut: asyncio.Future[T], timeout: float, what: str) -> T:
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        raise SoftphoneError(f"{what} within {timeout} s") from None
