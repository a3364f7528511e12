"""A call's fallback chain as the flow runs it, against the scripted fake Asterisk of
test_flow.py: each leg on a channel of its own, one outcome for the call, every channel hung up.
(The sandbox runs real chains: tests/integration/test_fallback.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from phonemfa.ari import AriNotFound, EventRouter
from phonemfa.fallback import Fallback, LegKind
from phonemfa.flow import CallFlow, CallRequest
from phonemfa.lines import Lines
from phonemfa.numbers import parse_number
from phonemfa.outcomes import Outcome
from phonemfa.policy import DialMode, plan_call
from tests.unit.test_flow import (
    CATALOG,
    CONFIG,
    PROFILE,
    FakeAsterisk,
    Recorder,
    assert_ended_cleanly,
    tenant,
)

MAIN = "+1 425 555 0130"
BACKUP = "+1 425 555 0100"
SECOND = "+1 425 555 0177"
OFFICE = "+1 425 555 0110x5678"

Script = Callable[[CallFlow, FakeAsterisk, str, dict[str, Any], Recorder], None]


def plan(phone: str, operator: bool = False) -> Any:
    number = parse_number(phone, "US")
    if operator:
        number = parse_number(phone.replace("x", "x@"), "US")
    return plan_call(number, tenant(), CONFIG.trunk, [PROFILE])


async def chain(
    phone: str,
    legs: list[Fallback],
    behaviours: dict[str, tuple[bool, int]],
    script: Script | None = None,
    *,
    next_leg_refused: Callable[[], tuple[Outcome, str] | None] | None = None,
    lines: Lines | None = None,
    asterisk_ready: asyncio.Event | None = None,
    fake_class: type[FakeAsterisk] = FakeAsterisk,
) -> tuple[Outcome, str | None, FakeAsterisk, Recorder]:
    """Run a call with these legs after the first; `behaviours` says how each number answers
    (by its digits: (answers, cause when it does not))."""
    router = EventRouter()
    fake = fake_class(router)
    fake.behaviours = behaviours
    recorder = Recorder()
    request = CallRequest(
        "call-1", plan(phone), tenant(), CATALOG, "en", dial_timeout=5, fallbacks=tuple(legs)
    )
    flow = CallFlow(
        request,
        fake,  # type: ignore[arg-type]
        router,
        recorder,
        next_leg_refused=next_leg_refused,
        lines=lines,
        asterisk_ready=asterisk_ready,
    )
    if script is not None:
        recorder.on_step = lambda event, details: script(flow, fake, event, details, recorder)
    outcome = await asyncio.wait_for(flow.run(), 10)
    assert_ended_cleanly(outcome, fake, router, recorder)
    assert len(set(fake.channels)) == len(fake.channels), "a channel id was used twice"
    return outcome, recorder.outcomes[0][1], fake, recorder


def backup(phone: str, i: int = 0) -> Fallback:
    return Fallback(LegKind.BACKUP, plan(phone), f"backup_phones[{i}]")


def press_at(step: str, keys: str, times: int = 1) -> Script:
    def script(flow: CallFlow, fake: FakeAsterisk, event: str, _: Any, rec: Recorder) -> None:
        if event == step and rec.count(step) == times:
            fake.press(keys)

    return script


def fallbacks(rec: Recorder) -> list[dict[str, Any]]:
    return [details for event, details in rec.timeline if event == "fallback"]


async def test_a_busy_number_falls_back_to_the_backup_which_approves() -> None:
    got, reason, fake, rec = await chain(
        MAIN, [backup(BACKUP)], {"4255550130": (False, 17)}, press_at("prompting", "#")
    )
    assert (got, reason) == (Outcome.APPROVED, None)
    assert [e for e in fake.sent("create")] == [
        "PJSIP/+14255550130@trunk",
        "PJSIP/+14255550100@trunk",
    ]
    assert fallbacks(rec) == [
        {"after": "busy", "reason": "cause_17", "to": "backup", "field": "backup_phones[0]"}
    ]
    events = [event for event, _ in rec.timeline]
    assert events.count("dialing") == 2 and events.count("hung_up") == 2
    # In order: the first leg hung up, then the fallback, then the second leg's dial.
    first_hang_up = events.index("hung_up")
    assert events[first_hang_up + 1 : first_hang_up + 3] == ["fallback", "dialing"]


async def test_an_answer_on_the_first_leg_ends_the_chain() -> None:
    for script, expected in (
        (press_at("prompting", "#"), Outcome.APPROVED),
        (press_at("prompting", "0#"), Outcome.FRAUD_REPORTED),
        (None, Outcome.NO_INPUT),  # reached, and silent: not a reason to ring another phone
    ):
        got, _, fake, rec = await chain(MAIN, [backup(BACKUP)], {}, script)
        assert got is expected
        assert len(fake.sent("create")) == 1
        assert fallbacks(rec) == []


async def test_every_leg_reaching_nobody_ends_with_the_last_legs_outcome() -> None:
    behaviours = {"4255550130": (False, 17), "4255550100": (False, 19), "4255550177": (False, 1)}
    got, reason, fake, rec = await chain(MAIN, [backup(BACKUP), backup(SECOND, 1)], behaviours)
    assert (got, reason) == (Outcome.UNREACHABLE, "cause_1")
    assert len(fake.sent("create")) == 3
    assert [(f["after"], f["field"]) for f in fallbacks(rec)] == [
        ("busy", "backup_phones[0]"),
        ("no_answer", "backup_phones[1]"),
    ]


async def test_an_auto_attendant_that_misses_is_tried_through_its_operator() -> None:
    operator = Fallback(LegKind.OPERATOR, plan(OFFICE, operator=True), "phone")
    assert operator.plan.mode is DialMode.OPERATOR
    # Nobody answers the extension prompt; the operator leg's prompt gets '#', then the
    # greeting '#'.
    script = press_at("operator_prompt", "#")

    def both(flow: CallFlow, fake: FakeAsterisk, event: str, details: Any, rec: Recorder) -> None:
        script(flow, fake, event, details, rec)
        if event == "prompting":
            fake.press("#")

    got, reason, fake, rec = await chain(OFFICE, [operator, backup(BACKUP)], {}, both)
    assert (got, reason) == (Outcome.APPROVED, None)
    assert fallbacks(rec) == [
        {
            "after": "no_input",
            "reason": "extension_did_not_answer",
            "to": "operator",
            "field": "phone",
        }
    ]
    assert fake.sent("create") == ["PJSIP/+14255550110@trunk"] * 2
    assert fake.sent("dtmf") == ["5678"]  # keyed in on the first leg only


async def test_a_busy_main_line_skips_its_operator() -> None:
    operator = Fallback(LegKind.OPERATOR, plan(OFFICE, operator=True), "phone")
    got, _, fake, rec = await chain(
        OFFICE, [operator, backup(BACKUP)], {"4255550110": (False, 17), "4255550100": (True, 0)},
        press_at("prompting", "#"),
    )  # fmt: skip
    assert got is Outcome.APPROVED
    assert [f["to"] for f in fallbacks(rec)] == ["backup"]
    assert fake.sent("create")[-1] == "PJSIP/+14255550100@trunk"


async def test_a_stop_while_a_leg_ends_dials_no_other_leg() -> None:
    def cancel_at_hang_up(flow: CallFlow, *_: Any) -> None:
        if _[1] == "hung_up":
            flow.stop(Outcome.CANCELLED, "cancelled_by_request")

    got, reason, fake, rec = await chain(
        MAIN, [backup(BACKUP)], {"4255550130": (False, 17)}, cancel_at_hang_up
    )
    assert (got, reason) == (Outcome.CANCELLED, "cancelled_by_request")
    assert len(fake.sent("create")) == 1
    assert fallbacks(rec) == []


async def test_a_stop_on_a_later_leg_ends_the_call_there() -> None:
    def cancel_on_second_dial(flow: CallFlow, fake: FakeAsterisk, event: str, *_: Any) -> None:
        if event == "ringing" and len(fake.channels) == 2:
            flow.stop(Outcome.CANCELLED, "cancelled_by_request")

    got, reason, fake, _ = await chain(
        MAIN, [backup(BACKUP), backup(SECOND, 1)], {"4255550130": (False, 17)},
        cancel_on_second_dial,
    )  # fmt: skip
    assert (got, reason) == (Outcome.CANCELLED, "cancelled_by_request")
    assert len(fake.sent("create")) == 2


async def test_no_next_leg_when_the_service_says_so() -> None:
    # A shutdown (Engine.dialling), or the user blocked by a fraud report on another call.
    for refused in ((Outcome.INTERRUPTED, "shutdown"), (Outcome.BLOCKED, "user_blocked")):
        got, reason, fake, rec = await chain(
            MAIN,
            [backup(BACKUP)],
            {"4255550130": (False, 17)},
            next_leg_refused=lambda r=refused: r,
        )
        assert (got, reason) == refused
        assert len(fake.sent("create")) == 1
        assert fallbacks(rec) == []


async def test_a_cancel_while_a_leg_hangs_up_still_ends_the_call_in_one_outcome() -> None:
    """Cancelled from outside (not stop()) while the leg whose outcome waits for the next
    leg is hanging up: no next leg, and the call's outcome is said all the same."""

    class SlowHangUp(FakeAsterisk):
        async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
            self.requests.append(("hangup", reason))
            return True  # ...and its ChannelDestroyed takes its time

    router = EventRouter()
    fake = SlowHangUp(router)
    recorder = Recorder()
    request = CallRequest(
        "call-1", plan(OFFICE), tenant(), CATALOG, "en", 5, fallbacks=(backup(BACKUP),)
    )
    flow = CallFlow(request, fake, router, recorder)  # type: ignore[arg-type]
    task = asyncio.create_task(flow.run())
    async with asyncio.timeout(5):
        while not fake.sent("hangup"):  # the auto attendant's leg missed: it is hung up
            await asyncio.sleep(0.01)
    assert flow.chain_pending and recorder.outcomes == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.outcomes == [(Outcome.CANCELLED, "cancelled")]
    assert len(fake.sent("create")) == 1


