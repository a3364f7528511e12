"""One verification call, top to bottom: dial, get past the switchboard, verify, hang up.

A `CallFlow` runs as one task fed by its own mailbox (the event router puts this call's ARI
events there). The sequence reads like DESIGN §1:

    originate -> [auto attendant: key the extension, extension prompt until '#']
              -> [operator: transfer prompt with the digits, until '#' from the extension]
              -> greeting (or number matching) -> collect -> success / fraud / denied
              -> hang up

Every path ends in exactly one outcome, reported to the observer the moment it is decided
(before the closing prompt plays), and every path hangs up our channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import secrets
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from phonemfa.answers import Answers, Next, Read, Verdict
from phonemfa.ari import (
    AriClient,
    AriConflict,
    AriError,
    AriNotFound,
    AriPreconditionFailed,
    AriUnavailable,
    Event,
    EventRouter,
    Mailbox,
    synthetic,
)
from phonemfa.config import TenantSettings
from phonemfa.fallback import Fallback, next_leg
from phonemfa.lines import Lines, NoFreeLine
from phonemfa.messages import MessageType
from phonemfa.numbers import EXTENSION_MASK, mask_text
from phonemfa.outcomes import Outcome, unanswered_outcome
from phonemfa.policy import DialMode, DialPlan, Digits, Wait
from phonemfa.prompts import Prompt, PromptCatalog

log = logging.getLogger("phonemfa.flow")

# How long to wait for things Asterisk always answers quickly; past this, something is broken.
STASIS_START_TIMEOUT = 10.0
# How long a call waits for ARI to come back before it ends undialled, without a line limit
# to take trunk.queue_timeout from.
ASTERISK_WAIT = 60.0
HANGUP_TIMEOUT = 5.0
# After a hang-up answered 404 (the channel gone already): a moment for its ChannelDestroyed.
GONE_WAIT = 1.0
# A hang-up Asterisk did not answer (a loaded Asterisk times requests out) is asked this many
# times in all while connected; disconnected, the next connect's sweep hangs the channel up.
HANGUP_TRIES = 3
# Asterisk hangs our channel up itself this long after calls.max_duration (TIMEOUT(absolute)
# set at its creation): a process killed mid-call (the service, or a `phonemfa call` that no
# next start settles) leaves no callee on the line with silence for good. Past max_duration
# we end the call ourselves, so this fires only when nobody is left to.
CHANNEL_LIFETIME_MARGIN = 30.0
# A prompt that never reports its end (lost event) is given up on after this long.
PLAYBACK_TIMEOUT = 120.0
# After ARI's events were lost: how long a call waits for them to come back (a reconnect is
# within ari.reconnect_max_delay, then its re-sync), and how many losses it goes through.
EVENTS_BACK_WAIT = 10.0
MAX_EVENTS_LOST = 3
# Before a silence or a wrong entry ends a call: a mark sent through Asterisk must come back
# on our event stream within this long, else the events before it may be lost too.
MARK_EVENT = "phonemfa_mark"
MARK_WAIT = 3.0
DIGITS_MASKED = f"digits:{EXTENSION_MASK}"
# Fewer digits than this is an internal line (an extension), not a phone number.
MIN_NUMBER_DIGITS = 7
# How far a channel has got, for re-sync snapshots that may be older than the events seen.
_STATE_ORDER = {"Ring": 1, "Ringing": 1, "Up": 2}
# A soft hang-up request carries Asterisk's reason as flags: shutting down, or the Stasis
# module unloading. The channel's own cause then reads "normal clearing": it is not.
SOFTHANGUP_ASTERISK_GOING = 0x04 | 0x10
# Longest entry we read (a code plus '#'); more keys than this is not an answer.
MAX_ENTRY = 12
# A key guard judges a key by when Asterisk got it (`_pressed`), from the lag of the call's
# events of the last KEY_LAG_WINDOW seconds: a change of Asterisk's clock is forgotten that
# much later. An event that seems more than KEY_LATE_LIMIT later than those has not waited
# in a busy loop: Asterisk's clock was set back, and the lag is learnt again from it.
KEY_LAG_WINDOW = 15.0
KEY_LATE_LIMIT = 3.0
# ARI tells of a key when it is released, with how long it was held: a guard judges a key by
# when it went down. A held time past this (a gateway's odd figure) counts as this much, so
# that it cannot drop keys pressed long after a guard.
KEY_HELD_LIMIT = 2.0
# The same key told twice for one press (in-band detection beside RFC 4733, or two RTP
# event streams): both reports released within this much of each other, or the second gone
# down this much or more before the first was released. Two real presses of one key are
# one after the other: the second is released a press's length later (40 ms at least,
# ITU-T Q.24) and goes down after the first's release, right after when a phone queues it.
# (SIP INFO beside RFC 4733 tells of a press at its start and at its end: like two presses
# back to back, it cannot be told from them; a trunk must use one of the two.)
KEY_REPEAT_GAP = 0.04
RESYNC_EVENT = "PhonemfaResync"
# Voicemail (direct calls, calls.voicemail_detection). Talk detection on our channel: a talk
# ends VOICEMAIL_SILENCE_MS after its last sound, so the pauses of a person's "Hello? ...
# Hello?" end it, a recorded greeting's do not. A talk that starts within VOICEMAIL_START of
# the answer and still goes on VOICEMAIL_TALK seconds (plus that silence) later, no key
# pressed, is a greeting, if the far end's audio still comes then (VOICEMAIL_RTP_PACKETS in the
# last VOICEMAIL_RTP_SAMPLE s; 20 ms packets bring 25): a phone that stops sending in its
# silences never ends its talk. It is judged when our VOICEMAIL_MARK comes back through
# Asterisk's events: the talk's end or a key that Asterisk sent before is handled first.
VOICEMAIL_SILENCE_MS = 1200
VOICEMAIL_START = 5.0
VOICEMAIL_TALK = 4.0
VOICEMAIL_RTP_SAMPLE = 0.5
VOICEMAIL_RTP_PACKETS = 10
VOICEMAIL_MARK = "phonemfa_voicemail"
# hang_up waits this long after the verdict before it hangs up: a key pressed as the verdict
# came (Asterisk sends it on release) is a person's, and may begin a fraud report.
VOICEMAIL_KEY_GRACE = 0.3
VOICEMAIL_HANG_UP = "PhonemfaVoicemailHangUp"
T = TypeVar("T")
# How each decision of the answers ends the call: its outcome, reason and closing words.
_CLOSINGS = {
    Verdict.APPROVE: (Outcome.APPROVED, None, MessageType.SUCCESS),
    Verdict.FRAUD: (Outcome.FRAUD_REPORTED, None, MessageType.FRAUD_CONFIRMATION),
    Verdict.NO_INPUT: (Outcome.NO_INPUT, "no_key_pressed", MessageType.NO_INPUT),
    Verdict.DENY: (Outcome.DENIED, "wrong_input", MessageType.DENIED),
}
# The ARI events `_handle` acts on. Asterisk is told to send only these (and what the service
# needs, see Engine): the rest of what it would send for a call (ChannelVarset, Dial,
# ChannelDialplan: about half its events) costs both sides for nothing.
EVENT_TYPES = frozenset(
    {
        "StasisStart",
        "PlaybackStarted",
        "StasisEnd",
        "ChannelStateChange",
        "ChannelDtmfReceived",
        "ChannelHangupRequest",
        "ChannelDestroyed",
        "PlaybackFinished",
        "ChannelCallerId",
        "ChannelTalkingStarted",
        "ChannelTalkingFinished",
        "ChannelUserevent",
    }
)


def _shown_media(media: Any) -> Any:
    """A media as the timeline shows it: spoken digits (the operator prompt's extension,
    `digits:5678` or one of the `sound:digits/5` it is played as) masked, as the number is."""
    spoken = isinstance(media, str) and media.startswith(("digits:", "sound:digits/"))
    return DIGITS_MASKED if spoken else media


class Observer(Protocol):
    """Where a call reports its progress: the service's store, or the CLI's screen."""

    def step(self, event: str, details: dict[str, Any]) -> None:
        """A timeline entry (`event` is its name: dialing, ringing, answered, ...)."""

    def outcome(self, outcome: Outcome, reason: str | None) -> None:
        """The call's one terminal outcome, the moment it is known."""

    async def dialling(self) -> None:
        """After the `dialing` step, before its channel is made: returns once whoever must
        hang that channel up if this process dies knows of it (the record names it)."""


