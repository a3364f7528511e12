"""deploy/: the systemd unit and its file of secrets agree with systemd, with each other and
with examples/phonemfa.yaml, the config the README installs beside them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phonemfa.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "phonemfa.service"
ENV_FILE = REPO / "deploy" / "phonemfa.env"
EXAMPLE = REPO / "examples" / "phonemfa.yaml"
INSTALLED = "/opt/phonemfa/bin/phonemfa"  # where the README installs it
# After grace_period, calls still in progress are hung up (up to 15 s), then the last
# outcomes are written: what the unit must wait for before its SIGKILL.
STOP_MARGIN = 45


def unit_settings() -> dict[str, str]:
    """`Key=value` lines of the unit (each key once in ours), comments left out."""
    settings: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            assert key not in settings, f"{UNIT.name}: {key} twice"
            settings[key] = value
    return settings


def env_file() -> dict[str, str]:
    """The variables deploy/phonemfa.env sets, as systemd's EnvironmentFile reads them."""
    names: dict[str, str] = {}
    for line in ENV_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and key.isidentifier(), line
            names[key] = value
    return names


def filled_in() -> dict[str, str]:
    return {name: f"secret-of-{name.lower()}" for name in env_file()}


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify`: every key known, every value parsed, the command there
    (this virtualenv's phonemfa in place of /opt/phonemfa's)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd; .ci/run installs it)"
    phonemfa = Path(sys.executable).parent / "phonemfa"
    assert phonemfa.is_file(), phonemfa
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} serve " in text
    unit = tmp_path / "phonemfa.service"
    unit.write_text(text.replace(INSTALLED, str(phonemfa)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_unit_serves_the_example_config_from_its_state_directory() -> None:
    settings = unit_settings()
    config = load_config(EXAMPLE, environ=filled_in())
    command = settings["ExecStart"].split()
    assert command[:3] == [INSTALLED, "serve", "--config"]
    config_path = Path(command[3])
    assert config_path.name == EXAMPLE.name
    assert Path(settings["EnvironmentFile"]).parent == config_path.parent
    # The config's relative paths (recordings) are its folder's; the database is absolute.
    assert Path(settings["WorkingDirectory"]) == config_path.parent
    assert config.storage.path.is_absolute()
    # StateDirectory=phonemfa is /var/lib/phonemfa, the only folder the unit lets it write.
    assert config.storage.path.parent == Path("/var/lib") / settings["StateDirectory"]
    assert settings["ProtectSystem"] == "strict"
    assert int(settings["LimitNOFILE"]) >= 4096  # phonemfa warns below that


def test_the_unit_waits_for_the_drain_before_it_kills() -> None:
    settings = unit_settings()
    grace = load_config(EXAMPLE, environ=filled_in()).shutdown.grace_period
    assert settings["KillSignal"] == "SIGTERM"
    assert float(settings["TimeoutStopSec"]) >= grace + STOP_MARGIN


def test_the_env_file_sets_exactly_the_example_s_secrets() -> None:
    """Filled in, it is all the example needs; each of its variables is needed; and as
    shipped (empty) it is refused, naming the field and the line."""
    names = env_file()
    assert names and all(value == "" for value in names.values()), "ship no secret values"
    load_config(EXAMPLE, environ=filled_in())
    for name in names:
        without = {k: v for k, v in filled_in().items() if k != name}
        with pytest.raises(ConfigError, match=name):
            load_config(EXAMPLE, environ=without)
    with pytest.raises(ConfigError, match=r"phonemfa\.yaml:\d+: ari\.password: must not be empty"):
        load_config(EXAMPLE, environ=names)