async def test_the_next_leg_waits_for_asterisk_without_holding_a_line() -> None:
    lines = Lines(1, queue_timeout=10)
    ready = asyncio.Event()
    ready.set()
    in_use: list[int] = []

    def script(flow: CallFlow, fake: FakeAsterisk, event: str, _: Any, rec: Recorder) -> None:
        if event == "hung_up" and rec.count("hung_up") == 1:
            ready.clear()  # ARI lost between the two legs
        elif event == "waiting_for_asterisk":
            in_use.append(lines.in_use)
            fake.later(0.05, ready.set)
        elif event == "prompting":
            fake.press("#")

    got, _, fake, rec = await chain(
        MAIN, [backup(BACKUP)], {"4255550130": (False, 17)}, script, lines=lines,
        asterisk_ready=ready,
    )  # fmt: skip
    assert got is Outcome.APPROVED
    assert in_use == [0]  # given back while waiting, taken again to dial
    assert lines.in_use == 0 and len(fake.sent("create")) == 2


async def test_a_late_key_of_the_last_leg_does_not_count_on_the_next() -> None:
    """The auto attendant's leg hangs up; a '#' its channel sent late arrives while the next
    leg's greeting plays: it is not the backup's person's key."""
    state: dict[str, str] = {}

    def script(flow: CallFlow, fake: FakeAsterisk, event: str, _: Any, rec: Recorder) -> None:
        if event == "dialing" and rec.count("dialing") == 1:
            state["first"] = flow.channel_id
        if event == "prompting" and rec.count("prompting") == 1:
            old = state["first"]
            fake.later(0.01, lambda: fake.emit("ChannelDtmfReceived", digit="#",
                                               channel={"id": old, "state": "Up"}))  # fmt: skip

    got, reason, _, rec = await chain(OFFICE, [backup(BACKUP)], {}, script)
    assert (got, reason) == (Outcome.NO_INPUT, "no_key_pressed")
    assert [d["after"] for d in fallbacks(rec)] == ["no_input"]
    assert rec.count("key") == 0