@dataclass(frozen=True)
class CallRequest:
    """Everything one call needs, decided before dialling (number, policy, language)."""

    call_id: str
    plan: DialPlan
    settings: TenantSettings
    catalog: PromptCatalog
    language: str
    dial_timeout: int
    code: str | None = None
    caller_id: str | None = None
    requested_language: str | None = None
    """What the request asked for, when `language` differs from it (a fallback)."""
    fallbacks: tuple[Fallback, ...] = ()
    """The legs that may follow when `plan`'s does not reach the person (fallback.py)."""


def _asterisk_seconds(event: Event) -> float | None:
    """When Asterisk stamped `event`, in seconds of its clock; None if unstamped."""
    try:
        return datetime.fromisoformat(event.timestamp).timestamp()
    except ValueError:
        return None


def asterisk_going(event: Event) -> bool:
    """A ChannelHangupRequest that Asterisk's own shutdown made (soft, with its cause)."""
    return bool(event.data.get("soft")) and bool(event.cause & SOFTHANGUP_ASTERISK_GOING)


class HungUp(Exception):
    """Our channel went away (the far end hung up, or it was lost, or Asterisk stopped)."""

    def __init__(self, cause: int, lost: bool = False, asterisk_stopped: bool = False) -> None:
        super().__init__(f"channel gone (cause {cause})")
        self.cause = cause
        self.lost = lost
        self.asterisk_stopped = asterisk_stopped


