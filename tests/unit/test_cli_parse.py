"""`phonemfa parse` and `phonemfa check-config`, through phonemfa.cli.main."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from phonemfa.cli import main
from phonemfa.config import load_config
from phonemfa.engine import Engine
from phonemfa.prompt_setup import prepare_prompts
from tests.unit.test_prompts import install_shipped

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fields(out: str) -> dict[str, str]:
    """The "key: value" lines of the text output."""
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def parse_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, "parse", "--json", *argv)
    return code, json.loads(out)


def test_operator_forced_by_at(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "parse", "425-555-1234x@5678")
    assert code == 0 and err == ""
    got = fields(out)
    assert got["mode"] == "operator"
    assert got["dial"] == "PJSIP/+14255551234@trunk"
    assert got["extension"].startswith("5678")
    assert "operator forced" in got["extension"]
    assert got["tenant"] == "default (region US, operator assistance off)"
    assert "transfer to extension 5678" in got["dtmf"]


def test_auto_extension_without_at(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "parse", "425-555-1234x5678")
    assert code == 0
    got = fields(out)
    assert got["mode"] == "auto_extension"
    assert got["dial"] == "PJSIP/+14255551234@trunk"
    assert got["extension"] == "5678"
    assert got["dtmf"] == "wait 2 s, then 5678 (100 ms tones, 100 ms gaps)"
    assert got["dtmf string"] == "WW5678"


def test_direct(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "parse", "+1 425 555 0100")
    assert code == 0
    got = fields(out)
    assert (got["mode"], got["dtmf"], got["dial"]) == (
        "direct",
        "none",
        "PJSIP/+14255550100@trunk",
    )
    assert "extension" not in got


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = parse_json(capsys, "425-555-1234x5678")
    assert code == 0
    assert report["number"] == {
        "e164": "+14255551234",
        "country": "US",
        "national": "(425) 555-1234",
        "type": "fixed_line_or_mobile",
        "extension": "5678",
        "operator_forced": False,
    }
    assert report["mode"] == "auto_extension"
    assert report["dialled"] == "+14255551234"
    assert report["dial_string"] == "PJSIP/+14255551234@trunk"
    assert report["dtmf"] == [
        {"wait": 2.0},
        {"digits": "5678", "duration_ms": 100, "gap_ms": 100},
    ]
    assert report["dtmf_string"] == "WW5678"


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("hello", "not_a_number"),
        ("", "empty"),
        ("+1 123 456 7890", "invalid_for_region"),
        ("425-555-1234x@", "operator_flag_without_extension"),
        ("425-555-1234x123456789012", "bad_extension"),
        ("+33 1 23 45 67 89", "country_not_allowed"),
    ],
)
def test_refusals_exit_2_with_their_code(
    capsys: pytest.CaptureFixture[str], number: str, code: str
) -> None:
    exit_code, out, _ = run(capsys, "parse", number)
    assert exit_code == 2
    assert fields(out)["refused"].startswith(f"{code}: ")
    exit_code, report = parse_json(capsys, number)
    assert exit_code == 2 and report["refused"]["code"] == code


def test_premium_rate_refused_in_its_own_region(capsys: pytest.CaptureFixture[str]) -> None:
    exit_code, out, _ = run(capsys, "parse", "--region", "GB", "+44 909 879 0000")
    assert exit_code == 2
    assert fields(out)["refused"].startswith("number_type_refused: ")


def test_region_override(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = parse_json(capsys, "--region", "FR", "01 23 45 67 89 x12")
    assert code == 0
    assert report["number"]["e164"] == "+33123456789"
    assert report["mode"] == "auto_extension"


def test_bad_region_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "parse", "--region", "XX", "425-555-1234")
    assert code == 1 and out == ""
    assert "--region" in err


def test_unknown_tenant_without_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "parse", "--tenant", "acme", "425-555-1234")
    assert code == 1 and "unknown tenant 'acme'" in err


def test_tenant_from_config(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(EXAMPLES / "sandbox.yaml")
    code, report = parse_json(capsys, "-c", config, "-t", "contoso-ops", "425-555-0120x5678")
    assert code == 0 and report["mode"] == "operator" and report["dtmf"] == []
    code, report = parse_json(capsys, "-c", config, "425-555-0110x5678")
    assert code == 0 and report["mode"] == "auto_extension"
    code, _, err = run(capsys, "parse", "-c", config, "-t", "nope", "425-555-0110")
    assert code == 1 and "unknown tenant 'nope'" in err


def test_dial_profile_from_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "ari: {password: x}\napi: {tokens: [t]}\n"
        "trunk: {endpoint: 'PJSIP/{number}@carrier'}\n"
        "dial_profiles:\n"
        "  - {name: fr, match: FR, number_format: international, pre_delay: 1,"
        " extension_prefix: w}\n"
        "tenants: {default: {region: FR}}\n"
    )
    code, out, _ = run(capsys, "parse", "-c", str(path), "01 23 45 67 89 x12")
    assert code == 0
    got = fields(out)
    assert got["profile"] == "fr (international)"
    assert got["dial"] == "PJSIP/01133123456789@carrier"
    assert got["dtmf string"] == "Ww12"


def test_parse_needs_none_of_the_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production example takes its secrets from the service's environment: an
    administrator's shell without them can still parse; check-config still says they lack."""
    for var in ("PHONEMFA_ARI_PASSWORD", "PHONEMFA_API_TOKEN", "PHONEMFA_OPS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    config = str(EXAMPLES / "phonemfa.yaml")
    code, report = parse_json(capsys, "-c", config, "425-555-0110x5678")
    assert code == 0 and report["mode"] == "auto_extension"
    code, _, err = run(capsys, "check-config", "--config", config)
    assert code == 1 and "environment variable PHONEMFA_ARI_PASSWORD is not set" in err


def test_parse_with_broken_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "parse", "-c", str(tmp_path / "missing.yaml"), "425-555-1234")
    assert code == 1 and out == ""
    assert "missing.yaml: no such file" in err