async def test_an_event_queued_behind_a_legs_end_stays_with_that_leg() -> None:
    """Events of a channel that come after its hang-up, before its mailbox is let go, are
    never read by the next leg (which has a mailbox of its own)."""

    def script(flow: CallFlow, fake: FakeAsterisk, event: str, _: Any, rec: Recorder) -> None:
        if event == "answered" and rec.count("answered") == 1:
            old = flow.channel_id

            def hang_up_then_key() -> None:
                fake.destroy(16)
                fake.emit("ChannelDtmfReceived", digit="#", channel={"id": old, "state": "Up"})

            fake.later(0, hang_up_then_key)

    # An auto attendant that lets go at once (a direct call would be at its greeting).
    got, reason, _, rec = await chain(OFFICE, [backup(BACKUP)], {}, script)
    assert [d["reason"] for d in fallbacks(rec)] == ["hung_up_before_greeting"]
    assert (got, reason) == (Outcome.NO_INPUT, "no_key_pressed")
    assert rec.count("key") == 0 and rec.count("key_ignored") == 0


class HangsUpAsTheDigitsGo(FakeAsterisk):
    """The attendant hangs up just as our digits reach Asterisk: the request fails (404),
    its ChannelDestroyed is still on its way."""

    async def send_dtmf(self, channel_id: str, dtmf: str, **kw: Any) -> None:
        self.requests.append(("dtmf", dtmf))
        if self.channel == self.channels[0]:
            self.gone = True
            self.later(0.02, lambda: self.emit("ChannelDestroyed", cause=16))
            raise AriNotFound("POST", "/dtmf", 404, "Channel not found")


async def test_an_attendant_hanging_up_as_the_digits_go_is_a_hang_up_not_a_failure() -> None:
    # Found by review: the 404 ended the call `failed` and the backup was never dialled.
    got, reason, fake, rec = await chain(
        OFFICE, [backup(BACKUP)], {}, fake_class=HangsUpAsTheDigitsGo
    )
    assert [d["reason"] for d in fallbacks(rec)] == ["hung_up_before_greeting"]
    assert len(fake.channels) == 2
    assert (got, reason) == (Outcome.NO_INPUT, "no_key_pressed")