class Stopped(Exception):
    """The service ended the call from outside (cancel, shutdown, Asterisk restarted)."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class _Refused(Exception):
    """Asterisk refused to make our channel because it is stopping: nothing was dialled."""


class CallFlow:
    def __init__(
        self,
        request: CallRequest,
        ari: AriClient,
        router: EventRouter,
        observer: Observer,
        *,
        channel_id: str | None = None,
        lines: Lines | None = None,
        asterisk_ready: asyncio.Event | None = None,
        asterisk_refusing: Callable[[], Awaitable[bool]] | None = None,
        connection: Callable[[], int | None] | None = None,
        next_leg_refused: Callable[[], tuple[Outcome, str] | None] | None = None,
    ) -> None:
        self.req = request  # the leg now dialled: its `plan` changes with each leg
        self.lines = lines
        self.asterisk_ready = asterisk_ready  # set while calls may be dialled (Engine.ready)
        # After a 500 to our channel: does Asterisk refuse every channel, i.e. is it
        # stopping? (Engine.refused_channel, which then clears asterisk_ready.)
        self.asterisk_refusing = asterisk_refusing
        # The number of ARI's event connection while connected, None while not (Engine). An
        # entry or a silence across a change may miss keys lost meanwhile (no event is sent
        # twice): it counts for nothing, and the person is asked again.
        self.connection = connection
        # Why the next leg of a fallback chain may not be dialled now, as the call's outcome
        # and reason, or None (the service shutting down, the user blocked meanwhile).
        self.next_leg_refused = next_leg_refused
        self.ari = ari
        self.router = router
        self.observer = observer
        self.calls = request.settings.calls
        self._attempts = 0  # channels asked for (a stopping Asterisk refuses them)
        self._holding_line = False
        # The call's outcome once decided. While `_pending_leg` is set it is only this leg's:
        # the chain goes on with that leg (fallback.py) once this one has hung up.
        self.outcome: Outcome | None = None
        self.reason: str | None = None
        self._legs = request.fallbacks  # the legs not dialled yet
        self._pending_leg: Fallback | None = None
        self._stop: Stopped | None = None
        self._task: asyncio.Task[Outcome] | None = None
        # With number matching, every digit received is masked on the timeline: the code may
        # be typed at any prompt, the extension's or the operator's too (found by review).
        self._masking_keys = request.code is not None
        self._wait_until = 0.0  # loop time: the end of the waiting before the dial (_leg)
        self._loop = asyncio.get_running_loop()
        self._reset_leg(channel_id or str(uuid.uuid4()))

    def _reset_leg(self, channel_id: str) -> None:
        """What belongs to one channel: set for the call's first leg, again for each next."""
        self.channel_id = channel_id
        # A mailbox of its own: a late event of the last leg's channel must not count here.
        self.mailbox = Mailbox()
        self.keys: list[str] = []  # DTMF received and not yet consumed
        self.channel_state = "Down"
        self.in_stasis = False
        # Asterisk was asked for our channel: before that there is nothing to hang up or ask about.
        self.dialled = False
        self._created = False  # Asterisk answered that it made our channel
        self._lost_before_stasis = False  # made, then gone before it reached our app (resync)
        self.rung = False  # the channel was dialled: the phone may ring
        self.gone: HungUp | None = None
        self.playback_id: str | None = None  # the prompt playing, from before it is asked for
        self.playback_created: str | None = None  # the same once Asterisk has made it (resync)
        self.playback_over = True
        self._reached_greeting = False
        # Keys that cannot answer the prompt now playing (calls.greeting_key_guard and
        # retry_key_guard) are dropped until this loop time, which each dropped key pushes out
        # by the inter-digit time-out.
        self._keys_ignored_until = 0.0
        # (loop time, loop time - Asterisk's time) of this call's recent events (`_pressed`).
        self._lags: deque[tuple[float, float]] = deque()
        # After a jump of the lag (`_pressed`): until when keys are judged by the lag before
        # it too, and that lag.
        self._lag_doubt: tuple[float, float] | None = None
        # The last key's digit and when Asterisk said it was released (`_duplicate`).
        self._last_key: tuple[str, float] | None = None
        # Seconds of guard for the next prompt played, from its start; keys are dropped until
        # then (None: no guard, keys count as they come).
        self._next_prompt_guard: float | None = None
        self._asterisk_going = False
        self._hangup_requested = False  # ChannelHangupRequest: Asterisk is hanging up our channel
        # The last entry's prompt was not heard whole: a key (kept or dropped) came during
        # it, or it did not play to its end by itself.
        self._prompt_not_heard = False
        self._keys_seen = 0  # every key received, counted even when dropped
        self._dropped = ""  # keys a guard dropped since the last read
        self._unread = ""  # keys of a read the call's end cut short (_ask)
        self._past_entry = ""  # keys after the last entry's '#' (_ask)
        self._deaf = False  # the last entry or silence (_ask) spanned a loss of ARI's events
        self._events_lost_count = 0  # losses of ARI's events in a row (_events_lost)
        self._mark: str | None = None  # the mark we wait for (_events_still_come), and
        self._mark_seen = False  # whether it came
        self._playback_state: str | None = None  # how the last playback ended, if said
        self._prompt_failed = False  # the last prompt read (_read) failed to play
        # When the last playback ended by Asterisk's clock, and whether a key handled since
        # went down before that (`_handle`): it came during the prompt.
        self._playback_ended_at: float | None = None
        self._down_in_prompt = False
        direct = self.req.plan.mode is DialMode.DIRECT
        self._voicemail_mode = self.calls.voicemail_detection if direct else "off"
        self._answered_at: float | None = None  # loop time
        # The far end's talk now going on, if it may be a voicemail greeting: its start (loop
        # time) and the event connection then; the check of its audio, once it lasted.
        self._talk: tuple[float, int | None] | None = None
        self._voicemail_timer: asyncio.TimerHandle | None = None
        self._voicemail_check: asyncio.Task[None] | None = None
        self._voicemail_hang_up: asyncio.TimerHandle | None = None  # hang_up, after the grace
        # The mark sent to judge the talk now going on, and the RTP packets of its sample
        # (cleared with the talk: `_forget_talk`).
        self._voicemail_mark: tuple[str, int] | None = None
        self._voicemail = False  # a voicemail greeting was heard (and no key since)
        self._greeting_played = False  # the greeting's first play is over (a hang-up after)

    # --- the call, top to bottom -------------------------------------------
    async def run(self) -> Outcome:
        """Place the call and see it through; returns the outcome (also sent to the observer)."""
        self._task = asyncio.current_task()
        self.router.add_channel(self.channel_id, self.mailbox)
        try:
            return await self._run()
        finally:
            # Only now, hung up: the next call is dialled when this channel is gone.
            self._give_back_line()

    def _give_back_line(self) -> None:
        if self._holding_line:
            self._holding_line = False
            assert self.lines is not None
            self.lines.release()

    async def _run(self) -> Outcome:
        """The legs of the call, one after the other, until one decides it (fallback.py)."""
        while True:
            await self._leg()
            fallback = self._next_leg()
            if fallback is None:
                break
            self._begin_leg(fallback)
        assert self.outcome is not None
        return self.outcome

    async def _leg(self) -> None:
        """Dial one number and see it through to its outcome; hang up."""
        wait = self.lines.queue_timeout if self.lines is not None else ASTERISK_WAIT
        # One deadline for all the waiting before the dial (Asterisk, a line).
        self._wait_until = self._loop.time() + wait
        try:
            if self._stop is not None:  # stopped before it started
                raise self._stop
            # For Asterisk first, holding no line: an outage is not a lack of lines, and the
            # lines go to calls that can be dialled. Gone again while we waited for a line
            # (the line freed by a call a stopping Asterisk ended): give it back, wait again.
            # Refused by an Asterisk that is stopping (a graceful stop lets its calls end
            # but makes no new channel): undialled, so the same, once it is back.
            while True:
                await self._wait_for_asterisk()
                await self._take_line()
                if self.asterisk_ready is not None and not self.asterisk_ready.is_set():
                    self._give_back_line()
                    continue
                try:
                    async with asyncio.timeout(self.calls.max_duration):
                        await self._call()
                    break
                except _Refused:
                    self._give_back_line()
        except HungUp as gone:
            self._hung_up(gone)
        except Stopped as stop:
            self._decide(stop.outcome, stop.reason)
        except asyncio.CancelledError:
            if self._stop is None:  # cancelled by someone else: clean up, then obey
                self._decide(Outcome.CANCELLED, "cancelled", ends_chain=True)
                await self._finish()
                raise
            # Our own stop(): swallow it so the task ends normally with the outcome.
            self._decide(self._stop.outcome, self._stop.reason, ends_chain=True)
            if self._task is not None:
                self._task.uncancel()
        except TimeoutError:
            if self._events_lost_count or self._connection() is None:  # lately, or now
                # Asterisk's events were lost meanwhile: the time is not the call's fault.
                self._decide(Outcome.INTERRUPTED, "asterisk_unavailable")
            else:
                self._decide(Outcome.FAILED, "max_duration")
        except AriUnavailable as exc:
            self._decide(Outcome.INTERRUPTED, "asterisk_unavailable")
            log.warning("call %s: Asterisk unavailable: %s", self.req.call_id, exc)
        except AriError as exc:
            self._decide(Outcome.FAILED, f"ari_error_{exc.status}")
            log.warning("call %s: %s", self.req.call_id, exc)
        except Exception:
            log.exception("call %s: unexpected error", self.req.call_id)
            self._decide(Outcome.FAILED, "internal_error")
        try:
            await self._finish()
        except asyncio.CancelledError:
            # Cancelled by someone else while hanging up a leg whose outcome waited for the
            # next leg: there is no next leg now, and the call must still end in one outcome.
            self._decide(Outcome.CANCELLED, "cancelled", ends_chain=True)
            raise

    def _next_leg(self) -> Fallback | None:
        """After a leg has hung up: the leg to dial next, or None when the call is decided
        (and its outcome said). A stop during the last leg's closing ends the chain."""
        fallback = self._pending_leg
        if fallback is None:
            return None
        if self._stop is not None:
            self._decide(self._stop.outcome, self._stop.reason, ends_chain=True)
            return None
        refused = self.next_leg_refused() if self.next_leg_refused is not None else None
        if refused is not None:
            self._decide(*refused, ends_chain=True)
            return None
        self._pending_leg = None
        return fallback

    def _begin_leg(self, fallback: Fallback) -> None:
        after, reason = self.outcome, self.reason
        assert after is not None
        self.req = dataclasses.replace(self.req, plan=fallback.plan)
        self.outcome = self.reason = None
        self._reset_leg(str(uuid.uuid4()))
        self.router.add_channel(self.channel_id, self.mailbox)
        details = {"after": after.value, "reason": reason, "to": fallback.kind.value}
        self._step("fallback", **details, field=fallback.field)

    @property
    def chain_pending(self) -> bool:
        """This leg's outcome is known and the call goes on with another leg once it has
        hung up."""
        return self._pending_leg is not None

    def stop(self, outcome: Outcome, reason: str) -> None:
        """End the call from outside with this outcome. A call that already has its outcome
        is left to finish by itself: what remains (closing words, hang-up) is short, and
        cutting it could leave the channel up. A leg whose outcome would be followed by
        another leg is left to finish too, and then no other leg is dialled."""
        if self.outcome is not None and self._pending_leg is None:
            return
        if self._stop is None:
            self._stop = Stopped(outcome, reason)
        if self.outcome is None and self._task is not None and not self._task.done():
            self._task.cancel()

    async def _take_line(self) -> None:
        """Wait for a free line (trunk.max_calls) before dialling; `queued` meanwhile.
        Held until the call has hung up (run)."""
        if self._stop is not None:  # stopped before it started: no line needed
            raise self._stop
        if self.lines is None or self._holding_line:  # the next leg of a chain keeps its line
            return
        if self.lines.must_wait():
            self._step("waiting_for_line", in_use=self.lines.in_use, waiting=self.lines.waiting)
        try:
            await self.lines.acquire(max(0.0, self._wait_until - self._loop.time()))
        except NoFreeLine:
            raise Stopped(Outcome.FAILED, "no_free_line") from None
        self._holding_line = True

    async def _call(self) -> None:
        await self._originate()
        mode = self.req.plan.mode
        if mode is DialMode.AUTO_EXTENSION:
            await self._auto_attendant()
        elif mode is DialMode.OPERATOR:
            await self._operator()
        await self._verify()

    # --- dialling ----------------------------------------------------------
    async def _originate(self) -> None:
        plan = self.req.plan
        self._attempts += 1
        if self.req.requested_language is not None and self._attempts == 1:
            self._step(
                "language_fallback",
                requested=self.req.requested_language,
                used=self.req.language,
            )
        self._step("dialing", mode=plan.mode.value, number=plan.number.mask())
        lifetime = self.calls.max_duration + CHANNEL_LIFETIME_MARGIN
        variables = {"TIMEOUT(absolute)": str(math.ceil(lifetime))}
        if plan.mode is DialMode.OPERATOR:
            # Hints that the operator transferred the call (DESIGN §8: best effort).
            variables["TALK_DETECT(set)"] = ""
        elif self._voicemail_mode != "off":
            variables["TALK_DETECT(set)"] = str(VOICEMAIL_SILENCE_MS)
        await self.observer.dialling()
        self.dialled = True
        self._created = self._lost_before_stasis = False
        try:
            await self.ari.create_channel(
                plan.dial_string,
                self.channel_id,
                app_args=f"call,{self.req.call_id}",
                variables=variables,
                caller_id=self.req.caller_id,
            )
        except AriError as exc:
            # A stopping Asterisk answers 500 (503 at the very end). 500 is also a wrong
            # trunk.endpoint, 503 a congested one: those fail now; only a stop waits.
            if exc.status not in (500, 503) or self.asterisk_refusing is None:
                raise
            if not await self.asterisk_refusing():
                raise
            self.dialled = False  # no channel was made
            self._step("dial_refused", reason="asterisk_stopping")
            raise _Refused from None
        self._created = True
        await self._wait(
            lambda: self.in_stasis or self._lost_before_stasis,
            STASIS_START_TIMEOUT,
            "no StasisStart",
        )
        if not self.in_stasis:
            # Made, then gone before our app had it, while the websocket was down: Asterisk
            # could not give it to an app that was inactive for that moment, and hung it up.
            # Nothing was dialled: the same as a refusal, it is made again once Asterisk is
            # back (found by review: it ended `failed`, no_StasisStart). Within the call's
            # time for waiting, as its other waits before the dial.
            self.dialled = False
            self._step("dial_refused", reason="channel_lost_before_stasis")
            if self._loop.time() >= self._wait_until:
                raise Stopped(Outcome.INTERRUPTED, "asterisk_unavailable")
            raise _Refused
        self.rung = True
        try:
            await self._on_channel(self.ari.dial(self.channel_id, self.req.dial_timeout))
        except HungUp as gone:
            # Hung up since its StasisStart, before anything rang (a stopping Asterisk's soft
            # hang-up, an administrator's): not an `ari_error_404`, nor the number's
            # `unreachable`, which would move a chain to its backup (found by review).
            if gone.asterisk_stopped:
                raise
            raise Stopped(Outcome.INTERRUPTED, "channel_lost") from None
        # Answered, or ChannelDestroyed with the network's cause (busy, no answer...).
        await self._wait(
            lambda: self.channel_state == "Up", self.req.dial_timeout + 10, "dial never ended"
        )

    async def _wait_for_asterisk(self) -> None:
        """Until ARI is connected and caught up (Engine.ready), up to the call's deadline for
        waiting (trunk.queue_timeout from its start); then the call ends undialled. Holding
        no line meanwhile (the next leg of a chain holds the last leg's)."""
        ready = self.asterisk_ready
        if ready is None or ready.is_set():
            return
        self._give_back_line()
        self._step("waiting_for_asterisk")
        try:
            async with asyncio.timeout_at(self._wait_until):
                while not ready.is_set():  # set, then cleared again before we ran: wait on
                    await ready.wait()
        except TimeoutError:
            raise Stopped(Outcome.INTERRUPTED, "asterisk_unavailable") from None

    # --- getting past the switchboard --------------------------------------
    async def _auto_attendant(self) -> None:
        plan = self.req.plan
        for step in plan.dtmf:
            match step:
                case Wait(seconds):
                    await self._idle(seconds)
                case Digits(digits, duration_ms, gap_ms):
                    # An attendant may hang up as the digits go: not our failure.
                    await self._on_channel(
                        self.ari.send_dtmf(
                            self.channel_id, digits, duration_ms=duration_ms, between_ms=gap_ms
                        )
                    )
                    # ARI returns at once; the tones take this long to go out.
                    await self._idle(len(digits) * (duration_ms + gap_ms) / 1000)
        self._step("extension_sent", extension=EXTENSION_MASK, dtmf=plan.dtmf_masked)
        prompt = self.req.catalog.get(MessageType.EXTENSION_PROMPT, self.req.language)
        await self._until_pound(
            prompt,
            "extension_prompt",
            self.calls.extension_prompt_repeats,
            self.calls.extension_prompt_pause,
            "extension_did_not_answer",
        )

    async def _operator(self) -> None:
        extension = self.req.plan.extension
        assert extension is not None
        prompt = self.req.catalog.operator_prompt(self.req.language, extension)
        await self._until_pound(
            prompt,
            "operator_prompt",
            self.calls.operator_prompt_repeats,
            self.calls.operator_prompt_pause,
            "operator_did_not_transfer",
        )

    async def _until_pound(
        self, prompt: Prompt, name: str, repeats: int, pause: float, reason: str
    ) -> None:
        """Play `prompt` again and again until someone presses '#' (other keys are ignored).
        A round we could not hear keys through all along does not count."""
        attempt = 0
        while attempt < repeats:
            attempt += 1
            connection = self._connection()
            self.keys.clear()
            # The spoken extension (operator prompt) is masked as the number is.
            media = [_shown_media(m) for m in prompt.media]
            self._step(name, attempt=attempt, media=media, language=prompt.language)
            await self._play(prompt, stop_on=lambda: "#" in self.keys)
            pound = "#" in self.keys or await self._wait_key("#", pause)
            if not pound and not self._deaf_since(connection) and attempt == repeats:
                # About to give up: a '#' still on its way counts; none may be lost.
                if await self._events_still_come(connection):
                    pound = "#" in self.keys
                else:
                    connection = None
            if pound:
                self._step("pound_received", during=name)
                self._events_lost_count = 0  # a round that counted: losses in a row
                return
            if self._deaf_since(connection):
                await self._events_lost(name)
                attempt -= 1
            else:
                self._events_lost_count = 0  # losses in a row end the call
        raise Stopped(Outcome.NO_INPUT, reason)

    # --- the verification ----------------------------------------------------
    async def _verify(self) -> None:
        """Ask until the answers decide (`answers.Answers` holds the rules): play, read one
        entry, do what the rules say."""
        req = self.req
        fraud = req.settings.fraud
        code = req.code
        self._reached_greeting = True
        greeting = req.catalog.greeting(req.language, fraud=fraud.enabled, code=code is not None)
        repeat = req.catalog.greeting(
            req.language, fraud=fraud.enabled, code=code is not None, organization=False
        )
        retry = req.catalog.get(MessageType.RETRY, req.language)
        answers = Answers(
            fraud_code=fraud.code if fraud.enabled else None,
            code=code,
            attempts=self.calls.attempts,
            no_input_prompts=self.calls.no_input_prompts,
        )
        prompt = greeting
        # Keys before the greeting and in its first moment answer nothing the person has heard:
        # the second '#' of a "##" at the extension or operator prompt, a key already on its
        # way at answer. As the greeting's entry they would approve, with the fraud option
        # unheard.
        self._next_prompt_guard = self.calls.greeting_key_guard
        try:
            while True:
                self._step("prompting", media=list(prompt.media), language=prompt.language)
                entry = await self._ask(prompt, answers)
                then = answers.read(
                    Read(entry, self._deaf, self._prompt_not_heard, self._dropped, self._past_entry)
                )
                self._past_entry = ""
                self._dropped = then.dropped
                self._note(then, entry)
                verdict = then.verdict
                if verdict is Verdict.EVENTS_LOST:
                    await self._events_lost("prompting")
                elif verdict is Verdict.LAST_TAIL:
                    deaf = await self._read_tail()
                    then = answers.after_tail(self._dropped, deaf)
                    self._dropped, verdict = then.dropped, then.verdict
                    if verdict is Verdict.EVENTS_LOST:
                        await self._events_lost("tail")
                if self._prompt_failed and verdict is not Verdict.FRAUD:
                    # Asterisk could not play it (a file gone or unreadable since the start):
                    # nobody heard what a key would answer, so none may (a '#' on silence
                    # approved; found by review), and it would fail again. A fraud code
                    # still reports fraud: whoever pressed it knew it.
                    raise Stopped(Outcome.FAILED, "prompt_failed")
                if verdict in _CLOSINGS:
                    outcome, reason, words = _CLOSINGS[verdict]
                    if verdict is Verdict.NO_INPUT and self._voicemail:
                        outcome, reason = Outcome.NO_ANSWER, "voicemail"
                    await self._close(outcome, reason, words)
                    return
                prompt = retry + repeat if then.retry else repeat
                if then.guard:  # from the next prompt's start (_play)
                    self._next_prompt_guard = self.calls.retry_key_guard
        except (HungUp, Stopped, asyncio.CancelledError, AriError):
            # The call ends otherwise (a hang-up, a lasting loss, a request Asterisk failed,
            # such as stopping the prompt): a fraud code among the keys a guard dropped, or
            # a read cut short, is still a fraud report (found by review).
            if answers.cut_short_in_fraud(self._dropped, self._unread, self._prompt_not_heard):
                self._decide(Outcome.FRAUD_REPORTED, None)
            raise

    def _note(self, then: Next, entry: str | None) -> None:
        """Put what the rules made of a read on the timeline."""
        if then.counted:
            self._events_lost_count = 0  # a read that counted: losses in a row
        if then.step == "wrong_input":
            self._step("wrong_input", count=then.count, entry=self._shown(entry or ""))
        elif then.step == "not_taken":
            self._step("not_taken", entry=self._shown(entry or ""), reason="events_lost_before")
        elif then.step is not None:
            self._step(then.step, count=then.count)

    async def _read_tail(self) -> bool:
        """After the last wrong entry: its tail (keys still on their way, dropped as they
        come into `_dropped`) until a pause of inter_digit_timeout, at most ten of them.
        True when ARI's events may have been lost meanwhile, and the tail's keys with them:
        the wrong entry would end the call, so, as before a silence does, our mark must come
        back (found by review: a "0#" lost there ended the call denied)."""
        connection = self._connection()
        self._prompt_not_heard = True  # the tail follows the entry (a hang-up)
        self._keys_ignored_until = self._loop.time() + self.calls.inter_digit_timeout
        cap = self._loop.time() + self.calls.inter_digit_timeout * 10
        while (end := min(self._keys_ignored_until, cap)) > self._loop.time():
            await self._wait_for(lambda: False, end - self._loop.time())
        if self._deaf_since(connection):
            return True
        held, self._keys_ignored_until = self._keys_ignored_until, math.inf
        try:  # keys that come before the mark are the tail's too
            return not await self._events_still_come(connection)
        finally:
            self._keys_ignored_until = held

    async def _events_still_come(self, connection: int | None) -> bool:
        """Before a silence or a wrong entry ends the call: do this channel's events still
        reach us? A websocket that died without a close (a NAT or firewall forgetting it) is
        noticed only by its heartbeat, up to 1.5 x ari.heartbeat later, and the keys lost
        meanwhile would turn a fraud report into no_input (found by review). Asterisk sends
        our mark after the events before it, on the same connection."""
        mark = secrets.token_hex(8)
        self._mark, self._mark_seen = mark, False
        try:
            await self.ari.user_event(MARK_EVENT, {"mark": mark}, channel_id=self.channel_id)
        except AriError:
            await self._channel_check()  # HungUp if the channel is gone
            return False  # our app unknown to Asterisk: our connection is gone
        try:
            seen = await self._wait_for(lambda: self._mark_seen, MARK_WAIT)
            return seen and not self._deaf_since(connection)
        finally:
            self._mark = None

    async def _events_lost(self, during: str) -> None:
        """Keys may have been lost: the prompt is played again once we hear Asterisk again
        (a reconnect and its re-sync: Engine.ready). Still deaf after a while, or losing
        events again and again, the call cannot go on: nothing it is told would be heard."""
        self._events_lost_count += 1
        self._step("events_lost", during=during)
        if self._events_lost_count > MAX_EVENTS_LOST:
            raise Stopped(Outcome.INTERRUPTED, "asterisk_unavailable")
        ready = self.asterisk_ready
        if ready is not None and not ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(EVENTS_BACK_WAIT):
                    await ready.wait()
        if self._connection() is None:
            raise Stopped(Outcome.INTERRUPTED, "asterisk_unavailable")

    async def _ask(self, prompt: Prompt, answers: Answers) -> str | None:
        """Play `prompt` and read one entry: keys up to '#', or up to a pause of
        inter_digit_timeout. None when no key comes at all, or as soon as keys a guard
        dropped hold a fraud report (`Answers.ends_in_fraud`): the rest of the prompt and
        the wait for a key would only delay it (`Answers.read` looks at them first)."""
        self.keys.clear()
        seen = self._keys_seen
        connection = self._connection()
        self._prompt_not_heard = True  # until it has played to its end (read on a hang-up)
        try:
            return await self._read(answers, prompt, connection, seen)
        except BaseException:
            # The call ended before the keys were read: say, a '#' that came while our mark
            # was on its way, then the hang-up. Pressed in time, they are looked at then.
            self._unread = "".join(self.keys)
            raise
        finally:
            # A key that went down as the prompt ended, told of once released after it.
            self._prompt_not_heard = self._prompt_not_heard or self._down_in_prompt

    async def _read(
        self, answers: Answers, prompt: Prompt, connection: int | None, seen: int
    ) -> str | None:
        """The body of `_ask`: play the prompt, then read the entry."""
        not_heard: bool | None = None  # known once a key came during it, or it ended

        def dropped_report() -> bool:
            if not_heard is None and self._keys_seen == seen:
                return False  # it may yet be heard whole (found by review)
            # Still playing, with a key during it: it will not have been heard whole.
            unheard = not_heard is None or not_heard or self._down_in_prompt
            return answers.ends_in_fraud(self._dropped, unheard)

        ended_by_itself = await self._play(
            prompt, stop_on=lambda: bool(self.keys) or dropped_report()
        )
        # A hang-up's playback ends "failed" too: that is the hang-up, not the prompt.
        self._prompt_failed = self._playback_state == "failed" and not self._hangup_requested
        if self._prompt_failed:
            log.error(
                "call %s: a %s prompt could not be played: check the tenant's prompts",
                self.req.call_id,
                prompt.language,
            )
        self._prompt_not_heard = not_heard = self._keys_seen != seen or not ended_by_itself
        self._greeting_played = True
        self._deaf = False
        if not self.keys and not dropped_report():
            first_key = self.calls.first_digit_timeout
            await self._wait_for(lambda: bool(self.keys) or dropped_report(), first_key)
        if dropped_report():  # the read is a fraud report whatever its entry
            self._deaf = self._deaf_since(connection)
            return None
        if not self.keys:
            self._deaf = self._deaf_since(connection)
            if self._deaf or not answers.last_silence:
                return None
            # About to end the call: keys before the mark were pressed in time. Keys heard
            # before a mark that did not come back are still read (deaf): a "0#" among them
            # is a fraud report (found by review: it was thrown away with the silence).
            self._deaf = not await self._events_still_come(connection)
            if not self.keys:
                return None
        while True:
            while "#" not in self.keys and len(self.keys) < MAX_ENTRY:
                if not await self._wait_more_keys(len(self.keys), self.calls.inter_digit_timeout):
                    break
            if "#" in self.keys or len(self.keys) >= MAX_ENTRY or not answers.last_entry:
                break
            if self._deaf or self._deaf_since(connection):
                break
            count = len(self.keys)
            if not await self._events_still_come(connection):
                self._deaf = True
                break
            if len(self.keys) == count:
                break
        self._deaf = self._deaf or self._deaf_since(connection)
        if "#" in self.keys:
            entry = "".join(self.keys[: self.keys.index("#") + 1])
            self._past_entry = "".join(self.keys[self.keys.index("#") + 1 :])  # past the entry
        else:
            entry = "".join(self.keys)
        self._step("entry", entry=self._shown(entry))
        return entry

    async def _close(self, outcome: Outcome, reason: str | None, message: MessageType) -> None:
        """Decide the outcome now (it is visible at once), then say the closing words."""
        self._decide(outcome, reason)
        closing = self.req.catalog.get(message, self.req.language)
        if message is MessageType.NO_INPUT:
            closing = closing + self.req.catalog.get(MessageType.GOODBYE, self.req.language)
        with contextlib.suppress(HungUp):
            await self._play(closing, stop_on=lambda: False)

    # --- media and keys ------------------------------------------------------
    async def _play(self, prompt: Prompt, stop_on: Callable[[], bool]) -> bool:
        """Play and wait for the end, or stop it as soon as `stop_on()` holds (a key).
        Asterisk does not stop playbacks on DTMF by itself (DESIGN §8). True when it played
        to its end by itself (not stopped, not failed, not lost)."""
        self._playback_ended_at, self._down_in_prompt = None, False
        guard = self._next_prompt_guard
        if guard is not None:
            # Keys received before this prompt is asked for answer an earlier one: drop them
            # (and their tail) now, whatever the guard's length.
            self._handle_queued()
        playback_id = str(uuid.uuid4())
        self.playback_id = playback_id
        self.playback_over = False
        self._playback_state = None
        self.router.add_playback(playback_id, self.mailbox)
        try:
            connection = self._connection()
            await self._on_channel(
                self.ari.play(self.channel_id, playback_id, prompt.playable, lang=prompt.language)
            )
            self.playback_created = playback_id
            if self._deaf_since(connection):
                await self._playback_check(playback_id)
            # A guard runs from the prompt's PlaybackStarted (`_handle`), not from Asterisk's
            # answer to the request: that only queues it, and a loaded Asterisk may start it
            # later than the guard lasts; a '#' before it would approve a greeting nobody
            # heard (found by review). Until then keys are dropped.
            await self._wait_for(lambda: self.playback_over or stop_on(), PLAYBACK_TIMEOUT)
            if not self.playback_over:
                await self.ari.stop_playback(playback_id)
                return False
            return self._playback_state == "done"
        finally:
            if guard is not None and self._next_prompt_guard is not None:
                # Never heard to start (failed at once, its events lost, stopped by a key
                # too soon to tell): the guard runs from now.
                self._start_guard(self._loop.time())
            self.router.remove_playback(playback_id)
            self.playback_id = self.playback_created = None
            self.playback_over = True

    async def _playback_check(self, playback_id: str) -> None:
        """Events were lost while Asterisk made the playback (its PlaybackStarted, maybe its
        end): a re-sync meanwhile could not ask about one not made yet (found by review).
        Gone: it is over. Still playing: its guard, if waiting for its start, runs from now."""
        try:
            await self.ari.get_playback(playback_id)
        except AriNotFound:
            self.playback_over = True
        except AriError:
            pass  # not connected: the reconnect's re-sync asks about it
        else:
            self._start_guard(self._loop.time())

    def _start_guard(self, at: float) -> None:
        """The prompt with a guard started at `at` (loop time, as keys are judged): keys down
        before its guard ends are dropped."""
        guard = self._next_prompt_guard
        if guard is not None:
            self._next_prompt_guard = None
            self._keys_ignored_until = max(self._keys_ignored_until, at + guard)

    def _handle_queued(self) -> None:
        """Handle the events already received; raises HungUp if the channel is gone."""
        mailbox = self.mailbox
        while not mailbox.empty():
            self._handle(mailbox.get_nowait())
        if self.gone is not None:
            raise self.gone

    async def _wait_key(self, key: str, timeout: float) -> bool:
        return await self._wait_for(lambda: key in self.keys, timeout)

    async def _wait_more_keys(self, count: int, timeout: float) -> bool:
        return await self._wait_for(lambda: len(self.keys) > count, timeout)

    async def _idle(self, seconds: float) -> None:
        """Let time pass while still hearing about the channel (a hang-up ends the wait)."""
        await self._wait_for(lambda: False, seconds)

    async def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """For what Asterisk must tell while setting the call up (StasisStart, the answer).
        Not told in time, and we could not hear it (no connection, or one that died unnoticed
        and whose heartbeat has not said so yet: our mark does not come back), the call is
        interrupted, not failed: not its fault (found by review)."""
        connection = self._connection()
        if not await self._wait_for(done, timeout):
            deaf = self._connection() is None or not await self._events_still_come(connection)
            if done():  # it came while our mark was on its way (found by review)
                return
            if deaf:
                raise Stopped(Outcome.INTERRUPTED, "asterisk_unavailable")
            raise Stopped(Outcome.FAILED, what.replace(" ", "_"))

    def _connection(self) -> int | None:
        return 0 if self.connection is None else self.connection()

    def _deaf_since(self, connection: int | None) -> bool:
        """ARI's events were lost at some time since `connection` was read (now or then)."""
        return connection is None or self._connection() != connection

    async def _wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Handle this call's events until `done()` or the time is up (False).
        Raises HungUp as soon as the channel is gone."""
        deadline = self._loop.time() + timeout
        mailbox = self.mailbox
        while True:
            if self.gone is not None:
                raise self.gone
            if done():
                return True
            if not await mailbox.wait(deadline):
                return False
            self._handle(mailbox.get_nowait())

    # --- events ----------------------------------------------------------------
    def _note_down(self, event: Event, held: float) -> None:
        """A key that went down before the last playback ended (both by Asterisk's clock)
        came during that prompt, though told of after its end: "0", a pause, then '#' as
        the retry prompt ends is the fraud code, not a yes to a prompt heard whole."""
        ended, at = self._playback_ended_at, _asterisk_seconds(event)
        if ended is not None and at is not None and at - held < ended:
            self._down_in_prompt = True

    def _pressed(self, event: Event, now: float) -> float:
        """When Asterisk got `event`, on our loop's clock, at the latest: its timestamp plus
        the smallest lag of the call's recent events (`now` if unstamped). A key guard judges
        by it: a key pressed in a guard and handled after it (a busy event loop, a slow
        websocket) would otherwise count, the second '#' of a "##" approving a greeting
        nobody heard (found by review). Only differences of Asterisk's times count, so its
        clock need not match ours. Never later than `now`; earlier than the key was really
        pressed only if Asterisk's clock went back (by less than KEY_LATE_LIMIT, within
        KEY_LAG_WINDOW, by at most that much; by more, for keys of the next KEY_LATE_LIMIT
        seconds): a key that counts may be dropped then, never the other way round."""
        at = _asterisk_seconds(event)
        if at is None:
            return now
        lag = now - at
        lags = self._lags
        while lags and lags[0][0] < now - KEY_LAG_WINDOW:
            lags.popleft()
        known = min((seen for _, seen in lags), default=lag)
        if lag - known > KEY_LATE_LIMIT:
            # Asterisk's clock was set back, or this event was held up that long (a backlog
            # of events, a stalled loop): nobody can tell yet. The lag is learnt again from
            # it, but keys of the next KEY_LATE_LIMIT seconds are judged by the old one too,
            # the earlier: a held-up key pressed in a guard is dropped (found by review: it
            # approved), and after a real set-back a key is pressed again, once.
            self._lag_doubt = (now + KEY_LATE_LIMIT, known)
            lags.clear()
            known = lag
        lags.append((now, lag))
        doubt = self._lag_doubt
        if doubt is not None and event.type == "ChannelDtmfReceived":
            if now <= doubt[0]:
                known = min(known, doubt[1])
            else:
                self._lag_doubt = None
        return at + min(known, lag)

    def _duplicate(self, event: Event, held: float) -> bool:
        """The same press told twice (KEY_REPEAT_GAP): counted, "0#" read "00##" and a fraud
        report cut by a pause turned into a yes at the retry (found by review). Only keys
        Asterisk gives a held time for are judged: without it, a press has no length."""
        at = _asterisk_seconds(event)
        if at is None:
            return False
        last, self._last_key = self._last_key, (event.digit, at)
        if held <= 0 or last is None or last[0] != event.digit:
            return False
        released = last[1]
        return at - released < KEY_REPEAT_GAP or at - held <= released - KEY_REPEAT_GAP

    def _handle(self, event: Event) -> None:
        kind = event.type
        now = self._loop.time()
        pressed = self._pressed(event, now)  # every stamped event teaches the lag
        if kind == "ChannelDtmfReceived":
            digit = event.digit
            shown = "*" if self._masking_keys and digit != "#" else digit
            held = min(event.duration_ms / 1000, KEY_HELD_LIMIT)
            if self._duplicate(event, held):
                self._step("key_duplicate", digit=shown, asterisk_at=event.timestamp)
                return
            self._keys_seen += 1
            self._voicemail = False  # a voicemail presses no key: a person is there
            self._forget_talk()
            # Pressed in a guard and released after it is still pressed in it: the second
            # '#' of a "##" held through the greeting's guard would approve (found by review).
            down = pressed - held
            self._note_down(event, held)
            if self._next_prompt_guard is not None or down < self._keys_ignored_until:
                tail_end = now + self.calls.inter_digit_timeout
                self._keys_ignored_until = max(self._keys_ignored_until, tail_end)
                self._dropped += digit
                self._step("key_ignored", digit=shown, asterisk_at=event.timestamp)
                return
            self.keys.append(digit)
            # Asterisk's own time of the key beside ours: how long we took to act on it.
            self._step("key", digit=shown, asterisk_at=event.timestamp)
        elif kind == "ChannelStateChange":
            self._set_state(event.channel_state, event.timestamp)
        elif kind == "ChannelUserevent":
            name = event.data.get("eventname")
            userevent = event.data.get("userevent") or {}
            if self._mark is not None and name == MARK_EVENT:
                self._mark_seen = self._mark_seen or userevent.get("mark") == self._mark
            elif name == VOICEMAIL_MARK:
                self._voicemail_checked(userevent.get("mark"), now)
        elif kind == "PlaybackStarted":
            if event.playback_id == self.playback_id:
                self._start_guard(pressed)  # by Asterisk's clock, as the keys
        elif kind == "PlaybackFinished":
            if event.playback_id == self.playback_id:
                self.playback_over = True
                self._playback_ended_at = _asterisk_seconds(event)
                state = event.playback.get("state")
                self._playback_state = state
                # A prompt the far end hung up on ends "failed": not a broken prompt, and the
                # hang-up is on the timeline already (found by an administrator's read).
                if state != "done" and not self._hangup_requested:
                    # Asterisk names the media it stopped at: the extension's digits, maybe.
                    media = _shown_media(event.playback.get("media_uri"))
                    self._step("playback_" + str(state), media=media)
        elif kind == "StasisStart":
            self.in_stasis = True
            self._set_state(event.channel_state, event.timestamp)
        elif kind == "ChannelDestroyed":
            self.gone = HungUp(event.cause, asterisk_stopped=self._asterisk_going)
        elif kind == "ChannelHangupRequest":
            self._hangup_requested = True
            if asterisk_going(event):
                self._asterisk_going = True
        elif kind == "ChannelCallerId":
            number = str(event.channel.get("caller", {}).get("number", ""))
            if self._is_transfer_hint(number):
                self._step("caller_id_changed", number=self._masked_caller(number))
        elif kind == "ChannelTalkingStarted":
            self._step("talking_started")
            self._talk_started(now)
        elif kind == "ChannelTalkingFinished":
            self._forget_talk()
            self._step("talking_finished", duration_ms=event.data.get("duration"))
        elif kind == VOICEMAIL_HANG_UP:
            if self._voicemail and self.outcome is None:  # no key in the grace
                raise Stopped(Outcome.NO_ANSWER, "voicemail")
        elif kind == RESYNC_EVENT:
            self._resynced(event)

    # --- voicemail -----------------------------------------------------------------
    def _talk_started(self, now: float) -> None:
        """The far end talks: if it goes on, its audio is sampled, then it is judged."""
        answered = self._answered_at
        if self._voicemail_mode == "off" or self._keys_seen or answered is None:
            return
        if now - answered > VOICEMAIL_START:
            return  # not what answered the call
        self._forget_talk()
        talk = (now, self._connection())
        self._talk = talk
        sample_at = VOICEMAIL_TALK + VOICEMAIL_SILENCE_MS / 1000 - VOICEMAIL_RTP_SAMPLE
        self._voicemail_timer = self._loop.call_later(sample_at, self._talk_lasted, talk)

    def _forget_talk(self) -> None:
        """The talk ended (or a key came): nothing of it is judged."""
        self._talk = None
        self._voicemail_mark = None
        if self._voicemail_timer is not None:
            self._voicemail_timer.cancel()
            self._voicemail_timer = None
        if self._voicemail_check is not None:
            self._voicemail_check.cancel()
            self._voicemail_check = None

    def _talk_lasted(self, talk: tuple[float, int | None]) -> None:
        if self._talk is talk and self.outcome is None:
            self._voicemail_check = asyncio.create_task(self._check_audio(talk))

    async def _check_audio(self, talk: tuple[float, int | None]) -> None:
        """Sample the far end's audio, then send the mark the talk is judged on."""
        try:
            before = await self.ari.rtp_received(self.channel_id)
            await asyncio.sleep(VOICEMAIL_RTP_SAMPLE)
            received = await self.ari.rtp_received(self.channel_id) - before
            if self._talk is not talk:
                return
            mark = secrets.token_hex(8)
            self._voicemail_mark = (mark, received)
            await self.ari.user_event(VOICEMAIL_MARK, {"mark": mark}, channel_id=self.channel_id)
        except AriError:
            return  # gone, or Asterisk not answering: no verdict (a mark lost: none either)
        except Exception:  # a side task: nobody would read its exception
            log.exception("call %s: voicemail check failed", self.req.call_id)

    def _voicemail_checked(self, mark: object, now: float) -> None:
        pending, talk = self._voicemail_mark, self._talk
        if pending is None or talk is None or pending[0] != mark or self.outcome is not None:
            return  # the talk ended, or a key came, before the mark: a person
        received = pending[1]
        self._voicemail_check = None  # its request may still be answered: let it end
        self._forget_talk()
        if received < VOICEMAIL_RTP_PACKETS or self._deaf_since(talk[1]):
            # Its end may have been silent (no audio) or lost with ARI's events: not sure.
            self._step("talk_not_judged", rtp_packets=received)
            return
        self._voicemail = True
        self._step("voicemail_detected", talking_ms=round((now - talk[0]) * 1000))
        if self._voicemail_mode == "hang_up":
            hang_up = synthetic(VOICEMAIL_HANG_UP, self.channel_id)
            self._voicemail_hang_up = self._loop.call_later(
                VOICEMAIL_KEY_GRACE, self.mailbox.put_nowait, hang_up
            )

    def _is_transfer_hint(self, number: str) -> bool:
        """A caller-id update hints at a transfer only once answered, and only when it
        names another line than the one dialled (phones announce their own number as they
        ring: found by review)."""
        digits = "".join(c for c in number if c.isdigit())
        if self.channel_state != "Up" or not digits:
            return False
        dialled = self.req.plan.number
        significant = dialled.digits[len(str(dialled.country_code)) :]  # without +1, +33...
        # In any format: E.164, national (0 1 23...), international (00 33 1 23..., 011 1...).
        same = len(digits) >= MIN_NUMBER_DIGITS and (
            dialled.digits.endswith(digits) or digits.endswith(significant)
        )
        return not same

    def _masked_caller(self, number: str) -> str:
        """A caller id for the timeline. A short one is an internal line, usually the desk's
        extension (what a transfer announces): masked whole, as extensions are everywhere;
        mask_text would show its last two digits."""
        digits = "".join(c for c in number if c.isdigit())
        if len(digits) < MIN_NUMBER_DIGITS or digits == self.req.plan.extension:
            return EXTENSION_MASK
        return mask_text(number)

    def _set_state(self, state: str, asterisk_at: str = "") -> None:
        if state == self.channel_state:
            return
        self.channel_state = state
        if state == "Ringing":
            self._step("ringing", asterisk_at=asterisk_at)
        elif state == "Up":
            self._answered_at = self._loop.time()
            self._step("answered", asterisk_at=asterisk_at)

    def _resynced(self, event: Event) -> None:
        """After a reconnect: what Asterisk says now about our channel and playback."""
        if event.data.get("gone"):
            self.gone = HungUp(0, lost=True)
            return
        if lost := event.data.get("lost_before_stasis"):
            # About the channel of the attempt it asked about: a second re-sync's 404 for
            # a channel already made again is stale (found by review: it took the new
            # channel for lost, and its next create clashed with the same id).
            if lost == self._attempts:
                self._lost_before_stasis = True
            return
        self.in_stasis = True
        # The snapshot was taken before events the websocket may already have delivered
        # (the answer, say): it can move the call forward, never back.
        state = event.channel_state
        if _STATE_ORDER.get(state, 0) > _STATE_ORDER.get(self.channel_state, 0):
            self._set_state(state)
        resynced_playback = event.data.get("resync_playback")
        if resynced_playback is not None and resynced_playback == self.playback_id:
            if event.data.get("playback_gone"):
                self.playback_over = True
            else:  # its PlaybackStarted may be among the events lost: its guard runs from now
                self._start_guard(self._loop.time())

    async def resync(self) -> None:
        """Ask Asterisk where this call stands and tell the flow (events were lost while the
        websocket was down). Runs in the reconnect hook's task, not the flow's. What it finds
        goes to the leg it asked about: a chain's next leg has a mailbox of its own."""
        channel_id, mailbox = self.channel_id, self.mailbox
        # Before asking: a channel made after the GET is not lost; nor is a playback whose
        # request is still on its way (its GET could be answered 404 before it exists, and
        # the prompt taken for over while it plays: found by review).
        created, attempt = self._created, self._attempts
        playback = self.playback_created
        data: dict[str, Any] = {}
        try:
            channel = await self.ari.get_channel(channel_id)
        except AriNotFound:
            if self.in_stasis:
                data["gone"] = True
            elif created:
                data["lost_before_stasis"] = attempt
            else:
                return  # not created yet: nothing was missed
        else:
            data["channel"] = channel
            if playback is not None:
                # Not "playback": Event reads that key as a playback object.
                data["resync_playback"] = playback
                try:
                    await self.ari.get_playback(playback)
                except AriNotFound:
                    data["playback_gone"] = True
        data.setdefault("channel", {"id": channel_id})
        mailbox.put_nowait(synthetic(RESYNC_EVENT, channel_id, **data))

    async def _on_channel(self, request: Awaitable[T]) -> T:
        """A request about our channel; when Asterisk answers as if the channel were gone
        or going (404, 409, 412), HungUp if it is (`_channel_check`), else that error."""
        try:
            return await request
        except (AriNotFound, AriConflict, AriPreconditionFailed) as exc:
            await self._channel_check(refused=not isinstance(exc, AriNotFound))
            raise

    async def _channel_check(self, *, refused: bool = False) -> None:
        """A request about our channel failed as if it were gone: is it? Raises HungUp if
        it is; returns if it is still there (the caller raises its own error then)."""
        try:
            await self.ari.get_channel(self.channel_id)
        except AriNotFound:
            # Its ChannelDestroyed (with the real cause) may be on its way.
            await self._wait_for(lambda: False, 1.0)  # raises HungUp when it comes
            self.gone = HungUp(0, lost=True)
            raise self.gone from None
        if refused or self._hangup_requested:
            # Refused (409, 412) by a channel that is being hung up, or has left our app on
            # its way out: a far end hanging up as we asked, not a failure (found by review).
            await self._wait_for(lambda: False, 1.0)  # raises HungUp when it goes

    # --- ending ------------------------------------------------------------------
    def _hung_up(self, gone: HungUp) -> None:
        if self.outcome is not None:
            return
        if gone.asterisk_stopped:
            self._decide(Outcome.INTERRUPTED, "asterisk_stopped")
        elif gone.lost:
            self._decide(Outcome.INTERRUPTED, "channel_lost")
        elif self.channel_state != "Up":
            self._decide(*unanswered_outcome(gone.cause))
        elif self._voicemail and self._greeting_played:  # the voicemail ended its recording
            # (a hang-up during the first greeting may be a person's no: denied, below)
            self._decide(Outcome.NO_ANSWER, "voicemail")
        elif self._reached_greeting:
            self._decide(Outcome.DENIED, "hung_up")
        else:
            # Answered by a switchboard that then let go (an extension that does not exist
            # or is not registered, an operator who did not transfer): the person never heard
            # the question, so they did not deny anything; they were not reached.
            self._decide(Outcome.UNREACHABLE, "hung_up_before_greeting")

    def _decide(self, outcome: Outcome, reason: str | None, *, ends_chain: bool = False) -> None:
        """This leg's outcome; the call's too, and said at once, unless the chain goes on
        with another leg (fallback.next_leg). `ends_chain` (a stop, a cancel): the call's
        outcome whatever the chain, replacing a leg's that was waiting for the next leg."""
        if self.outcome is not None:
            if self._pending_leg is None or not ends_chain:
                return
            self._pending_leg = None
        elif not ends_chain and self._stop is None:
            after = next_leg(self._legs, outcome, reason)
            if after is not None:
                self.outcome, self.reason = outcome, reason
                self._pending_leg, self._legs = after
                return
        self.outcome = outcome
        self.reason = reason
        self.observer.outcome(outcome, reason)

    async def _finish(self) -> None:
        """Hang up our channel (whatever happened) and wait until Asterisk let it go."""
        self._forget_talk()
        if self._voicemail_hang_up is not None:
            self._voicemail_hang_up.cancel()
        try:
            if not self.dialled:  # ended while waiting for a line: nothing to hang up
                return
            answered = False
            for tries_left in reversed(range(HANGUP_TRIES)):
                if self.gone is not None:
                    break
                answered = await self._hang_up()
                if answered or not tries_left:
                    break
                if self._connection() is None:  # the next connect's sweep hangs it up
                    break
            details: dict[str, Any] = {"cause": self.gone.cause if self.gone else None}
            if self.gone is None and not answered:
                # Asterisk never took our hang-up: the channel ends by the next connect's
                # sweep, or by its TIMEOUT(absolute). The timeline says so (found by review).
                details["unconfirmed"] = True
            self._step("hung_up", **details)
        finally:
            self.router.remove_channel(self.channel_id)

    async def _hang_up(self) -> bool:
        """Ask Asterisk to hang up our channel and wait (HANGUP_TIMEOUT) until it is gone.
        False when Asterisk did not answer the request (a loaded one times it out): `_finish`
        asks again, or the callee would stay on the line until the channel's
        TIMEOUT(absolute) (found by review)."""
        answered, wait = True, HANGUP_TIMEOUT
        try:
            if not await self.ari.hangup(self.channel_id):
                # Gone already (404): its ChannelDestroyed, if any, is on its way; after an
                # Asterisk restart none comes, and the full wait held the call's line 5 s
                # (found by review).
                wait = GONE_WAIT
        except AriUnavailable:
            answered = False
        except AriError:
            pass
        deadline = self._loop.time() + wait
        while self.gone is None and self.in_stasis:
            if not await self.mailbox.wait(deadline):
                break
            event = self.mailbox.get_nowait()
            if event.type == "ChannelDestroyed":
                self.gone = HungUp(event.cause)
            elif event.type == RESYNC_EVENT:  # Asterisk restarted: its ChannelDestroyed
                self._resynced(event)  # never comes (found by review)
        return answered

    # --- helpers -----------------------------------------------------------------
    def _step(self, event: str, **details: Any) -> None:
        self.observer.step(event, details)

    def _shown(self, entry: str) -> str:
        if not self._masking_keys:
            return entry
        return "".join("*" if c != "#" else c for c in entry)
