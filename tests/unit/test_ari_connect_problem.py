"""What the event stream says (log, /healthz) when it cannot connect: which setting to fix."""

from __future__ import annotations

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from phonemfa.ari.events import _connect_problem

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
