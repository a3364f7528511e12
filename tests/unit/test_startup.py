"""`phonemfa serve` and `phonemfa call --config` refuse an unusable config value with one line
naming its field (not a traceback), before any connection to Asterisk."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from phonemfa.cli import main
from phonemfa.config import Config
from phonemfa.startup import (
    StartupError,
    cli_calls_running,
    hold_cli_lock,
    hold_serve_lock,
    open_service,
)
from phonemfa.store import Store, StoreUnavailable
from tests.unit.test_store import synchronous_of

# Port 1: nothing answers there, and nothing may try before the refusal.
BASE = "ari: {password: x, url: 'http://127.0.0.1:1'}\napi: {tokens: [t]}\n"


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """`serve` sets up the root logger (to this test's stderr): put pytest's back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "phonemfa.yaml"
    path.write_text(BASE + text)
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# How each command says it (serve logs it, as every start-up failure).
COMMANDS = [(["serve"], "cannot serve: "), (["call", "+14255551234"], "phonemfa call: ")]


@pytest.mark.parametrize(("command", "says"), COMMANDS)
def test_missing_shipped_prompts_name_sounds_dir(
    command: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        f"storage: {{path: {tmp_path / 'db.sqlite'}}}\nsounds: {{dir: {tmp_path / 'nowhere'}}}\n"
        "tenants: {default: {}}\n",
    )
    code, err = run(capsys, *command, "--config", config)
    line = one_line(err)
    assert code == 1
    manifest = tmp_path / "nowhere" / "phonemfa" / "manifest.json"
    why = f"sounds.dir: shipped prompts not installed: cannot read {manifest}:"
    assert f"{says}{config}:4: {why}" in line
    assert "make prompts" in line
    assert not (tmp_path / "db.sqlite").exists()  # refused before the database is created


@pytest.mark.parametrize(("command", "says"), COMMANDS)
def test_unusable_database_names_storage_path(
    command: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, f"storage: {{path: {tmp_path}}}\ntenants: {{default: {{}}}}\n")
    code, err = run(capsys, *command, "--config", config)
    line = one_line(err)
    assert code == 1
    assert f"{says}{config}:3: storage.path: cannot open the database {tmp_path}: " in line


@pytest.mark.parametrize(("command", "says"), COMMANDS)
def test_a_database_that_cannot_be_read_at_start_is_one_line(
    command: list[str],
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by review: a read failing in service.start() (tenants, blocks, calls left in
    # progress) was a traceback.
    async def failing(self: Store) -> None:
        raise StoreUnavailable("database read failed: disk I/O error")

    monkeypatch.setattr(Store, "all_tenant_settings", failing)
    config = write_config(
        tmp_path, f"storage: {{path: {tmp_path / 'db.sqlite'}}}\ntenants: {{default: {{}}}}\n"
    )
    code, err = run(capsys, *command, "--config", config)
    assert code == 1 and "Traceback" not in err
    # (after the database's creation, logged by serve)
    [said] = [line for line in err.splitlines() if says in line]
    assert f"{says}{config}:3: storage.path: cannot read the database: database read" in said


@pytest.mark.parametrize(("command", "says"), COMMANDS)
def test_unplayable_prompts_are_refused_at_their_lines(
    command: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        f"storage: {{path: {tmp_path / 'db.sqlite'}}}\n"
        "tenants:\n  default: {prompts: {en: {greeting: hello.wav}}}\n"
        "  acme:\n    organization_name: Acme\n",
    )
    code, err = run(capsys, *command, "--config", config)
    assert code == 1 and "Traceback" not in err
    assert f"{says}3 prompt problem(s), not starting:" in err
    assert f"{config}:5: error: tenant 'default', language en, message greeting: sounds" in err
    for lang in ("en", "fr"):
        assert f"{config}:7: error: tenant 'acme', language {lang}, message organization_" in err


@pytest.mark.parametrize("mode", ["normal", "full"])
async def test_the_service_s_store_syncs_as_storage_synchronous_says(
    tmp_path: Path, mode: str
) -> None:
    config = Config.model_validate(
        {
            "ari": {"password": "x"},
            "api": {"tokens": ["t"]},
            "tenants": {"default": {}},
            "storage": {"path": str(tmp_path / "phonemfa.db"), "synchronous": mode.upper()},
        }
    )
    service = await open_service(config)
    try:
        assert await synchronous_of(service.store) == {"normal": 1, "full": 2}[mode]
    finally:
        await service.store.close()


def test_one_serve_per_database(tmp_path: Path) -> None:
    database = tmp_path / "phonemfa.db"
    first = hold_serve_lock(database)
    try:
        with pytest.raises(StartupError) as refused:
            hold_serve_lock(database)
        assert refused.value.field == "storage.path"
        assert "another `phonemfa serve` is using" in str(refused.value)
        assert hold_serve_lock(tmp_path / "other.db").close() is None  # another database: fine
    finally:
        first.close()
    hold_serve_lock(database).close()  # free again once the first one is gone


def test_a_second_serve_refuses_before_opening_the_database(tmp_path: Path) -> None:
    # It must not migrate, nor settle anything in, the database the first one is serving.
    database = tmp_path / "db.sqlite"
    config = write_config(tmp_path, f"storage: {{path: {database}}}\ntenants: {{default: {{}}}}\n")
    alias = tmp_path / "alias.sqlite"
    alias.symlink_to(database)  # the same file by another path holds the same lock
    first = hold_serve_lock(alias)
    try:
        # Its own process, with a time limit: a serve that did start would wait for SIGTERM.
        done = subprocess.run(
            [sys.executable, "-m", "phonemfa", "serve", "--config", config],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        first.close()
    assert done.returncode == 1, done.stderr
    refusal = f"cannot serve: {config}:3: storage.path: another `phonemfa serve` is using"
    assert refusal in one_line(done.stderr)
    assert not database.exists()


def test_a_starting_service_sees_a_running_cli_call(tmp_path: Path) -> None:
    database = tmp_path / "phonemfa.db"
    with cli_calls_running(database) as running:
        assert not running
    first = hold_cli_lock(database)
    try:
        second = hold_cli_lock(tmp_path / "." / "phonemfa.db")  # two CLIs at once: shared
        second.close()
        with cli_calls_running(database) as running:
            assert running
    finally:
        first.close()
    with cli_calls_running(database) as running:
        assert not running  # a CLI that ended (or died) holds nothing


def test_no_cli_call_starts_while_a_service_settles(tmp_path: Path) -> None:
    database = tmp_path / "phonemfa.db"
    held = threading.Event()

    def cli() -> None:
        hold_cli_lock(database).close()
        held.set()

    with cli_calls_running(database) as running:
        assert not running
        waiting = threading.Thread(target=cli)
        waiting.start()
        assert not held.wait(0.3)  # it waits for the settling to end
    assert held.wait(10)
    waiting.join()


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("host", ["127.0.0.1", "no-such-host.invalid"])
def test_an_address_serve_cannot_listen_on_names_api_listen(
    host: str, taken_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Read "cannot serve: [Errno -2] Name or service not known": no field, not even the name.
    listen = f"{host}:{taken_port}"
    config = tmp_path / "phonemfa.yaml"
    config.write_text(
        f"storage: {{path: {tmp_path / 'db.sqlite'}}}\ntenants: {{default: {{}}}}\n"
        "ari: {password: x, url: 'http://127.0.0.1:1', app: listen-test}\n"
        f"api: {{tokens: [t], listen: '{listen}'}}\n"
    )
    code, err = run(capsys, "serve", "--config", str(config))
    assert code == 1 and "Traceback" not in err
    refusal = [line for line in err.splitlines() if "cannot serve" in line]
    said = f"cannot serve: {config}:4: api.listen: cannot listen on {listen}: "
    assert refusal and said in refusal[0]
