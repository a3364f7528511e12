"""Where a call's webhook may go (callback_url): the service POSTs it from its own network."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient, TestServer

from phonemfa.api import build_app
from phonemfa.callback_policy import (
    GuardedResolver,
    callback_refused,
    receiver_of,
    webhook_session,
)
from phonemfa.config import Config, ConfigError
from phonemfa.service import CallService
from phonemfa.store import Store
from phonemfa.webhooks import WebhookSender


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0:9/",
        "http://169\u3002254\u3002169\u3002254/",  # ideographic full stops: aiohttp's dots
        "http://\uff11\uff16\uff19.254.169.254/",  # full-width digits
        "http://a@169.254.169.254/",
        "http://[fe80::1%25eth0]/",
        "http://2852039166/",  # 169.254.169.254 as a resolver reads these forms
        "http://0251.0376.0251.0376/",
        "http://0xa9fea9fe/",
        "http://169.254.43518/",
        "http://[fd00:ec2::254]/",  # AWS's metadata service over IPv6
        "http://100.100.100.200/",  # Alibaba Cloud's
        "http://[64:ff9b::a9fe:a9fe]/",  # 169.254.169.254 through NAT64
        "http://[64:ff9b:1:a9fe:a9:fe00::]/",  # through a local-use NAT64 prefix
        "http://[2002:a9fe:a9fe::1]/",  # through 6to4
    ],
)
def test_link_local_and_metadata_addresses_are_refused(url: str) -> None:
    assert callback_refused(url, None) is not None


def test_any_other_host_when_no_list_is_set() -> None:
    for url in (
        "https://hooks.example.com/x",
        "http://10.1.2.3:8443/mfa",
        "http://127.0.0.1/",
        "https://face.cafe/",  # a name, though its letters are hex digits
    ):
        assert callback_refused(url, None) is None


def test_only_the_listed_hosts_when_a_list_is_set() -> None:
    allowed = ("hooks.example.com", "10.1.2.3")
    assert callback_refused("https://HOOKS.example.com:8443/x", allowed) is None
    assert callback_refused("http://10.1.2.3/mfa", allowed) is None
    assert callback_refused("https://hooks.example.com./x", allowed) is None  # trailing dot
    assert "not one of api.callback_hosts" in str(callback_refused("http://127.0.0.1/", allowed))


def _config(tmp_path: Path, hosts: Any = None) -> Config:
    api: dict[str, Any] = {"tokens": ["t"]}
    if hosts is not None:
        api["callback_hosts"] = hosts
    return Config.model_validate(
        {
            "ari": {"password": "x", "url": "http://127.0.0.1:1"},
            "api": api,
            "storage": {"path": str(tmp_path / "db.sqlite")},
            "tenants": {"default": {"webhook_secret": "s3cret-for-tests"}},
        }
    )


def test_a_listed_host_is_a_host_not_a_url(tmp_path: Path) -> None:
    with pytest.raises((ConfigError, ValueError)):
        _config(tmp_path, ["https://hooks.example.com/x"])
    assert _config(tmp_path, ["Hooks.Example.com.", "[fd00::0001]"]).api.callback_hosts == (
        "hooks.example.com",
        "fd00::1",
    )
    assert callback_refused("http://[fd00::1]/", ("fd00::1",)) is None


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = _config(tmp_path)  # no list: the link-local check alone refuses
    store = await Store.open(config.storage.path)
    service = CallService(config, store)
    service.accepting = True
    async with TestClient(TestServer(build_app(service))) as c:
        yield c
    await store.close()


async def test_the_api_refuses_a_callback_to_a_host_not_listed(
    client: TestClient[Any, Any],
) -> None:
    body = {"phone": "+1 425 555 0100", "callback_url": "http://169.254.169.254/"}
    resp = await client.post("/v1/calls", json=body, headers={"Authorization": "Bearer t"})
    answer = await resp.json()
    assert resp.status == 400, answer
    assert answer["error"] == "callback_url_not_allowed"
    assert answer["fields"][0]["field"] == "callback_url"


# --- at connect time: the addresses a name resolves to ---------------------------------------


class _Names(AbstractResolver):
    """A resolver with fixed answers: the names a test needs, without DNS."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
            for a in self.names[host]
        ]

    async def close(self) -> None:
        pass


class _LoopbackOnly(aiohttp.TCPConnector):
    """Connects to loopback addresses only, so that a guard that let a refused address
    through fails the test without any packet leaving this machine."""

    async def _wrap_create_connection(self, *args: Any, addr_infos: Any, **kwargs: Any) -> Any:
        tried = [info[4][0] for info in addr_infos]
        assert all(ipaddress.ip_address(a).is_loopback for a in tried), f"would connect to {tried}"
        return await super()._wrap_create_connection(*args, addr_infos=addr_infos, **kwargs)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[int, list[str]]]:
    """A webhook receiver on 127.0.0.1: its port, and the Host headers it was sent."""
    hosts: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hosts.append(request.host)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with TestServer(app, host="127.0.0.1") as server:
        assert server.port is not None
        yield server.port, hosts


async def test_a_name_resolving_only_to_a_refused_address_is_not_connected_to(
    receiver: tuple[int, list[str]],
) -> None:
    port, hosts = receiver
    names = {
        "hooks.test": ["127.0.0.1"],
        "metadata.test": ["169.254.169.254"],
        "aws6.test": ["fd00:ec2::254"],
        "dns64.test": ["64:ff9b::a9fe:a9fe"],  # what DNS64 makes of an A record
        "both.test": ["169.254.169.254", "127.0.0.1"],
    }
    connector = _LoopbackOnly(resolver=GuardedResolver(_Names(names)))
    async with aiohttp.ClientSession(connector=connector) as session:
        for name in ("hooks.test", "both.test"):  # the refused address left out
            async with session.post(f"http://{name}:{port}/hook", data=b"{}") as resp:
                assert resp.status == 204
        assert hosts == [f"hooks.test:{port}", f"both.test:{port}"]
        refused = (
            ("metadata.test", "link-local"),
            ("aws6.test", "metadata service"),
            ("dns64.test", "link-local"),
        )
        for name, what in refused:
            with pytest.raises(aiohttp.ClientConnectorError, match=what):
                await session.post(f"http://{name}:{port}/hook", data=b"{}")
    assert hosts == [f"hooks.test:{port}", f"both.test:{port}"]


def test_webhooks_go_out_through_the_guarded_resolver(tmp_path: Path) -> None:
    assert WebhookSender(None, lambda tenant: None).session_factory is webhook_session  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "receiver"),
    [
        ("https://hooks.example/a?token=secret", "https://hooks.example"),
        ("https://Hooks.Example.:443/b", "https://hooks.example"),  # one server, one share
        ("http://hooks.example:80/c", "http://hooks.example"),
        ("http://hooks.example:8080/c", "http://hooks.example:8080"),
        ("https://[2001:db8::1]:8443/d", "https://[2001:db8::1]:8443"),
        ("https://hooks.example:99999/e", "(invalid URL)"),
    ],
)
def test_a_receiver_is_its_server_in_one_spelling(url: str, receiver: str) -> None:
    assert receiver_of(url) == receiver