# --- check-config -------------------------------------------------------------


def test_check_config_prints_redacted_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check-config", "--config", str(EXAMPLES / "sandbox.yaml"))
    assert code == 0 and err == ""
    assert "phonemfa-sandbox-secret" not in out
    assert "sandbox-token" not in out
    shown = yaml.safe_load(out)
    assert shown["ari"]["password"] == "***"
    assert shown["api"]["tokens"][0]["token"] == "***"
    assert shown["tenants"]["contoso-ops"]["operator_assistance"] is True
    assert shown["tenants"]["default"]["fraud"]["code"] == "0#"


def test_check_config_error_is_one_clear_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "phonemfa.yaml"
    path.write_text("ari: {password: x}\napi: {tokens: [t]}\ntenants:\n  default: {region: [US]}\n")
    code, out, err = run(capsys, "check-config", "--config", str(path))
    assert code == 1 and out == ""
    assert err.strip() == f"{path}:4: tenants.default.region: Input should be a valid string"


def test_check_config_says_what_serve_would_refuse(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "phonemfa.yaml"
    path.write_text(
        "ari: {password: x}\napi: {tokens: [t]}\ntenants:\n"
        "  default: {prompts: {en: {greeting: /srv/hello.wav}}}\n"
        "  acme: {organization_name: Acme}\n"
    )
    code, out, err = run(capsys, "check-config", "--config", str(path))
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0] == f"{path}: `phonemfa serve` would not start:"
    # Each at the line of its setting.
    assert (
        f"  {path}:4: error: tenant 'default', language en, message greeting: sounds.dir is not"
        in err
    )
    assert "(/srv/hello.wav)" in err
    assert (
        f"  {path}:5: error: tenant 'acme', language en, message organization_name: sounds.dir"
        in err
    )
    assert len(lines) == 4  # the recording, the name in en and in fr


