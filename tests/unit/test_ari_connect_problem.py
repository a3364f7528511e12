"""What the event stream says (log, /healthz) when it cannot connect: which setting to fix."""

from __future__ import annotations

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from phonemfa.ari.events import _a_setting_is_wrong, _connect_problem

BASE = "http://127.0.0.1:8088/ari"


def _handshake(status: int) -> aiohttp.WSServerHandshakeError:
    info = aiohttp.RequestInfo(URL(BASE + "/events"), "GET", CIMultiDict(), URL(BASE))
    return aiohttp.WSServerHandshakeError(info, (), status=status, message="Invalid response")


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (_handshake(401), "check ari.username and ari.password"),
        (_handshake(404), "without /ari"),
        (_handshake(503), "ARI answered 503"),
        (ConnectionRefusedError(111, "Connection refused"), f"cannot connect to ARI at {BASE}"),
        (TimeoutError(), "TimeoutError"),
    ],
)
def test_a_failed_connect_names_what_to_check(exc: BaseException, says: str) -> None:
    assert says in _connect_problem(exc, BASE)


def test_a_404_after_a_connect_is_a_restart_not_a_wrong_setting() -> None:
    # Found by review: Asterisk's HTTP server answers 404 on /ari/events while a restarted
    # Asterisk loads its ARI module; that refused calls as ari_misconfigured for a moment.
    assert _a_setting_is_wrong(_handshake(401), ever_connected=True)
    assert _a_setting_is_wrong(_handshake(404), ever_connected=False)
    assert not _a_setting_is_wrong(_handshake(404), ever_connected=True)
    assert not _a_setting_is_wrong(_handshake(503), ever_connected=False)
    assert not _a_setting_is_wrong(ConnectionRefusedError(111, "refused"), ever_connected=False)
    assert "restarting" in _connect_problem(_handshake(404), BASE, ever_connected=True)
