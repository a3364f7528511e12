"""ARI events: one websocket, one reader, each event routed to its call's mailbox.

The reader only decodes and routes (`put_nowait`): it never waits on call work, so a slow call
cannot delay another's events. The connection is kept up with heartbeats and reconnects with a
jittered back-off; after every (re)connect an `on_connected` hook runs as its own task so the
service can re-sync what it missed while the connection was down.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from phonemfa import jsoncodec
from phonemfa.ari.client import AriClient
from phonemfa.ari.models import Event

log = logging.getLogger("phonemfa.ari")


class Mailbox:
    """One call's events, in arrival order, for one reader (its flow's task).

    An unbounded queue whose `wait()` costs one future and at most one timer, and nothing
    when an event is already there. A busy service waits for events thousands of times a
    second; `asyncio.timeout()` around `asyncio.Queue.get()` cost a Timeout object, a timer
    pushed on the loop's heap and a cancellation on every one of them."""

    __slots__ = ("_events", "_waiter")

    def __init__(self) -> None:
        self._events: collections.deque[Event] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, event: Event) -> None:
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> Event:
        if not self._events:
            raise asyncio.QueueEmpty
        return self._events.popleft()

    def empty(self) -> bool:
        return not self._events

    def qsize(self) -> int:
        return len(self._events)

    async def get(self) -> Event:
        while not self._events:
            await self.wait(None)
        return self._events.popleft()

    async def wait(self, deadline: float | None) -> bool:
        """Until an event is there (True) or the loop's clock reaches `deadline` (False)."""
        if self._events:
            return True
        loop = asyncio.get_running_loop()
        if deadline is not None and deadline <= loop.time():
            return False
        waiter = self._waiter = loop.create_future()
        timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return bool(self._events)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class EventRouter:
    """Maps channel and playback ids to mailboxes. Register before the request that makes
    the id appear: Asterisk may send its first event before it answers the request."""

    def __init__(
        self,
        on_unrouted: Callable[[Event], None] | None = None,
        *,
        on_every: Callable[[Event], None] | None = None,
    ) -> None:
        self._channels: dict[str, Mailbox] = {}
        self._playbacks: dict[str, Mailbox] = {}
        self.on_unrouted = on_unrouted
        self.on_every = on_every  # sees each event first, whoever owns it

    def add_channel(self, channel_id: str, mailbox: Mailbox) -> None:
        self._channels[channel_id] = mailbox

    def remove_channel(self, channel_id: str) -> None:
        self._channels.pop(channel_id, None)

    def add_playback(self, playback_id: str, mailbox: Mailbox) -> None:
        self._playbacks[playback_id] = mailbox

    def remove_playback(self, playback_id: str) -> None:
        self._playbacks.pop(playback_id, None)

    def channel_ids(self) -> list[str]:
        return list(self._channels)

    def mailbox(self, channel_id: str) -> Mailbox | None:
        return self._channels.get(channel_id)

    def route(self, event: Event) -> bool:
        """Deliver to the owning mailbox; False (and `on_unrouted`) when nobody owns it."""
        if self.on_every is not None:
            self.on_every(event)
        box = None
        if event.playback_id is not None:
            box = self._playbacks.get(event.playback_id)
        if box is None and event.channel_id is not None:
            box = self._channels.get(event.channel_id)
        if box is not None:
            box.put_nowait(event)
            return True
        if self.on_unrouted is not None:
            self.on_unrouted(event)
        return False