def test_check_config_reads_no_prompt_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """With sounds.dir, what serve checks is on disk (maybe another host's): check-config
    leaves it to `phonemfa prompts check` and says so."""
    path = tmp_path / "phonemfa.yaml"
    path.write_text(
        f"ari: {{password: x}}\napi: {{tokens: [t]}}\nsounds: {{dir: {tmp_path / 'none'}}}\n"
        "tenants: {default: {prompts: {en: {greeting: /srv/hello.wav}}}}\n"
    )
    code, out, err = run(capsys, "check-config", "--config", str(path))
    assert code == 0 and err == ""
    assert out.splitlines()[1].startswith("# Prompts are checked in sounds.dir at start")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys)
    assert code == 0 and "parse" in out and "check-config" in out


@pytest.mark.parametrize("sounds_dir", [False, True])
def test_check_config_refuses_an_unannounced_fraud_code_at_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sounds_dir: bool
) -> None:
    """What serve refuses from the file alone, with sounds.dir set too (found by review:
    check-config said valid, serve would not start), at the line of fraud.code."""
    path = tmp_path / "phonemfa.yaml"
    sounds = f"sounds: {{dir: {tmp_path}}}\n" if sounds_dir else ""
    path.write_text(
        f"ari: {{password: x}}\napi: {{tokens: [t]}}\n{sounds}tenants:\n"
        "  default: {}\n  acme:\n    fraud:\n      code: '9#'\n"
    )
    line = 8 if sounds_dir else 7
    code, out, err = run(capsys, "check-config", "--config", str(path))
    assert code == 1 and out == ""
    problems = err.splitlines()[1:]
    assert len(problems) == 4  # greeting_fraud and code_prompt_fraud, in en and fr
    assert all(p.startswith(f"  {path}:{line}: error: tenant 'acme', language ") for p in problems)
    assert all(
        p.endswith("but fraud.code is 9#: record this message, or set fraud.code to 0#")
        for p in problems
    )


def test_check_config_says_when_requests_must_name_their_tenant(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "phonemfa.yaml"
    path.write_text("ari: {password: x}\napi: {tokens: [t]}\ntenants:\n  acme: {}\n")
    code, out, _ = run(capsys, "check-config", "--config", str(path))
    assert code == 0
    assert "# No tenant is named 'default': every API request, dialplan entry" in out
    path.write_text("ari: {password: x}\napi: {tokens: [t]}\ntenants:\n  default: {}\n")
    assert "No tenant is named" not in run(capsys, "check-config", "--config", str(path))[1]


def test_check_config_warns_of_a_tenant_language_no_greeting_is_in(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A typo in a tenant's language (xx-YY) greeted every caller in English, silently.
    fr-CA is served in French and a language with the tenant's own greeting in its own: no
    warning for those."""
    path = tmp_path / "phonemfa.yaml"
    path.write_text(
        "ari: {password: x}\napi: {tokens: [t]}\ntenants:\n"
        "  default: {language: xx-YY}\n"
        "  quebec: {language: fr-CA}\n"
        "  berlin:\n    language: de\n"
        "    prompts: {de: {greeting_fraud: 'sound:berlin/greeting'}}\n"
    )
    code, out, err = run(capsys, "check-config", "--config", str(path))
    assert code == 0 and out.startswith(f"# {path}: valid.")
    assert err.splitlines() == [
        f"{path}:4: warning: tenant 'default', language xx-YY, message greeting_fraud: no"
        " greeting in xx-YY: every call is greeted in en (prompts exist in en, fr; record them"
        " as prompts.xx-YY, or correct language)"
    ]


def test_serve_warns_of_a_tenant_language_no_greeting_is_in(tmp_path: Path) -> None:
    path = tmp_path / "phonemfa.yaml"
    path.write_text(
        "ari: {password: x}\napi: {tokens: [t]}\ntenants:\n"
        "  default: {language: xx-YY}\n  quebec: {language: fr-CA}\n"
    )
    config = load_config(path)
    # What the engine's start logs ("prompts: warning: ..."), without sounds.dir and with.
    for sounds in (None, install_shipped(tmp_path / "sounds")):
        with_sounds = config.model_copy(
            update={"sounds": config.sounds.model_copy(update={"dir": sounds})}
        )
        warnings = prepare_prompts(with_sounds, Engine(with_sounds).catalogs)
        assert [(w.severity, w.tenant, w.field) for w in warnings] == [
            ("warning", "default", "language")
        ]
