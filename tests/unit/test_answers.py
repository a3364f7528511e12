"""The rules that read a person's keys at the verification prompt (phonemfa.answers), read by
read, without a call. tests/unit/test_flow.py runs the same rules through whole calls, with
their timings (guards, prompts cut short, lost events)."""

from __future__ import annotations

from dataclasses import replace

from phonemfa.answers import Answers, Read, Verdict


def answers(fraud: str | None = "0#", code: str | None = None, attempts: int = 3) -> Answers:
    return Answers(fraud_code=fraud, code=code, attempts=attempts, no_input_prompts=2)


def heard(entry: str | None, **more: str) -> Read:
    """An entry after the prompt played to its end."""
    return Read(entry, deaf=False, not_heard=False, **more)


def during(entry: str | None, **more: str) -> Read:
    """An entry begun while the prompt played (it was not heard whole)."""
    return Read(entry, deaf=False, not_heard=True, **more)


def deaf(entry: str | None, **more: str) -> Read:
    """A read across a loss of ARI's events: keys may be missing."""
    return Read(entry, deaf=True, not_heard=True, **more)


def test_a_pound_approves_the_fraud_code_reports_anything_else_is_wrong() -> None:
    assert answers().read(heard("#")).verdict is Verdict.APPROVE
    assert answers().read(during("0#")).verdict is Verdict.FRAUD
    wrong = answers().read(heard("5#"))
    assert (wrong.verdict, wrong.step, wrong.count) == (Verdict.ASK_AGAIN, "wrong_input", 1)
    assert wrong.retry and wrong.guard and wrong.counted


def test_without_fraud_reporting_the_fraud_code_is_a_wrong_entry() -> None:
    assert answers(fraud=None).read(heard("0#")).verdict is Verdict.ASK_AGAIN


def test_a_fraud_start_is_carried_until_the_next_prompt_is_heard_whole() -> None:
    # "0", a pause past the inter-digit time-out, then '#' as the retry prompt plays.
    a = answers()
    assert a.read(heard("0")).step == "wrong_input"
    assert a.read(during("#")).verdict is Verdict.FRAUD
    # The same '#' after the retry prompt was heard whole answers it: a yes.
    a = answers()
    a.read(heard("0"))
    assert a.read(heard("#")).verdict is Verdict.APPROVE


def test_a_bare_pound_after_a_fraud_start_that_did_not_match_is_no_yes() -> None:
    a = answers(fraud="99#")
    a.read(heard("9"))
    then = a.read(during("#"))  # "9#": not the fraud code, and maybe its mistyped end
    assert (then.verdict, then.count) == (Verdict.ASK_AGAIN, 2)


def test_a_number_matching_code_stands_after_a_fraud_start() -> None:
    a = answers(code="42")
    a.read(heard("0"))
    assert a.read(during("42#")).verdict is Verdict.APPROVE


def test_dropped_keys_are_read_as_entries_not_searched() -> None:
    assert answers().read(during("#", dropped="0#")).verdict is Verdict.FRAUD
    assert answers().read(during("#", dropped="5#0#")).verdict is Verdict.FRAUD
    # "50#" (a number-matching code typed early) holds "0#" but is not the fraud code.
    assert answers(code="50").read(heard("50#", dropped="50#")).verdict is Verdict.APPROVE


def test_dropped_keys_complete_a_fraud_start() -> None:
    a = answers()
    a.read(heard("0"))
    # The '#' of "0#", held up into the retry prompt's guard and dropped.
    assert a.read(during(None, dropped="#")).verdict is Verdict.FRAUD


def test_keys_past_the_entry_are_read_after_it_and_kept() -> None:
    assert answers().read(heard("1#", past="0#")).verdict is Verdict.FRAUD
    a = answers()
    then = a.read(heard("1#", past="0"))
    assert then.verdict is Verdict.ASK_AGAIN and then.dropped == "0"
    # "1#0" then "#": the kept "0" begins the next entry.
    assert a.read(during("#", dropped=then.dropped)).verdict is Verdict.FRAUD


def test_two_silences_end_the_call_no_input() -> None:
    a = answers()
    assert not a.last_silence
    first = a.read(heard(None))
    assert (first.verdict, first.step, first.count, first.guard) == (
        Verdict.ASK_AGAIN, "no_input", 1, False,
    )  # fmt: skip
    assert a.last_silence
    assert a.read(heard(None)).verdict is Verdict.NO_INPUT


def test_a_silence_forgets_a_fraud_start() -> None:
    a = answers()
    a.read(heard("0"))
    a.read(heard(None))
    assert a.read(during("#")).verdict is Verdict.APPROVE