class EventStream:
    """The ARI event websocket for our app, kept connected until `stop()`."""

    def __init__(
        self,
        client: AriClient,
        router: EventRouter,
        *,
        heartbeat: float = 10,
        max_backoff: float = 2,
        on_connected: Callable[[int], Coroutine[Any, Any, None]] | None = None,
        on_disconnected: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.router = router
        self.heartbeat = heartbeat
        self.max_backoff = max_backoff
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.connected = asyncio.Event()
        self.generation = 0  # how many times we connected
        # Asterisk gave our app to another connection (ApplicationReplaced): we stay off, as
        # taking it back would deafen that one (app_owner).
        self.replaced = False
        # Why we are not connected, for /healthz: the last connect error, or the take-over.
        self.problem: str | None = None
        # The last connect failed for a setting (credentials refused, nothing at the URL),
        # not an outage: waiting will not help, so new calls are refused meanwhile.
        self.settings_wrong = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._hooks: set[asyncio.Task[None]] = set()
        self._stopping = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ari-events")

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)

    async def stop(self) -> None:
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for hook in list(self._hooks):
            hook.cancel()

    async def drop(self) -> None:
        """Close the current connection as if the network dropped it (for tests and
        operators' `reconnect`); the stream reconnects by itself."""
        if self._ws is not None:
            await self._ws.close()

    async def _run(self) -> None:
        delay = 0.0
        while not self._stopping:
            try:
                ws = await self.client.session.ws_connect(
                    f"{self.client.base}/events",
                    params={"app": self.client.app, "subscribeAll": "false"},
                    heartbeat=self.heartbeat,
                    max_msg_size=0,
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                delay = _next_delay(delay, self.max_backoff)
                ever = self.generation > 0
                problem = _connect_problem(exc, self.client.base, ever_connected=ever)
                if problem != self.problem:  # once per kind of failure, not every retry
                    log.warning("ARI events: %s; retrying every %.0f s", problem, self.max_backoff)
                self.problem = problem
                self.settings_wrong = _a_setting_is_wrong(exc, ever_connected=ever)
                await asyncio.sleep(delay)
                continue
            delay = 0.0
            self.problem = None
            self.settings_wrong = False
            self._ws = ws
            self.generation += 1
            self.connected.set()
            log.info("ARI events: connected (connection #%d)", self.generation)
            if self.on_connected is not None:
                hook: asyncio.Task[None] = asyncio.create_task(self.on_connected(self.generation))
                self._hooks.add(hook)
                hook.add_done_callback(self._hook_done)
            try:
                await self._read(ws)
            finally:
                self.connected.clear()
                if self.on_disconnected is not None:
                    self.on_disconnected()
                self._ws = None
                await ws.close()
            if self.replaced:
                return
            if not self._stopping:
                delay = _next_delay(delay, self.max_backoff)
                log.warning("ARI events: connection lost; reconnecting in %.2f s", delay)
                await asyncio.sleep(delay)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        route = self.router.route
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    data = jsoncodec.loads(msg.data)
                except ValueError:
                    data = None
                if not isinstance(data, dict):  # not an event: nothing to route
                    log.error("ARI events: undecodable message dropped")
                    continue
                try:
                    route(Event(data))
                except Exception:  # one bad event must not stop everyone's events
                    log.exception("ARI events: routing failed for %s", data.get("type"))
                if data.get("type") == "ApplicationReplaced":
                    # Said before `connected` clears: /healthz never shows one without the other.
                    self.problem = "another connection took over the ARI app"
                    self.replaced = True
                    break
            elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                break

    def _hook_done(self, task: asyncio.Task[None]) -> None:
        self._hooks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ARI events: re-sync after connect failed", exc_info=task.exception())


def _connect_problem(exc: BaseException, base: str, *, ever_connected: bool = False) -> str:
    """What an administrator should read for a failed connect: which setting to look at."""
    status = getattr(exc, "status", None)
    if status == 401:
        return "Asterisk refused our credentials (401): check ari.username and ari.password"
    if status == 404 and ever_connected:
        return f"ARI at {base} answered 404: Asterisk restarting (its ARI not loaded yet)?"
    if status == 404:
        return f"no ARI at {base} (404): ari.url is Asterisk's HTTP address, without /ari"
    if isinstance(status, int):
        return f"ARI answered {status} to the event websocket ({exc})"
    return f"cannot connect to ARI at {base} ({str(exc) or type(exc).__name__})"


def _a_setting_is_wrong(exc: BaseException, *, ever_connected: bool) -> bool:
    """A failed connect that waiting will not mend: credentials refused; or nothing at the
    URL, unless we connected there before (a restarting Asterisk answers 404 until its ARI
    module is loaded)."""
    status = getattr(exc, "status", None)
    return status == 401 or (status == 404 and not ever_connected)


def _next_delay(previous: float, ceiling: float) -> float:
    """0.1 s, doubling up to the ceiling, with ±20 % jitter so many clients don't sync up."""
    base = min(ceiling, max(0.1, previous * 2))
    return min(ceiling, base * random.uniform(0.8, 1.2))
