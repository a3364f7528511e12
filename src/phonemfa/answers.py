"""How a person's keys at the verification prompt are read: approved, fraud, asked again,
denied or silent. Pure: `CallFlow._verify` plays the prompts, reads one entry at a time
(`Read`), and does what `Answers.read` says (`Next`); the rules live here, with no I/O and no
clock, so that each can be tested on its own (tests/unit/test_answers.py).

The rules lean one way: never approve what may be a fraud report.
* A fraud code is never dropped. Keys a key guard dropped (the tail of a wrong entry, keys
  before a prompt was heard) are read as entries, each up to its '#': one that is the fraud
  code reports fraud, and so does the first when it completes a fraud code begun before.
  They are read as entries, not searched: "50#" (a number-matching code) holds no "0#".
* A fraud start ("0", then a pause past the inter-digit time-out) is carried into the next
  entry while the prompt after it was not heard whole: "0", then "#" is a fraud report, and
  a bare '#' after a start that did not match ("9", then "9#") is no yes.
* After ARI's events were lost (`Read.deaf`), keys may be missing from the entry: only a
  fraud report stands, anything else is asked again and counts for nothing. Until a prompt
  is heard whole after a loss, a '#' is no yes either: a lost "0" may have begun the fraud
  code (`not_taken`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    APPROVE = "approve"
    FRAUD = "fraud"
    NO_INPUT = "no_input"  # silent once too often
    DENY = "deny"  # wrong once too often (after its tail: `Answers.after_tail`)
    ASK_AGAIN = "ask_again"  # `Next` says with which prompt
    EVENTS_LOST = "events_lost"  # wait for ARI's events to come back, then ask again
    # The last wrong entry: read its tail (keys still on their way, dropped as they come),
    # then `Answers.after_tail` says FRAUD, DENY, or one prompt more for a fraud code begun.
    LAST_TAIL = "last_tail"


@dataclass(frozen=True)
class Read:
    """One read at the prompt, as the flow saw it."""

    entry: str | None  # keys up to '#' (or a pause); None: no key at all
    deaf: bool  # ARI's events were lost during it: keys may be missing
    not_heard: bool  # a key came during the prompt, or it did not play to its end
    dropped: str = ""  # keys a guard dropped since the last read
    past: str = ""  # keys after the entry's '#'


@dataclass(frozen=True)
class Next:
    verdict: Verdict
    # ASK_AGAIN: the retry prompt before the greeting asked again (after a wrong entry).
    retry: bool = False
    # The next prompt drops keys in its first moment (calls.retry_key_guard): keys still
    # on their way are the tail of this read, not an answer to what nobody heard yet.
    guard: bool = False
    step: str | None = None  # the timeline's name for it: no_input, not_taken, wrong_input
    count: int = 0  # of silences or wrong entries, with `step`
    # A read that counted (a silence, a wrong entry): losses of events "in a row" restart.
    counted: bool = False
    # The dropped keys the flow keeps for the next read (they may still begin an entry
    # that makes the fraud code with what follows).
    dropped: str = ""


def _begins(fraud_code: str, typed: str) -> bool:
    """`typed` is the fraud code's start, short of its end."""
    return bool(typed) and not typed.endswith("#") and fraud_code.startswith(typed)


