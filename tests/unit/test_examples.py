"""Every examples/*.yaml passes `phonemfa check-config` and the prompt check `phonemfa serve`
runs at start: a reference config that serve refuses documents nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from phonemfa.cli import main
from phonemfa.config import load_config
from phonemfa.engine import Engine
from phonemfa.prompt_setup import prepare_prompts
from tests.unit.test_deploy import env_file
from tests.unit.test_prompts import install_shipped

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"phonemfa.yaml", "sandbox.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_check_config_and_the_start_up_prompt_check(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for secret in env_file():  # the example's ${VAR}s without a default
        monkeypatch.setenv(secret, f"example-{secret}")  # each its own: tokens must differ
    assert main(["check-config", "--config", str(path)]) == 0, capsys.readouterr().err
    config = load_config(path)
    if config.sounds.dir is not None:  # serve reads the shipped prompts there: install them
        sounds = config.sounds.model_copy(update={"dir": install_shipped(tmp_path / "sounds")})
        config = config.model_copy(update={"sounds": sounds})
    # The catalogs serve builds, checked as at its start: PromptSetupError if it would refuse.
    prepare_prompts(config, Engine(config).catalogs)
