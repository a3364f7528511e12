"""Our own thin, typed asyncio ARI client (REST + one event websocket) on aiohttp."""

from phonemfa.ari.client import (
    AriBadRequest,
    AriClient,
    AriConflict,
    AriError,
    AriNotFound,
    AriPreconditionFailed,
    AriServerError,
    AriUnavailable,
)
from phonemfa.ari.events import EventRouter, EventStream, Mailbox
from phonemfa.ari.models import Application, Channel, Event, Playback, synthetic

__all__ = [
    "Application",
    "AriBadRequest",
    "AriClient",
    "AriConflict",
    "AriError",
    "AriNotFound",
    "AriPreconditionFailed",
    "AriServerError",
    "AriUnavailable",
    "Channel",
    "Event",
    "EventRouter",
    "EventStream",
    "Mailbox",
    "Playback",
    "synthetic",
]
