"""The Asterisk side of phonemfa: one ARI client, one event stream, the calls in flight.

The service (HTTP API, store) and the one-shot `phonemfa call` both run calls through an
Engine. It keeps every flow findable by call id so that a reconnect can re-sync them and a
shutdown can end them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from phonemfa.app_owner import AppTaken, answer_probe, held_by_another, is_probe
from phonemfa.ari import AriClient, AriError, AriUnavailable, Event, EventRouter, EventStream
from phonemfa.config import Config, TenantSettings
from phonemfa.flow import EVENT_TYPES, CallFlow, CallRequest, Observer, asterisk_going
from phonemfa.lines import Lines
from phonemfa.outcomes import Outcome
from phonemfa.prompt_setup import prepare_prompts, shipped_prompts
from phonemfa.prompts import PromptCatalog

log = logging.getLogger("phonemfa.engine")

# While Asterisk is stopping, ask it whether it takes new channels again (the shutdown was
# called off: `core abort shutdown`) after this long, then twice as long each time up to the
# maximum: each refused probe is a WARNING in Asterisk's log.
STOPPING_RECHECK = 3.0
STOPPING_RECHECK_MAX = 30.0
# Whether Asterisk takes new channels is asked by making one that needs no trunk and no
# dialplan (a Local channel is never dialled here), then hanging it up.
PROBE_ENDPOINT = "Local/probe@phonemfa-probe"
PROBE_PREFIX = "phonemfa-probe-"

# What our app hears from Asterisk: the flows' events, ApplicationReplaced for the service
# (its dialplan entry and orphan sweep use StasisStart, StasisEnd, ChannelDestroyed and
# ChannelDtmfReceived, all among the flows'), and ChannelUserevent for app_owner's probe (and
# the flows' marks).
ARI_EVENTS = EVENT_TYPES | {"ApplicationReplaced", "ChannelUserevent"}


class Engine:
    def __init__(
        self, config: Config, *, on_unrouted: Callable[[Event], None] | None = None
    ) -> None:
        self.config = config
        ari = config.ari
        self.ari = AriClient(ari.url, ari.username, ari.password.get_secret_value(), ari.app)
        self.on_unrouted = on_unrouted
        self._tasks: set[asyncio.Task[None]] = set()  # probe answers, stop watchers
        self.router = EventRouter(self._unrouted, on_every=self._watch)
        self.events = EventStream(
            self.ari,
            self.router,
            heartbeat=ari.heartbeat,
            max_backoff=ari.reconnect_max_delay,
            on_connected=self._on_connected,
            on_disconnected=self._not_ready,
        )
        # Calls are dialled only while this is set: ARI connected and caught up (the restart
        # check, re-sync and hooks of the last connect have run). A channel made while nobody
        # hears our events loses its StasisStart, and one made during a restarted Asterisk's
        # back-off was ended with the calls the restart dropped (found by review).
        self.ready = asyncio.Event()
        self._stopping_seen = -1  # the connection during which Asterisk said it was stopping
        self._caught_up = -1  # the connection whose catch-up (_on_connected) has run
        self.flows: dict[str, CallFlow] = {}
        self.dialling = True  # new legs of fallback chains may be dialled (stop_all)
        self.lines = Lines(config.trunk.max_calls, config.trunk.queue_timeout)
        self.shipped = shipped_prompts(config.sounds.dir)
        # Each tenant's settings in effect (the config's, or changed through the API) and
        # its prompts.
        self.tenants: dict[str, TenantSettings] = dict(config.tenants)
        self.catalogs = {
            name: PromptCatalog.for_tenant(name, tenant, self.shipped)
            for name, tenant in config.tenants.items()
        }
        self._startup_time: str | None = None
        self.resyncs = 0
        self.restarts_seen = 0
        # Run after every (re)connect, after the flows were re-synced: (generation, restarted).
        self.connect_hooks: list[Callable[[int, bool], Coroutine[Any, Any, None]]] = []

    @property
    def connected(self) -> bool:
        return self.events.connected.is_set()

    async def claim_app(self) -> None:
        """Raise AppTaken when another running phonemfa holds our ARI app (app_owner)."""
        if await held_by_another(self.ari):
            raise AppTaken(self.ari.app)

    def _unrouted(self, event: Event) -> None:
        if event.channel_id is not None and event.channel_id.startswith(PROBE_PREFIX):
            # Our own probe channel (refuses_channels), hung up as soon as made. Made, then
            # left by a probe cancelled or timed out before its hang-up: hang it up, or it
            # would keep any later graceful stop waiting (found by review).
            if event.type == "StasisStart":
                self._spawn(self._hang_up_probe(event.channel_id))
            return
        if is_probe(event):
            self._spawn(answer_probe(self.ari, event))
        elif self.on_unrouted is not None:
            self.on_unrouted(event)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(log_failure)

    async def start(self, connect_timeout: float | None = None) -> None:
        """Install the tenants' custom prompts (raises PromptSetupError, listing them, when
        one cannot be played), then start the event stream; with a time-out, wait until ARI
        is connected."""
        # sox and espeak-ng are blocking subprocesses: keep them off the event loop.
        warnings = await asyncio.to_thread(
            prepare_prompts, self.config, self.catalogs, self.tenants
        )
        for warning in warnings:
            log.warning("prompts: %s", warning)
        self.events.start()
        if connect_timeout is not None:
            await self.events.wait_connected(connect_timeout)

    async def stop(self) -> None:
        await self.events.stop()
        for task in list(self._tasks):  # probe answers unset their variable as they go
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ari.close()

    def catalog(self, tenant: str) -> PromptCatalog:
        catalog = self.catalogs.get(tenant)
        if catalog is None:  # a tenant added at run time
            catalog = PromptCatalog.for_tenant(tenant, self.config.tenant(tenant), self.shipped)
            self.catalogs[tenant] = catalog
        return catalog

    def set_tenant(self, name: str, settings: TenantSettings) -> None:
        """A tenant's settings changed at run time: its prompts may have too."""
        self.tenants[name] = settings
        self.catalogs[name] = PromptCatalog.for_tenant(name, settings, self.shipped)

    def flow(
        self,
        request: CallRequest,
        observer: Observer,
        *,
        next_leg_refused: Callable[[], tuple[Outcome, str] | None] | None = None,
    ) -> CallFlow:
        """A flow for this call, registered so reconnects and shutdown can reach it.
        Run it with `await flow.run()` (or as a task); `forget()` it when done.
        `next_leg_refused`: why the next leg of its fallback chain may not be dialled now
        (besides a shutdown), as the call's outcome and reason."""

        def refused() -> tuple[Outcome, str] | None:
            if not self.dialling:
                return Outcome.INTERRUPTED, "shutdown"
            return next_leg_refused() if next_leg_refused is not None else None

        flow = CallFlow(
            request,
            self.ari,
            self.router,
            observer,
            lines=self.lines,
            asterisk_ready=self.ready,
            asterisk_refusing=self.refused_channel,
            connection=self.connection,
            next_leg_refused=refused,
        )
        self.flows[request.call_id] = flow
        return flow

    def forget(self, call_id: str) -> None:
        self.flows.pop(call_id, None)

    async def run_call(self, request: CallRequest, observer: Observer) -> Outcome:
        flow = self.flow(request, observer)
        try:
            return await flow.run()
        finally:
            self.forget(request.call_id)

    def stop_all(self, outcome: Outcome, reason: str, *, dialled: bool | None = None) -> int:
        """Stop every call; or only those Asterisk was asked a channel for (dialled=True:
        what a restart dropped); or only those whose phone was not asked to ring yet
        (dialled=False: waiting for a line or for Asterisk, or still making their channel,
        which a stopping Asterisk may refuse and send them back to waiting). Returns how many.
        From `dialled=False` on (a shutdown), no call dials the next leg of its fallback
        chain either: those end `interrupted` instead."""
        if dialled is False:
            self.dialling = False
        if dialled is None:
            flows = list(self.flows.values())
        elif dialled:  # a chain between legs has no channel to lose: it goes on
            flows = [f for f in self.flows.values() if f.dialled and not f.chain_pending]
        else:
            flows = [f for f in self.flows.values() if not f.rung]
        for flow in flows:
            flow.stop(outcome, reason)
        return len(flows)

    def _watch(self, event: Event) -> None:
        """Every event as it arrives: Asterisk's own shutdown hangs up our channels (soft,
        with its cause), those of a call and those no call owns (a dialplan entry) alike."""
        if event.type == "ChannelHangupRequest" and asterisk_going(event):
            self.asterisk_stopping()

    def connection(self) -> int | None:
        """The event connection's number while connected, else None (CallFlow.connection)."""
        return self.events.generation if self.connected else None

    def _not_ready(self) -> None:
        self.ready.clear()

    def asterisk_stopping(self) -> None:
        """Asterisk is shutting down (a soft hang-up with its cause, or it refuses new
        channels): dial nothing more until it is back (a call dialled now gets a 500, or is
        dropped with the rest), or until it takes new channels again on this connection."""
        generation = self.events.generation
        if self._stopping_seen == generation:
            return
        self._stopping_seen = generation  # also while catching up: ready stays clear after
        self.ready.clear()
        log.warning("Asterisk is stopping: new calls wait for it before they are dialled")
        self._spawn(self._until_accepting(generation))

    async def _until_accepting(self, generation: int) -> None:
        """A graceful stop keeps our connection until its last call ends, possibly long; a
        stop called off keeps it for good. Ask until it is gone or takes channels again."""
        delay = STOPPING_RECHECK
        while self.events.generation == generation and self.connected:
            await asyncio.sleep(delay)
            try:
                if await self._accepting_again(generation):
                    return
            except Exception:  # an answer we cannot read: ask again, or calls wait for good
                log.exception("cannot tell whether Asterisk takes channels again")
            delay = min(2 * delay, STOPPING_RECHECK_MAX)

    async def _accepting_again(self, generation: int) -> bool:
        """True once this connection's Asterisk takes new channels again: calls are dialled
        again (the gate opens if its catch-up is done). False while it refuses them."""
        if self.events.generation != generation or not self.connected:
            return False
        if await self.refuses_channels():
            return False
        if self.events.generation == generation and self._stopping_seen == generation:
            log.warning("Asterisk takes new channels again (its shutdown was called off)")
            self._stopping_seen = -1  # a later stop on this connection counts again
            self._open_if_due(generation)
        return True

    async def refused_channel(self) -> bool:
        """A call's channel got `500` (or `503`): True, with calls held from dialling
        (asterisk_stopping), when Asterisk refuses every new channel; False when the fault
        is that channel's own."""
        generation = self.events.generation
        if not await self.refuses_channels():
            return False
        if self.events.generation == generation:  # else it is gone already
            self.asterisk_stopping()
        return True

    async def refuses_channels(self) -> bool:
        """Whether Asterisk refuses every new channel, as it does from the start of a shutdown,
        `core stop gracefully` included (a channel of ours gets `500 Allocation failed`, as it
        would for a wrong trunk.endpoint; at the very end, ARI itself is gone: `503`). No
        answer at all counts as refusing; a 4xx says nothing of a stop."""
        channel_id = PROBE_PREFIX + secrets.token_hex(8)
        try:
            await self.ari.create_channel(PROBE_ENDPOINT, channel_id)
        except AriUnavailable:
            return True
        except AriError as exc:
            if exc.status >= 500:
                return True
            log.warning("cannot tell whether Asterisk takes new channels: %s", exc)
            return False
        await self._hang_up_probe(channel_id)
        return False

    async def _hang_up_probe(self, channel_id: str) -> None:
        try:
            await self.ari.hangup(channel_id)
        except AriError:
            pass  # gone already; one left is hung up at its StasisStart or the next connect

    def _open_if_due(self, generation: int) -> None:
        """Let calls be dialled: connected, this connect caught up, no stop said since."""
        if (
            self.events.generation == generation
            and self.connected
            and self._caught_up == generation
            and self._stopping_seen != generation
        ):
            self.ready.set()

    async def _on_connected(self, generation: int) -> None:
        """After a (re)connect: if Asterisk restarted, our calls are gone; else ask
        Asterisk where each call stands, since events were lost while we were away. Then
        calls may be dialled (`ready`)."""
        try:
            await self._catch_up(generation)
        finally:
            if self.events.generation == generation:
                self._caught_up = generation
            self._open_if_due(generation)

    async def _catch_up(self, generation: int) -> None:
        # Asterisk forgets the filter when it restarts (and may when the app goes idle).
        try:
            await self.ari.filter_events(ARI_EVENTS)
        except AriError as exc:
            log.warning("cannot filter ARI events (every event will come): %s", exc)
        try:
            info = await self.ari.asterisk_info()
        except AriError as exc:
            log.warning("re-sync: cannot read Asterisk's status: %s", exc)
            info = {}
        if self.events.generation != generation:
            return  # connected again meanwhile: that connect's catch-up is the one that counts
        startup = str(info.get("status", {}).get("startup_time", "")) or None
        restarted = (
            self._startup_time is not None and startup is not None and startup != self._startup_time
        )
        # Unknown when the status could not be read: the next connect then compares with
        # nothing, rather than with a time from before a restart this one may have missed
        # (calls dialled since would be taken for calls that restart dropped). The re-sync
        # still finds the channels a missed restart took.
        self._startup_time = startup
        if generation > 1:
            await self._resync(generation, restarted)
        for hook in self.connect_hooks:
            await hook(generation, restarted)

    async def _resync(self, generation: int, restarted: bool) -> None:
        if restarted:
            self.restarts_seen += 1
            # Calls still waiting for a line go on waiting: the new Asterisk will take them.
            stopped = self.stop_all(Outcome.INTERRUPTED, "asterisk_restarted", dialled=True)
            log.warning("Asterisk restarted: %d call(s) in progress interrupted", stopped)
            # A call in its closing words keeps its outcome (`stop` lets it finish), but its
            # channel went with the old Asterisk and no event will say so: told now, not
            # after its prompt's time-out (2 min holding a line; found by review).
            await self._resync_flows(
                [f for f in self.flows.values() if f.dialled and f.outcome is not None]
            )
            return
        self.resyncs += 1
        flows = [f for f in self.flows.values() if f.dialled]
        await self._resync_flows(flows)
        log.info("re-synced %d call(s) after reconnect #%d", len(flows), generation)

    async def _resync_flows(self, flows: list[CallFlow]) -> None:
        """Ask Asterisk where each of these calls stands (CallFlow.resync), together; a
        failure is logged and the others go on."""
        results = await asyncio.gather(*(f.resync() for f in flows), return_exceptions=True)
        for flow, result in zip(flows, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("re-sync of call %s failed: %s", flow.req.call_id, result)


def log_failure(task: asyncio.Task[Any]) -> None:
    """Done callback of a background task: its error is logged, not lost with the task."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("background task %s failed", task.get_coro(), exc_info=exc)