def test_a_silence_across_a_loss_counts_for_nothing_and_the_next_pound_is_not_taken() -> None:
    a = answers()
    lost = a.read(deaf(None, dropped="5"))
    assert (lost.verdict, lost.guard, lost.counted) == (Verdict.EVENTS_LOST, True, False)
    assert lost.dropped == "5"  # kept for the next read
    assert a.silent == 0
    # A lost "0" may have begun a fraud report: '#' before a prompt is heard whole is no yes,
    # and no wrong entry either.
    not_taken = a.read(during("#"))
    assert (not_taken.verdict, not_taken.step) == (Verdict.ASK_AGAIN, "not_taken")
    assert a.wrong == 0
    assert a.read(during("#")).verdict is Verdict.APPROVE


def test_an_entry_across_a_loss_stands_only_as_a_fraud_report() -> None:
    assert answers().read(deaf("#")).verdict is Verdict.EVENTS_LOST
    assert answers().read(deaf("5#")).verdict is Verdict.EVENTS_LOST
    assert answers().read(deaf("0#")).verdict is Verdict.FRAUD
    a = answers()
    a.read(deaf("0"))  # its fraud start is carried
    assert a.read(during("#")).verdict is Verdict.FRAUD


def test_a_number_matching_code_stands_after_a_loss() -> None:
    a = answers(code="42")
    a.read(deaf(None))
    assert a.read(during("42#")).verdict is Verdict.APPROVE


def test_the_last_wrong_entry_reads_its_tail_before_the_denial() -> None:
    a = answers()
    a.read(heard("1#"))
    assert a.last_entry is False
    a.read(heard("2#"))
    assert a.last_entry is True
    last = a.read(heard("3#"))
    assert (last.verdict, last.count) == (Verdict.LAST_TAIL, 3)
    assert a.after_tail("").verdict is Verdict.DENY
    assert a.after_tail("4#").verdict is Verdict.DENY
    assert a.after_tail("4#0#").verdict is Verdict.FRAUD  # "3#4#0#" typed at once


def test_a_tail_ending_in_the_fraud_code_s_start_gets_one_prompt_more() -> None:
    # "3#" at the last attempt, then "0" and a pause past the tail's to find '#' (found by
    # review: the '#' came during the denial). The "0" is kept: with the '#' that follows
    # before the prompt is heard whole, it is "0#".
    a = answers()
    a.read(heard("1#"))
    a.read(heard("2#"))
    assert a.read(heard("3#")).verdict is Verdict.LAST_TAIL
    then = a.after_tail("0")
    assert (then.verdict, then.retry, then.guard, then.dropped) == (
        Verdict.ASK_AGAIN,
        True,
        True,
        "0",
    )
    assert a.last_silence  # a silence there denies: checked with a mark as the last one
    assert a.read(during("#", dropped=then.dropped)).verdict is Verdict.FRAUD
    # That prompt is for the code's end only, no attempt more: a '#' after it was heard
    # whole, another entry (once its tail is read), a silence, all deny.
    for read in (heard("#"), during("5#"), heard(None)):
        a = answers(attempts=1)
        a.read(heard("3#"))
        then = a.read(replace(read, dropped=a.after_tail("4#0").dropped))
        assert then.verdict is (Verdict.DENY if read.entry is None else Verdict.LAST_TAIL), read
        assert a.after_tail("0").verdict is Verdict.DENY  # once
    # With number matching, no guess of the code past calls.attempts (found by review).
    a = answers(code="42", attempts=3)
    for guess in ("11#", "12#"):
        assert a.read(heard(guess)).verdict is Verdict.ASK_AGAIN
    assert a.read(heard("13#")).verdict is Verdict.LAST_TAIL
    then = a.after_tail("0")
    assert then.verdict is Verdict.ASK_AGAIN
    assert a.read(heard("42#", dropped=then.dropped)).verdict is Verdict.LAST_TAIL
    assert a.after_tail("").verdict is Verdict.DENY
    # ... but the fraud report it is there for stands.
    a = answers(code="42", attempts=1)
    a.read(heard("13#"))
    assert a.read(during("#", dropped=a.after_tail("0").dropped)).verdict is Verdict.FRAUD
    # A code "99#": "9" begins it; "8" does not.
    a = answers(fraud="99#", attempts=1)
    a.read(heard("3#"))
    assert a.after_tail("9").verdict is Verdict.ASK_AGAIN
    assert a.after_tail("8").verdict is Verdict.DENY
    # Fraud reporting off: nothing begins a code.
    a = answers(fraud=None, attempts=1)
    a.read(heard("3#"))
    assert a.after_tail("0").verdict is Verdict.DENY


def test_a_fraud_start_at_the_last_attempt_gets_one_prompt_more() -> None:
    a = answers()
    a.read(heard("1#"))
    a.read(heard("2#"))
    assert a.read(heard("0")).verdict is Verdict.ASK_AGAIN
    assert a.read(during("#")).verdict is Verdict.FRAUD
    # Its tail dropped, not pressed as the prompt plays: the same report.
    a = answers()
    a.read(heard("1#"))
    a.read(heard("2#"))
    a.read(heard("0"))
    assert a.ends_in_fraud("#", not_heard=True)
    assert not a.ends_in_fraud("#", not_heard=False)  # no fraud report after a prompt heard whole


