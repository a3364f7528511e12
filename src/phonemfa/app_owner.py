"""Who holds our ARI app: one phonemfa per `ari.app`, asked before connecting.

Asterisk gives an app's events to the last websocket that connected for it and tells the one
before (ApplicationReplaced), which then hears nothing more. A second `phonemfa serve` started
with the same `ari.app` (a `make run` beside the installed service, a copy on another host)
would thus make the first one deaf while it still looks up, and at start-up it would hang up
the first one's calls as left by an earlier run. So a starting phonemfa asks first: when the
app is registered, it sends the app a user event naming a global variable, and a running
phonemfa that receives it sets that variable (and unsets it a little later). An answer within
PROBE_WAIT means the app is taken. No answer (the app is only registered because an earlier
run left channels in it, or its holder is not a phonemfa) means it is ours to take. Two
phonemfa starting at the same moment can both find it free: the one that connects first then
hears ApplicationReplaced, stops taking calls and says so (/healthz).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets

from phonemfa.ari import AriClient, AriError, AriNotFound, Event

log = logging.getLogger("phonemfa.engine")

PROBE_EVENT = "phonemfa-probe"
# A live holder answers within a few event-loop turns; this is for a loaded one. It is spent
# only when the app is registered: a restart after a crash that left channels in it.
PROBE_WAIT = 3.0
PROBE_POLL = 0.1
_REPLY = "live"
_VARIABLE = re.compile(r"PHONEMFA_PROBE_[0-9a-f]{16}\Z")


class AppTaken(Exception):
    """Another running phonemfa holds our ARI app."""

    def __init__(self, app: str) -> None:
        super().__init__(
            f"ari.app: {app!r} is in use by another running phonemfa on this Asterisk; stop "
            f"it, or give this one an app of its own (and its own ari.conf user if you like)"
        )
        self.app = app


async def held_by_another(ari: AriClient, wait: float = PROBE_WAIT) -> bool:
    """True when a running phonemfa answers for our app. Asterisk not answering is not a
    reason to refuse: the event stream will wait for it as usual."""
    try:
        await ari.get_application()
    except AriNotFound:
        return False  # not registered: nobody holds it
    except AriError as exc:
        log.warning("cannot ask whether ARI app %r is in use: %s", ari.app, exc)
        return False
    variable = f"PHONEMFA_PROBE_{secrets.token_hex(8)}"
    loop = asyncio.get_running_loop()
    try:
        await ari.user_event(PROBE_EVENT, {"reply": variable})
        deadline = loop.time() + wait
        while loop.time() < deadline:
            await asyncio.sleep(PROBE_POLL)
            if await ari.get_global(variable) == _REPLY:
                return True
        return False
    except AriNotFound:
        return False  # unregistered meanwhile
    except AriError as exc:
        log.warning("cannot ask whether ARI app %r is in use: %s", ari.app, exc)
        return False
    finally:
        await _unset(ari, variable)


def is_probe(event: Event) -> bool:
    return event.type == "ChannelUserevent" and event.data.get("eventname") == PROBE_EVENT


async def answer_probe(ari: AriClient, event: Event) -> None:
    """We hold the app: say so in the variable the prober named."""
    variable = str((event.data.get("userevent") or {}).get("reply", ""))
    if not _VARIABLE.match(variable):  # only ever our own kind of variable
        return
    log.warning("another phonemfa asked for ARI app %r: told it that it is in use", ari.app)
    try:
        await ari.set_global(variable, _REPLY)
        # The prober unsets it when done; an answer later than its wait would stay behind.
        await asyncio.sleep(2 * PROBE_WAIT)
    except AriError as exc:
        log.warning("could not answer for ARI app %r: %s", ari.app, exc)
    finally:
        await _unset(ari, variable)


async def _unset(ari: AriClient, variable: str) -> None:
    """Best effort, by prober and answerer alike: a variable left is a few bytes in Asterisk."""
    try:
        await ari.set_global(variable, None)
    except AriError:
        pass
