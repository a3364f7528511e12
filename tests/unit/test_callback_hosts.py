"""Where a call's webhook may go (callback_url): the service POSTs it from its own network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from phonemfa.api import build_app, callback_refused
from phonemfa.config import Config, ConfigError
from phonemfa.service import CallService
from phonemfa.store import Store


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0:9/",
    ],
)
def test_link_local_and_unspecified_addresses_are_refused(url: str) -> None:
    assert callback_refused(url, None) is not None


def test_any_other_host_when_no_list_is_set() -> None:
    for url in ("https://hooks.example.com/x", "http://10.1.2.3:8443/mfa", "http://127.0.0.1/"):
        assert callback_refused(url, None) is None


def test_only_the_listed_hosts_when_a_list_is_set() -> None:
    allowed = ("hooks.example.com", "10.1.2.3")
    assert callback_refused("https://HOOKS.example.com:8443/x", allowed) is None
    assert callback_refused("http://10.1.2.3/mfa", allowed) is None
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
    assert _config(tmp_path, ["Hooks.Example.com", "[fd00::1]"]).api.callback_hosts == (
        "hooks.example.com",
        "fd00::1",
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = _config(tmp_path, ["hooks.example.com"])
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
