"""Asterisk sends our app only the event types we ask for (Engine's filter): an event type
the code reads but forgot to ask for would silently never come."""

from __future__ import annotations

import inspect
import re

from phonemfa import engine, flow, service
from phonemfa.engine import ARI_EVENTS

# ARI event names as they appear in the code: "StasisStart", "ChannelDtmfReceived", ...
_EVENT_NAME = re.compile(r'"((?:Stasis|Channel|Playback|Application|Bridge|Recording)[A-Z]\w+)"')


def test_every_event_type_the_code_reads_is_asked_for() -> None:
    read = set()
    for module in (flow, service, engine):
        read |= set(_EVENT_NAME.findall(inspect.getsource(module)))
    assert {"StasisStart", "ChannelDtmfReceived", "ApplicationReplaced"} <= read  # the scan works
    assert read - ARI_EVENTS == set()


def test_the_noisy_events_are_left_out() -> None:
    # About half of what Asterisk sends for a call, and nothing reads them. (PlaybackStarted
    # is read: a key guard runs from it.)
    assert not {"ChannelVarset", "ChannelDialplan", "Dial", "PlaybackContinuing"} & ARI_EVENTS
