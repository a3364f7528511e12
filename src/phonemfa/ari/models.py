"""The ARI JSON we read, typed: TypedDicts for the shapes, one small class per event.

Asterisk sends many events per call; parsing each into a full model would cost CPU on the hot
path (one websocket reader for every call). `Event` keeps the decoded dict and lifts out the
few fields the router and the call flow need.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class CallerId(TypedDict):
    name: str
    number: str


class ChannelDialplan(TypedDict):
    """Where a channel is in the dialplan; `app_name`/`app_data` the application it runs
    (`Stasis`, `phonemfa,verify,NUMBER,...` for a dialplan entry)."""

    context: str
    exten: str
    priority: int
    app_name: NotRequired[str]
    app_data: NotRequired[str]


class Channel(TypedDict):
    id: str
    name: str
    state: str  # Down, Rsrvd, OffHook, Dialing, Ring, Ringing, Up, Busy, ...
    caller: CallerId
    connected: CallerId
    language: NotRequired[str]
    creationtime: NotRequired[str]
    dialplan: NotRequired[ChannelDialplan]


class Playback(TypedDict):
    id: str
    media_uri: str
    target_uri: str  # "channel:<id>"
    state: str  # queued, playing, done, failed, ...
    language: NotRequired[str]


class Application(TypedDict):
    name: str
    channel_ids: list[str]
    bridge_ids: list[str]
    endpoint_ids: list[str]


class Event:
    """One ARI event. `data` is the decoded JSON; the rest is read once, here."""

    __slots__ = ("type", "data", "channel_id", "playback_id")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.type: str = data.get("type", "")
        channel = data.get("channel")
        self.channel_id: str | None = channel.get("id") if channel else None
        playback = data.get("playback")
        self.playback_id: str | None = playback.get("id") if playback else None
        if playback and self.channel_id is None:
            target = playback.get("target_uri", "")
            if target.startswith("channel:"):
                self.channel_id = target[8:]

    # Fields of the events the flow reads; absent ones read as empty.
    @property
    def timestamp(self) -> str:
        return str(self.data.get("timestamp", ""))

    @property
    def channel(self) -> Channel:
        return self.data["channel"]  # type: ignore[no-any-return]

    @property
    def channel_state(self) -> str:
        channel = self.data.get("channel")
        return str(channel.get("state", "")) if channel else ""

    @property
    def digit(self) -> str:
        return str(self.data.get("digit", ""))

    @property
    def duration_ms(self) -> int:
        """How long a key was held (ChannelDtmfReceived); 0 when absent or unreadable."""
        try:
            return max(0, int(self.data.get("duration_ms", 0)))
        except (TypeError, ValueError):
            return 0

    @property
    def cause(self) -> int:
        return int(self.data.get("cause", 0))

    @property
    def playback(self) -> Playback:
        return self.data["playback"]  # type: ignore[no-any-return]

    @property
    def args(self) -> list[str]:
        return list(self.data.get("args", []))

    def __repr__(self) -> str:
        return f"Event({self.type}, channel={self.channel_id}, playback={self.playback_id})"


def synthetic(event_type: str, channel_id: str, **fields: Any) -> Event:
    """An event we make ourselves (re-sync after a reconnect), routed like Asterisk's."""
    data: dict[str, Any] = {"type": event_type, "channel": {"id": channel_id}, **fields}
    return Event(data)
