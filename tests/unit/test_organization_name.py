"""organization_name without sounds.dir: it cannot be spoken (no file can be written for
Asterisk, no sentence to speak it in), so it is refused where it is set, never silently dropped
from the greeting."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from phonemfa.api import build_app
from phonemfa.config import Config
from phonemfa.engine import Engine
from phonemfa.prompt_setup import PromptSetupError, prepare_prompts
from phonemfa.service import CallService, differing_keys, settings_json
from phonemfa.store import Store


def config(tmp_path: Path, **acme: Any) -> Config:
    return Config.model_validate(
        {
            "ari": {"password": "x", "url": "http://127.0.0.1:1"},
            "api": {"tokens": ["t"]},
            "storage": {"path": str(tmp_path / "db.sqlite")},
            "tenants": {"default": {}, "acme": acme},
        }
    )


def test_start_refuses_a_name_it_cannot_speak(tmp_path: Path) -> None:
    named = config(tmp_path, organization_name="Acme")
    engine = Engine(named)  # the catalogs serve prepares, without sounds.dir
    with pytest.raises(PromptSetupError) as caught:
        prepare_prompts(named, engine.catalogs)
    assert {(f.tenant, f.language, f.message) for f in caught.value.findings} == {
        ("acme", "en", "organization_name"),
        ("acme", "fr", "organization_name"),
    }
    assert "organization_name cannot be spoken" in str(caught.value)


def test_a_recorded_name_needs_no_sounds_dir(tmp_path: Path) -> None:
    recorded = config(
        tmp_path,
        organization_name="Acme",
        prompts={"en": {"organization_name": "sound:acme/name"}},
    )
    assert prepare_prompts(recorded, Engine(recorded).catalogs) == []


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[CallService]:
    """A service that is not started (no ARI): enough for tenant settings."""
    store = await Store.open(tmp_path / "db.sqlite")
    yield CallService(config(tmp_path), store)
    await store.close()


async def test_put_refuses_a_name_it_cannot_speak(service: CallService) -> None:
    async with TestClient(TestServer(build_app(service))) as client:
        headers = {"Authorization": "Bearer t"}
        resp = await client.put(
            "/v1/tenants/acme/settings", json={"organization_name": "Acme"}, headers=headers
        )
        body = await resp.json()
        assert resp.status == 400, body
        assert body["error"] == "prompt_unplayable"
        assert [f["field"] for f in body["fields"]] == ["organization_name"]
        assert "organization_name cannot be spoken" in body["message"]
        resp = await client.get("/v1/tenants/acme/settings", headers=headers)
        assert (await resp.json())["settings"]["organization_name"] is None


async def test_a_stored_name_it_cannot_speak_is_set_aside_with_a_warning(
    service: CallService, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Accepted by the API before it was refused: starting must not fail on it, since only
    the running API could change it."""
    await service.store.put_tenant_settings("acme", {"organization_name": "Acme"})
    monkeypatch.setattr(service.engine.events, "start", lambda: None)  # no ARI here
    with caplog.at_level(logging.WARNING, "phonemfa.service"):
        await service.start(primary=False)
    assert service.tenants["acme"].organization_name is None
    assert "stored organization_name 'Acme' ignored: sounds.dir is not set" in caplog.text


async def test_start_names_the_file_settings_that_stored_ones_replace(
    service: CallService, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Settings PUT through the API replace the file's for that tenant: an edit of the file
    then does nothing, so starting says which of the file's keys are not used (found by a
    walk through the README as a new administrator)."""
    acme = settings_json(service.tenants["acme"])
    changed = acme | {"operator_assistance": True, "calls": acme["calls"] | {"attempts": 5}}
    await service.store.put_tenant_settings("acme", changed)
    await service.store.put_tenant_settings("default", settings_json(service.tenants["default"]))
    await service.store.put_tenant_settings("gone", {})
    monkeypatch.setattr(service.engine.events, "start", lambda: None)  # no ARI here
    with caplog.at_level(logging.WARNING, "phonemfa.service"):
        await service.start(primary=False)
    assert service.tenants["acme"].operator_assistance is True
    assert (
        "tenant acme: its settings stored through the API are used, not the config file's, "
        "which differ in: calls.attempts, operator_assistance (change them with PUT "
        "/v1/tenants/acme/settings)" in caplog.text
    )
    assert "tenant default:" not in caplog.text  # stored, but as in the file
    assert "tenant gone is not in the config file" in caplog.text


def test_differing_keys_names_nested_keys() -> None:
    assert differing_keys({"a": 1, "b": {"c": [1], "d": 2}}, {"a": 1, "b": {"c": [2]}}) == [
        "b.c",
        "b.d",
    ]
    assert differing_keys({"a": {"b": 1}}, {"a": None}) == ["a"]
    assert differing_keys({"a": 1}, {"a": 1}) == []


def test_lists_of_settings_differ_by_content_not_order() -> None:
    # The same allowed countries (or limits) written in another order are the same settings.
    file = {
        "allowed_countries": ["US", "FR"],
        "limits": {"per_user": [{"count": 5}, {"count": 20}]},
    }
    stored = {
        "allowed_countries": ["FR", "US"],
        "limits": {"per_user": [{"count": 20}, {"count": 5}]},
    }
    assert differing_keys(file, stored) == []
    stored["allowed_countries"] = ["FR", "US", "CA"]
    stored["limits"]["per_user"] = [{"count": 20}]
    assert differing_keys(file, stored) == ["allowed_countries", "limits.per_user"]