class Answers:
    """The rules, and what they carry from one read to the next, for one call."""

    def __init__(
        self,
        *,
        fraud_code: str | None,
        code: str | None,
        attempts: int,
        no_input_prompts: int,
    ) -> None:
        self.fraud_code = fraud_code  # None: fraud reporting is off
        self.expected = "#" if code is None else code + "#"
        self.number_matching = code is not None
        self.attempts = attempts
        self.no_input_prompts = no_input_prompts
        self.wrong = 0
        self.silent = 0
        # The start of the fraud code that a wrong entry (or dropped keys) made: keys before
        # the next prompt was heard whole may be its rest.
        self.fraud_started = ""
        # Events were lost since a read was last heard whole: a lost key may have begun the
        # fraud code.
        self.lost_start = False
        # The prompt after the last attempt's tail (`after_tail`) is for the end of the fraud
        # code alone: anything else read there is a denial, never an approval.
        self.fraud_only = False

    @property
    def last_silence(self) -> bool:
        """A silence in the next read ends the call (at the prompt more after the last
        attempt's tail, any silence denies)."""
        return self.fraud_only or self.silent + 1 >= self.no_input_prompts

    @property
    def last_entry(self) -> bool:
        """A wrong entry in the next read ends the call (short of a fraud start's extra)."""
        return self.wrong + 1 >= self.attempts

    def read(self, r: Read) -> Next:
        """What to do after one read; updates what is carried to the next."""
        # Keys a guard dropped answer nothing, but a fraud code is never dropped.
        if self.ends_in_fraud(r.dropped, r.not_heard):
            return Next(Verdict.FRAUD)
        if r.entry is None and r.deaf:  # a key may have been lost: not a silence
            self.lost_start = self.fraud_code is not None
            if not r.not_heard:  # nothing is carried past a prompt heard whole
                self.fraud_started = ""
            # The dropped keys stay for the next read.
            return Next(Verdict.EVENTS_LOST, guard=True, dropped=r.dropped)
        # Keys past the entry's '#' follow it: read on their own, after it, and kept (with
        # what follows they may still make the fraud code: "1#0" + "#").
        if self.dropped_fraud(r.past, ""):
            return Next(Verdict.FRAUD)
        if r.dropped:  # a fraud code begun in dropped keys is carried into this entry
            self.fraud_started = self._start_in(r.dropped, r.not_heard)
        # Heard whole (else asked again below): what was lost before is answered for.
        was_lost, self.lost_start = self.lost_start, False
        if self.fraud_only and not r.deaf:
            return self._after_the_last(r)
        if r.entry is None:
            self.fraud_started = ""  # silence in between: what comes next is a new answer
            self.silent += 1
            last = self.silent >= self.no_input_prompts
            return Next(
                Verdict.NO_INPUT if last else Verdict.ASK_AGAIN,
                step="no_input",
                count=self.silent,
                counted=True,
                dropped=r.past,
            )
        entry = r.entry
        # After a retry prompt heard whole, a key answers it: nothing is carried.
        carried = self.fraud_started if r.not_heard else ""
        if self._reports_fraud(entry, carried):
            return Next(Verdict.FRAUD)
        # After the start of the fraud code, a bare '#' is not a yes: it may be the end of a
        # fraud report that did not match (a code such as "99#"). The person is asked again.
        # A number-matching code is unambiguous and stands.
        unsure = carried or (was_lost and r.not_heard)
        approve = entry == self.expected and not (unsure and not self.number_matching)
        if r.deaf:
            # The start of this entry may be lost: "0#" read as "#" would approve a fraud
            # report, "42#" read as "2#" count as wrong. Only a fraud report stands (above,
            # leaning to fraud: a lost "1" of "10#" reads "0#"); anything else is asked again
            # and counts for nothing. A fraud start is carried as after a wrong entry, and
            # keys of the entry still on their way are its tail, not the next answer.
            self.lost_start = self.fraud_code is not None
            self.fraud_started = self.fraud_start(carried, entry) or carried
            return Next(Verdict.EVENTS_LOST, guard=True, dropped=r.past)
        if approve:
            return Next(Verdict.APPROVE)
        if entry == self.expected and not carried:
            # Refused only because keys were lost before it: no wrong entry, and the next
            # '#' is a yes (found by review: it could end the call denied).
            return Next(Verdict.ASK_AGAIN, guard=True, step="not_taken", dropped=r.past)
        self.wrong += 1
        self.fraud_started = self.fraud_start(carried, entry)
        last = self.wrong >= self.attempts
        if last and self.fraud_started:
            # The start of a fraud code at the last attempt gets one prompt more, for its end
            # ("0", a pause to find '#', then '#'); found by review. As after the last tail,
            # that prompt is no attempt more: a '#' there, once heard whole, is no yes (found
            # by review: it approved after calls.attempts wrong entries).
            self.fraud_only = True
            last = False
        return self._wrong_entry(Verdict.LAST_TAIL if last else Verdict.ASK_AGAIN, r.past)

    def _wrong_entry(self, verdict: Verdict, past: str) -> Next:
        """A wrong entry (counted, on the timeline): asked again, or its tail read first.
        Keys until the retry prompt has played a moment are the tail of the wrong entry
        (say the '#' of "0#" held up past the inter-digit time-out by a loaded PBX), which
        as a new entry would approve: the guard drops them, and they are read as `read`
        and `after_tail` read dropped keys."""
        return Next(
            verdict,
            retry=True,
            guard=True,
            step="wrong_input",
            count=self.wrong,
            counted=True,
            dropped=past,
        )

    def after_tail(self, dropped: str, deaf: bool = False) -> Next:
        """After the last wrong entry's tail (LAST_TAIL), with the keys dropped since the
        read: "1#0#" typed at once reports fraud at the last attempt as at the others. A tail
        that ends in the fraud code's start ("1#", "0", a pause to find '#') gets one prompt
        more for the code's end (found by review: the '#' came during the denial and the
        report was lost); the tail is kept for it. That prompt is no attempt more: what is
        read there reports fraud or denies (a number-matching code guessed there would be a
        guess past calls.attempts). A tail across a loss of ARI's events (`deaf`) may have
        lost a fraud code: the same prompt more, after the events are back (EVENTS_LOST)."""
        if self.ends_in_fraud(dropped, not_heard=True):
            return Next(Verdict.FRAUD)
        if self.fraud_only or self.fraud_code is None:
            return Next(Verdict.DENY)
        if deaf:
            self.fraud_only = True
            return Next(Verdict.EVENTS_LOST, retry=True, guard=True, dropped=dropped)
        if self._start_in(dropped, not_heard=True):
            self.fraud_only = True
            return Next(Verdict.ASK_AGAIN, retry=True, guard=True, dropped=dropped)
        return Next(Verdict.DENY)

    def _after_the_last(self, r: Read) -> Next:
        """A read at the prompt more after the last attempt: the fraud code's end (with the
        start carried while the prompt was not heard whole), or a denial. Any other entry
        has its tail read first, as at the last attempt (`after_tail`): "5#0#" typed at
        once reports fraud there too (found by review: the "0#" came during the denial),
        and so does the '#' after an entry that is itself the code's start ("0", a pause)."""
        if r.entry is None:
            return Next(Verdict.DENY)
        carried = self.fraud_started if r.not_heard else ""
        if self._reports_fraud(r.entry, carried):
            return Next(Verdict.FRAUD)
        self.wrong += 1
        self.fraud_started = self.fraud_start(carried, r.entry)
        return self._wrong_entry(Verdict.LAST_TAIL, r.past)

    def ends_in_fraud(self, dropped: str, not_heard: bool) -> bool:
        """Do the keys a guard dropped since the last read hold a fraud report? A fraud
        start is carried into them only while the prompt was not heard whole. Asked by
        every read, as keys drop (to stop the prompt at once), and when the call ends
        before the next read (a hang-up, a stop, the last wrong entry)."""
        return self.dropped_fraud(dropped, self.fraud_started if not_heard else "")

    def cut_short_in_fraud(self, dropped: str, unread: str, not_heard: bool) -> bool:
        """The call ends before the next read: do the keys a guard dropped and those of a
        read it cut short (`unread`) report fraud? Read as a read takes them: the unread
        after the dropped ones, so a "0" dropped and a '#' cut short make "0#" (found by
        review: looked at apart, neither was a report); and the unread on their own, as a
        read takes them after a dropped "3" that begins nothing: "3", then "0#"."""
        return self.ends_in_fraud(dropped + unread, not_heard) or self.ends_in_fraud(
            unread, not_heard
        )

    def dropped_fraud(self, dropped: str, start: str) -> bool:
        """Keys a guard dropped, read as entries (each up to its '#'), report fraud: one is
        the fraud code, or the first completes the fraud code begun in `start`. Read as one
        run instead, "50#" (a code ending in 0) would hold "0#" (found by review)."""
        if self.fraud_code is None:
            return False
        runs = [run + "#" for run in dropped.split("#")[:-1]]
        return bool(runs) and (self.fraud_code in runs or start + runs[0] == self.fraud_code)

    def _reports_fraud(self, entry: str, carried: str) -> bool:
        """The entry is the fraud code, or completes the one begun (`carried`)."""
        return self.fraud_code is not None and self.fraud_code in (entry, carried + entry)

    def _start_in(self, dropped: str, not_heard: bool) -> str:
        """The fraud code's start that keys a guard dropped end in, after the start carried
        while the prompt was not heard whole (none past a '#' among them)."""
        lead = dropped.rsplit("#", 1)[-1]
        start = "" if "#" in dropped or not not_heard else self.fraud_started
        return self.fraud_start(start, lead)

    def fraud_start(self, carried: str, entry: str) -> str:
        """The start of the fraud code this entry (after what was carried) makes, if any."""
        if self.fraud_code is None:
            return ""
        return next((t for t in (carried + entry, entry) if _begins(self.fraud_code, t)), "")