def test_the_prompt_more_after_a_last_fraud_start_is_no_attempt_more() -> None:
    # "1#", "2#", then "0" and a pause: the prompt more is for the code's end alone. Heard
    # whole, a '#' there is no yes (it approved after three wrong entries), nor is the
    # expected code with number matching: their tail is read, then the call is denied. A
    # silence denies at once.
    for last in (heard("#"), heard("5#"), during("5#")):
        a = answers()
        a.read(heard("1#"))
        a.read(heard("2#"))
        assert a.read(heard("0")).verdict is Verdict.ASK_AGAIN
        assert a.last_silence
        assert a.read(last).verdict is Verdict.LAST_TAIL, last
        assert a.after_tail("").verdict is Verdict.DENY, last
    a = answers()
    a.read(heard("1#"))
    a.read(heard("2#"))
    a.read(heard("0"))
    assert a.read(heard(None)).verdict is Verdict.DENY
    a = answers(code="42")
    a.read(heard("1#"))
    a.read(heard("2#"))
    a.read(heard("0"))
    assert a.read(heard("42#")).verdict is Verdict.LAST_TAIL
    assert a.after_tail("").verdict is Verdict.DENY
    # The code's end, or the whole code, still reports fraud there.
    for last in (during("#"), heard("0#"), during("0#")):
        a = answers()
        a.read(heard("1#"))
        a.read(heard("2#"))
        a.read(heard("0"))
        assert a.read(last).verdict is Verdict.FRAUD, last
    # "5#0#" typed at once there: the "0#" still on its way is the tail of "5#", read before
    # the denial as at the last attempt (found by review: it came during the denial).
    a = answers()
    a.read(heard("1#"))
    a.read(heard("2#"))
    a.read(heard("0"))
    assert a.read(heard("5#")).verdict is Verdict.LAST_TAIL
    assert a.after_tail("0#").verdict is Verdict.FRAUD
    # With one attempt, the same.
    a = answers(attempts=1)
    assert a.read(heard("0")).verdict is Verdict.ASK_AGAIN
    assert a.read(heard("#")).verdict is Verdict.LAST_TAIL
    assert a.after_tail("").verdict is Verdict.DENY
    # The code's start again there ("0", a pause): its tail is read, never a yes.
    for tail, verdict in (("#", Verdict.FRAUD), ("", Verdict.DENY), ("5#", Verdict.DENY)):
        a = answers(attempts=1)
        a.read(heard("0"))
        assert a.read(heard("0")).verdict is Verdict.LAST_TAIL
        assert a.after_tail(tail).verdict is verdict, tail


def test_no_fraud_start_is_carried_past_a_prompt_heard_whole_across_a_loss() -> None:
    a = answers()
    a.read(heard("0"))
    # The retry prompt played to its end; events were lost in the silence after it.
    assert a.read(Read(None, deaf=True, not_heard=False)).verdict is Verdict.EVENTS_LOST
    # So this '#' answers a prompt heard whole: no "0#", though after the loss it is no
    # yes either until a prompt is heard whole.
    then = a.read(during("#"))
    assert (then.verdict, then.step) == (Verdict.ASK_AGAIN, "not_taken")


def test_a_last_tail_across_a_loss_of_events_gets_the_prompt_for_the_fraud_code_alone() -> None:
    # Its "0#" may be lost with the events: asked again once, where only "0#" is no denial.
    a = answers(attempts=1)
    assert a.read(heard("1#")).verdict is Verdict.LAST_TAIL
    again = a.after_tail("", deaf=True)
    assert (again.verdict, again.retry, again.guard) == (Verdict.EVENTS_LOST, True, True)
    assert a.read(during("#")).verdict is Verdict.LAST_TAIL
    assert a.after_tail("").verdict is Verdict.DENY
    a = answers(attempts=1)
    a.read(heard("1#"))
    a.after_tail("", deaf=True)
    assert a.read(heard("0#")).verdict is Verdict.FRAUD
    # Without fraud reporting there is nothing to ask for.
    a = answers(fraud=None, attempts=1)
    a.read(heard("1#"))
    assert a.after_tail("", deaf=True).verdict is Verdict.DENY


def test_a_read_cut_short_reports_fraud_with_the_dropped_keys_or_on_its_own() -> None:
    a = answers()
    # A "0" a guard dropped and a '#' of a read the hang-up cut short: "0#" together.
    assert a.cut_short_in_fraud("0", "#", not_heard=False)
    assert not a.ends_in_fraud("0", not_heard=False) and not a.ends_in_fraud("#", False)
    # A dropped "3" begins nothing: the unread "0#" is read on its own, as a read would.
    assert not a.ends_in_fraud("30#", not_heard=False)
    assert a.cut_short_in_fraud("3", "0#", not_heard=False)
    assert not a.cut_short_in_fraud("3", "#", not_heard=False)
    assert not a.cut_short_in_fraud("", "", not_heard=True)
    assert not answers(fraud=None).cut_short_in_fraud("0", "#", not_heard=True)
