"""The ARI REST calls phonemfa uses, on one aiohttp session, with typed errors.

We choose every id ourselves (channels, playbacks): the caller registers the id with the event
router *before* asking, because Asterisk may send the first event before the HTTP response.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import quote

import aiohttp

from phonemfa import jsoncodec
from phonemfa.ari.http import HttpPool
from phonemfa.ari.models import Application, Channel, Playback


class AriError(Exception):
    """ARI answered with an error status (or not at all: `AriUnavailable`)."""

    status: int = 0

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"ARI {method} {path}: {status} {message}".rstrip())
        self.method = method
        self.path = path
        self.status = status
        self.message = message


class AriBadRequest(AriError):  # 400: we sent something wrong
    pass


class AriNotFound(AriError):  # 404: channel, playback... is gone
    pass


class AriConflict(AriError):  # 409: e.g. the channel is not in Stasis (yet, or any more)
    pass


class AriPreconditionFailed(AriError):  # 412: e.g. the channel is not answered / in a bridge
    pass


class AriServerError(AriError):  # 5xx
    pass


class AriUnavailable(AriError):
    """No answer from Asterisk: connection refused, reset, or timed out."""


_BY_STATUS: dict[int, type[AriError]] = {
    400: AriBadRequest,
    404: AriNotFound,
    409: AriConflict,
    412: AriPreconditionFailed,
}


# Where the caller id of a channel we create goes: chan_pjsip builds the INVITE's From (and
# P-Asserted-Identity / Remote-Party-ID, when the endpoint sends them) from the outgoing
# channel's *connected line*, not from its CALLERID, which would only change what our own
# channel shows (and raise a ChannelCallerId event, the flow's hint of a transfer). The `i`
# option sets it without telling the channel driver: told, chan_pjsip queues a COLP update
# and sends a needless re-INVITE with the same identity once the call is answered (endpoints
# with send_pai or send_rpid).
CALLER_ID_VARIABLE = "CONNECTEDLINE(num,i)"


def basic_auth(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Basic {token}"


class AriClient:
    """REST side of ARI. `base_url` is the Asterisk HTTP server, e.g. http://127.0.0.1:8088.

    REST requests go through our own small keep-alive HTTP client (`ari.http`): at hundreds
    of calls at once they are most of phonemfa's work, and aiohttp's client costs three times
    as much CPU per request. The event websocket stays on aiohttp (`session`)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        app: str,
        *,
        max_connections: int = 64,
        request_timeout: float = 10,
    ) -> None:
        self.base = base_url.rstrip("/") + "/ari"
        self.app = app
        self._auth = basic_auth(username, password)
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._rest = HttpPool(
            self.base,
            {"Authorization": self._auth},
            limit=max_connections,
            timeout=request_timeout,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session of the event websocket, made on first use."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": self._auth},
                connector=aiohttp.TCPConnector(limit=4),
                timeout=self._timeout,
                json_serialize=json.dumps,
            )
        return self._session

    async def close(self) -> None:
        await self._rest.close()
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        target = path + _query(params)
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            status, raw = await self._rest.request(method, target, data)
        except (TimeoutError, OSError) as exc:
            raise AriUnavailable(method, path, 0, str(exc) or type(exc).__name__) from exc
        if status >= 300:
            raise _error(method, path, status, raw.decode("utf-8", "replace"))
        if not raw:
            return None
        return jsoncodec.loads_lenient(raw)

    # --- channels ---------------------------------------------------------
    async def create_channel(
        self,
        endpoint: str,
        channel_id: str,
        *,
        app_args: str = "",
        variables: Mapping[str, str] | None = None,
        caller_id: str | None = None,
    ) -> Channel:
        """POST /channels/create: the channel enters our Stasis app (StasisStart), not dialled.

        `caller_id` is the number presented to the far end. /channels/create has no callerId
        parameter (Asterisk would ignore one): it goes in as a channel variable instead."""
        body: dict[str, Any] = {
            "endpoint": endpoint,
            "app": self.app,
            "channelId": channel_id,
            "appArgs": app_args,
        }
        merged = dict(variables or {})
        if caller_id:
            merged[CALLER_ID_VARIABLE] = caller_id
        if merged:
            body["variables"] = merged
        return cast(Channel, await self.request("POST", "/channels/create", body=body))

    async def dial(self, channel_id: str, timeout: int) -> None:
        await self.request("POST", f"/channels/{_id(channel_id)}/dial", params={"timeout": timeout})

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{_id(channel_id)}/answer")

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        """Hang up; False when the channel was already gone."""
        try:
            await self.request("DELETE", f"/channels/{_id(channel_id)}", params={"reason": reason})
        except AriNotFound:
            return False
        return True

    async def get_channel(self, channel_id: str) -> Channel:
        return cast(Channel, await self.request("GET", f"/channels/{_id(channel_id)}"))

    async def rtp_received(self, channel_id: str) -> int:
        """RTP packets received on the channel so far (GET .../rtp_statistics, `rxcount`)."""
        stats = await self.request("GET", f"/channels/{_id(channel_id)}/rtp_statistics")
        return int(stats.get("rxcount", 0)) if isinstance(stats, dict) else 0

    async def list_channels(self) -> list[Channel]:
        return cast(list[Channel], await self.request("GET", "/channels"))

    async def play(
        self,
        channel_id: str,
        playback_id: str,
        media: Sequence[str],
        *,
        lang: str | None = None,
    ) -> Playback:
        """Play a media list as one playback we can stop (`sound:...`: Asterisk does not stop
        `digits:` media, `Prompt.playable`)."""
        # One comma-separated value: ARI keeps only the last of repeated `media` parameters.
        params: list[tuple[str, str]] = [("media", ",".join(media))]
        if lang:
            params.append(("lang", lang))
        return cast(
            Playback,
            await self.request(
                "POST", f"/channels/{_id(channel_id)}/play/{_id(playback_id)}", params=params
            ),
        )

    async def send_dtmf(
        self,
        channel_id: str,
        dtmf: str,
        *,
        before_ms: int = 0,
        between_ms: int = 100,
        duration_ms: int = 100,
    ) -> None:
        """DTMF to the far end; `w`/`W` in `dtmf` pause 0.5 s / 1 s (checked on Asterisk 22).
        Asterisk queues DTMF behind a running playback: stop it first."""
        await self.request(
            "POST",
            f"/channels/{_id(channel_id)}/dtmf",
            params={
                "dtmf": dtmf,
                "before": before_ms,
                "between": between_ms,
                "duration": duration_ms,
            },
        )

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        await self.request(
            "POST",
            f"/channels/{_id(channel_id)}/variable",
            params={"variable": name, "value": value},
        )

    async def get_variable(self, channel_id: str, name: str) -> str:
        path = f"/channels/{_id(channel_id)}/variable"
        out = await self.request("GET", path, params={"variable": name})
        return str(out["value"])

    async def continue_in_dialplan(self, channel_id: str) -> None:
        """Let a channel that entered Stasis from the dialplan go on at its next priority."""
        await self.request("POST", f"/channels/{_id(channel_id)}/continue")

    # --- playbacks --------------------------------------------------------
    async def stop_playback(self, playback_id: str) -> bool:
        """Stop a playback; False when it had already ended."""
        try:
            await self.request("DELETE", f"/playbacks/{_id(playback_id)}")
        except AriNotFound:
            return False
        return True

    async def get_playback(self, playback_id: str) -> Playback:
        return cast(Playback, await self.request("GET", f"/playbacks/{_id(playback_id)}"))

    # --- application and system -------------------------------------------
    async def get_application(self) -> Application:
        return cast(Application, await self.request("GET", f"/applications/{_id(self.app)}"))

    async def filter_events(self, allowed: Iterable[str]) -> None:
        """Have Asterisk send our app only these event types (Asterisk >= 13.26/16.3)."""
        body = {"allowed": [{"type": t} for t in sorted(allowed)]}
        await self.request("PUT", f"/applications/{_id(self.app)}/eventFilter", body=body)

    async def asterisk_info(self) -> dict[str, Any]:
        return cast(dict[str, Any], await self.request("GET", "/asterisk/info"))

    async def user_event(
        self, name: str, variables: Mapping[str, str], channel_id: str | None = None
    ) -> None:
        """A ChannelUserevent to our app's connection (AriNotFound: nobody registered it),
        about our channel `channel_id` if given."""
        params = {"application": self.app}
        if channel_id is not None:
            params["source"] = f"channel:{channel_id}"
        await self.request(
            "POST",
            f"/events/user/{_id(name)}",
            params=params,
            body={"variables": dict(variables)},
        )

    async def get_global(self, name: str) -> str:
        """A global dialplan variable ("" when unset)."""
        out = await self.request("GET", "/asterisk/variable", params={"variable": name})
        return str(out["value"])

    async def set_global(self, name: str, value: str | None) -> None:
        """Set a global dialplan variable; None unsets it."""
        params = {"variable": name} if value is None else {"variable": name, "value": value}
        await self.request("POST", "/asterisk/variable", params=params)


def _query(params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None) -> str:
    """`?k=v&...`, every value percent-encoded; ARI wants booleans as true/false."""
    if not params:
        return ""
    items = params.items() if isinstance(params, Mapping) else params
    return "?" + "&".join(f"{_quote(k)}={_quote(_text(v))}" for k, v in items)


# What needs no percent-encoding anywhere in a URL: most of what we send (ids, numbers, digits)
# is only this, and checking is ten times cheaper than quote().
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*\Z")


def _quote(value: str) -> str:
    return value if _UNRESERVED.match(value) else quote(value, safe="")


def _id(value: str) -> str:
    """An id as one path segment (ours are UUIDs, Asterisk's digits and dots: as is)."""
    return _quote(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error(method: str, path: str, status: int, text: str) -> AriError:
    try:
        message = str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        message = text.strip()
    cls = _BY_STATUS.get(status, AriServerError if status >= 500 else AriError)
    return cls(method, path, status, message[:200])
