"""phonemfa.prompts: resolution and composition (pure), then conversion and checks (sox, tmp).

The conversion tests run sox and espeak-ng on tiny files (CI installs both, with MP3 support).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import wave
from pathlib import Path
from types import ModuleType

import pytest

from phonemfa import prompts
from phonemfa.config import Config, TenantSettings
from phonemfa.engine import Engine
from phonemfa.messages import MessageType
from phonemfa.prompt_setup import PromptSetupError, prepare_prompts
from phonemfa.prompts import (
    CustomSource,
    Prompt,
    PromptCatalog,
    PromptError,
    Shipped,
    asterisk_language,
    check_prompts,
    convert,
    import_recording,
    load_shipped,
    pick_voice,
    synthesize,
    unannounced_fraud_code,
    wav_duration,
)
from phonemfa.prompts_cli import add_prompts_commands

REPO = Path(__file__).resolve().parents[2]
ALL = frozenset(m.value for m in MessageType) - {MessageType.ORGANIZATION_NAME.value}
SHIPPED = Shipped(
    messages={"en": ALL, "fr": ALL},
    templates={"en": "This is {name}.", "fr": "Ici {name}."},
)


def media(catalog: PromptCatalog, message: str, language: str) -> str:
    found = catalog.resolve(message, language)
    assert found is not None
    return found.media


# --- resolution (pure) -----------------------------------------------------------------------


def test_shipped_prompts_by_default() -> None:
    catalog = PromptCatalog(SHIPPED)
    assert catalog.get(MessageType.GREETING, "fr") == Prompt(("sound:phonemfa/fr/greeting",), "fr")
    assert media(catalog, "success", "en") == "sound:phonemfa/en/success"


def test_a_catalog_remembers_what_it_resolved_within_a_bound() -> None:
    catalog = PromptCatalog(SHIPPED)
    first = catalog.resolve("greeting", "fr-CA")
    assert first is not None and first.language == "fr"
    assert catalog.resolve("greeting", "fr-CA") is first  # not worked out again
    with pytest.raises(PromptError):  # a tag that is no language is refused every time
        catalog.resolve("greeting", "not a tag")
    with pytest.raises(PromptError):
        catalog.resolve("greeting", "not a tag")
    # Languages come from requests: any number of tags, a bounded memory.
    for i in range(prompts._RESOLVED_MAX + 50):
        assert media(catalog, "success", f"en-x{i:05d}") == "sound:phonemfa/en/success"
    assert len(catalog._resolved) == prompts._RESOLVED_MAX


def test_fallback_order_custom_then_shipped_then_english() -> None:
    shipped = Shipped(messages={"en": ALL, "fr": ALL, "de": frozenset({"greeting"})})
    catalog = PromptCatalog(
        shipped,
        tenant="acme",
        custom={
            "fr": {"greeting": "/rec/fr-greeting.mp3"},
            "en": {"greeting": "sound:acme/hello", "success": "/rec/en-success.wav"},
        },
    )
    # 1. tenant custom in the language (a file: converted into the tenant's folder)
    assert media(catalog, "greeting", "fr") == "sound:phonemfa-custom/acme/fr/greeting"
    # 2. shipped in the language, even though the tenant customised it in English
    assert media(catalog, "success", "fr") == "sound:phonemfa/fr/success"
    # 3. tenant custom English, for a language with no shipped prompt for it
    assert media(catalog, "success", "de") == "sound:phonemfa-custom/acme/en/success"
    # 4. shipped English
    assert media(catalog, "denied", "de") == "sound:phonemfa/en/denied"
    assert media(catalog, "greeting", "de") == "sound:phonemfa/de/greeting"
    # Existing Asterisk media are played as they are.
    assert media(catalog, "greeting", "en") == "sound:acme/hello"
    found = catalog.resolve("denied", "de")
    assert found is not None and (found.language, found.origin) == ("en", "shipped")


def test_regional_language_uses_its_primary_language() -> None:
    catalog = PromptCatalog(SHIPPED)
    assert catalog.get("greeting", "fr-CA") == Prompt(("sound:phonemfa/fr/greeting",), "fr_CA")


@pytest.mark.parametrize(
    ("requested", "default", "expected"),
    [
        (None, "en", ("en", False)),
        (None, "fr", ("fr", False)),
        ("fr", "en", ("fr", False)),
        ("fr-CA", "en", ("fr", False)),  # same language, regional variant: not a fallback
        ("FR_ca", "en", ("fr", False)),
        ("de", "en", ("en", True)),  # unsupported: English, flagged
        ("de", "fr", ("fr", True)),  # unsupported: the tenant's default first
        ("not a language!", "en", ("en", True)),
        ("de", "es", ("en", True)),
    ],
)
def test_language_for(requested: str | None, default: str, expected: tuple[str, bool]) -> None:
    assert PromptCatalog(SHIPPED).language_for(requested, default) == expected


def test_a_language_with_custom_prompts_only_is_available() -> None:
    catalog = PromptCatalog(SHIPPED, custom={"de": {"greeting": "/rec/de.wav"}})
    assert catalog.languages == ("en", "fr", "de")
    assert catalog.language_for("de", "en") == ("de", False)
    assert media(catalog, "greeting", "de") == "sound:phonemfa-custom/default/de/greeting"
    assert media(catalog, "success", "de") == "sound:phonemfa/en/success"


def test_a_language_of_the_tenant_s_own_is_served_when_the_greeting_played_is_its_own() -> None:
    # Found by review: with only its success message in German, a call asked for in German
    # was greeted in English while the timeline said German, no fallback noted. What counts
    # is the greeting the call will play (fraud reporting, number matching).
    fraud_greeting, plain = MessageType.GREETING_FRAUD, MessageType.GREETING
    only_success = PromptCatalog(SHIPPED, custom={"de": {"success": "/rec/s.wav"}})
    assert only_success.language_for("de", "en", fraud_greeting) == ("en", True)
    only_greeting = PromptCatalog(SHIPPED, custom={"de": {"greeting": "/rec/g.wav"}})
    assert only_greeting.language_for("de", "en", plain) == ("de", False)
    assert only_greeting.language_for("de", "en", fraud_greeting) == ("en", True)
    code_prompts = PromptCatalog(SHIPPED, custom={"de": {"code_prompt_fraud": "/rec/c.wav"}})
    assert code_prompts.language_for("de", "en", MessageType.CODE_PROMPT_FRAUD) == ("de", False)
    # A regional variant with prompts of its own: greeted in its primary language, its own
    # recordings played where it has them.
    regional = PromptCatalog(SHIPPED, custom={"fr-ca": {"success": "/rec/s.wav"}})
    assert regional.language_for("fr-CA", "en", fraud_greeting) == ("fr-ca", False)


@pytest.mark.parametrize(
    ("fraud", "code", "message"),
    [
        (False, False, "greeting"),
        (True, False, "greeting_fraud"),
        (False, True, "code_prompt"),
        (True, True, "code_prompt_fraud"),
    ],
)
def test_greeting_variants(fraud: bool, code: bool, message: str) -> None:
    prompt = PromptCatalog(SHIPPED).greeting("en", fraud=fraud, code=code)
    assert prompt == Prompt((f"sound:phonemfa/en/{message}",), "en")


def test_greeting_starts_with_the_spoken_organization_name() -> None:
    catalog = PromptCatalog(SHIPPED, tenant="contoso", organization_name=" Contoso ")
    assert catalog.greeting("fr", fraud=True).media == (
        "sound:phonemfa-custom/contoso/fr/organization_name",
        "sound:phonemfa/fr/greeting_fraud",
    )
    assert catalog.greeting("fr", organization=False).media == ("sound:phonemfa/fr/greeting",)
    spoken = {(lang, msg): s for lang, msg, s in catalog.materialized()}
    assert spoken == {
        ("en", "organization_name"): CustomSource("speech", "This is Contoso."),
        ("fr", "organization_name"): CustomSource("speech", "Ici Contoso."),
    }


def test_recorded_organization_name_beats_the_spoken_one() -> None:
    catalog = PromptCatalog(
        SHIPPED,
        organization_name="Contoso",
        custom={"fr": {"organization_name": "sound:contoso/nom"}},
    )
    assert catalog.greeting("fr").media[0] == "sound:contoso/nom"
    assert catalog.greeting("en").media[0] == "sound:phonemfa-custom/default/en/organization_name"


def test_no_organization_name_no_prefix() -> None:
    catalog = PromptCatalog(SHIPPED)
    assert catalog.resolve("organization_name", "en") is None
    assert catalog.greeting("en").media == ("sound:phonemfa/en/greeting",)
    with pytest.raises(PromptError, match="no organization_name prompt"):
        catalog.get("organization_name", "en")


def test_operator_prompt_reads_the_extension_digit_by_digit() -> None:
    prompt = PromptCatalog(SHIPPED).operator_prompt("fr", "5678")
    assert prompt == Prompt(
        (
            "sound:phonemfa/fr/operator_transfer",
            "digits:5678",
            "sound:phonemfa/fr/operator_after_digits",
        ),
        "fr",  # ARI's `lang`: Asterisk speaks the digits from fr/digits/
    )
    # Played as the digits' own sounds: Asterisk does not stop `digits:` media.
    assert prompt.playable == (
        "sound:phonemfa/fr/operator_transfer",
        "sound:digits/5",
        "sound:digits/6",
        "sound:digits/7",
        "sound:digits/8",
        "sound:phonemfa/fr/operator_after_digits",
    )
    greeting = PromptCatalog(SHIPPED).get("greeting", "en")
    assert greeting.playable == greeting.media


@pytest.mark.parametrize("extension", ["", "56w78", "12#", "５６"])
def test_operator_prompt_refuses_non_digits(extension: str) -> None:
    with pytest.raises(PromptError, match="digits only"):
        PromptCatalog(SHIPPED).operator_prompt("en", extension)


def test_prompts_join_only_in_one_language() -> None:
    with pytest.raises(PromptError):
        Prompt(("sound:a",), "en") + Prompt(("sound:b",), "fr")


@pytest.mark.parametrize(
    ("tag", "expected"), [("fr", "fr"), ("fr-ca", "fr_CA"), ("FR_ca", "fr_CA"), ("en-US", "en_US")]
)
def test_asterisk_language(tag: str, expected: str) -> None:
    assert asterisk_language(tag) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sound:custom/thanks", CustomSource("media", "sound:custom/thanks")),
        ("recording:greeting-2024", CustomSource("media", "recording:greeting-2024")),
        ("/abs/greeting.mp3", CustomSource("file", "/abs/greeting.mp3")),
        ("rel/greeting.wav", CustomSource("file", "/etc/phonemfa/rel/greeting.wav")),
    ],
)
def test_custom_sources(raw: str, expected: CustomSource) -> None:
    assert CustomSource.parse(raw, Path("/etc/phonemfa")) == expected


@pytest.mark.parametrize("raw", ["", "sound:", "sound:../../etc/passwd", "sound:/abs", "sound:a b"])
def test_bad_custom_sources(raw: str) -> None:
    with pytest.raises(PromptError):
        CustomSource.parse(raw)


def test_bad_names_never_reach_the_file_system() -> None:
    with pytest.raises(PromptError, match="tenant"):
        PromptCatalog(SHIPPED, tenant="../etc")
    with pytest.raises(PromptError, match="unknown message type"):
        PromptCatalog(SHIPPED, custom={"en": {"welcome": "/x.wav"}})
    with pytest.raises(PromptError, match="language"):
        PromptCatalog(SHIPPED, custom={"../x": {"greeting": "/x.wav"}})


def test_catalog_from_tenant_settings() -> None:
    tenant = TenantSettings(
        organization_name="Contoso",
        prompts={"fr": {MessageType.GREETING: "sound:contoso/bonjour"}},
    )
    catalog = PromptCatalog.for_tenant("contoso", tenant, SHIPPED)
    assert catalog.greeting("fr").media == (
        "sound:phonemfa-custom/contoso/fr/organization_name",
        "sound:contoso/bonjour",
    )


# --- conversion, synthesis, checks (sox and espeak-ng on tiny files) -------------------------


def sox(*args: str) -> None:
    subprocess.run(["sox", *args], check=True, capture_output=True)


def wav_format(path: Path) -> tuple[int, int, int]:
    with wave.open(str(path)) as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth()


@pytest.mark.parametrize("suffix", [".wav", ".mp3"])
def test_convert_any_recording_to_asterisk_wav(tmp_path: Path, suffix: str) -> None:
    # 44.1 kHz stereo: 0.5 s silence, 1 s tone, 0.5 s silence.
    src = tmp_path / f"source{suffix}"
    sox("-n", "-r", "44100", "-c", "2", str(src), "synth", "1", "sine", "440", "pad", "0.5", "0.5")
    convert(src, tmp_path / "out" / "greeting")
    assert wav_format(tmp_path / "out" / "greeting.wav") == (8000, 1, 2)
    assert wav_format(tmp_path / "out" / "greeting.wav16") == (16000, 1, 2)
    # The silence at each end is trimmed to 0.15 s (MP3 adds a few ms of padding).
    duration = wav_duration(tmp_path / "out" / "greeting.wav", 8000)
    assert duration == pytest.approx(1.3, abs=0.06)


def test_conversion_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "src.wav"
    sox("-n", "-r", "22050", "-b", "24", str(src), "synth", "0.5", "pinknoise")
    convert(src, tmp_path / "a")
    convert(src, tmp_path / "b")
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_import_recording_converts_only_changed_content(tmp_path: Path) -> None:
    src = tmp_path / "rec.wav"
    sox("-n", "-r", "44100", str(src), "synth", "0.3", "sine", "300")
    dest = tmp_path / "custom" / "acme" / "en"
    assert import_recording(src, dest, "success") is True
    assert import_recording(src, dest, "success") is False
    sox("-n", "-r", "44100", str(src), "synth", "0.3", "sine", "600")
    assert import_recording(src, dest, "success") is True
    (dest / "success.wav16").unlink()
    assert import_recording(src, dest, "success") is True


@pytest.mark.parametrize("effect", [["trim", "0", "0"], ["vol", "0"], ["gain", "-70"]])
def test_a_recording_with_no_sound_is_refused(tmp_path: Path, effect: list[str]) -> None:
    # Empty, silent (a muted microphone), or under the trim threshold: each was converted to
    # 0.3 s of silence and accepted, and callers heard nothing where the prompt should be.
    src = tmp_path / "rec.wav"
    sox("-n", "-r", "44100", "-b", "16", str(src), "synth", "1", "sine", "300", *effect)
    with pytest.raises(prompts.AudioError, match="no sound"):
        import_recording(src, tmp_path / "custom", "greeting")
    assert not (tmp_path / "custom" / "greeting.wav").exists()


def test_synthesize_organization_name(tmp_path: Path) -> None:
    voice, _ = pick_voice("fr")
    assert synthesize("Ici Contoso.", voice, tmp_path, "organization_name") is True
    assert wav_format(tmp_path / "organization_name.wav") == (8000, 1, 2)
    assert 0.3 < wav_duration(tmp_path / "organization_name.wav", 8000) < 3
    assert synthesize("Ici Contoso.", voice, tmp_path, "organization_name") is False


def test_without_mbrola_the_plain_voice_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prompts, "MBROLA_DIRS", (tmp_path,))
    voice, warning = pick_voice("fr")
    assert voice.espeak == "fr-fr" and not voice.mbrola
    assert warning is not None and "apt-get install mbrola mbrola-fr4" in warning
    assert pick_voice("fr", mbrola=False) == (voice, None)


def write_wav(path: Path, rate: int, seconds: float = 0.1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(rate * seconds))


@pytest.fixture
def sounds(tmp_path: Path) -> Path:
    return install_shipped(tmp_path / "sounds")


def install_shipped(root: Path) -> Path:
    """A sounds folder with the shipped manifest and prompts (silent, written directly)."""
    for lang in ("en", "fr"):
        for message in ALL:
            write_wav(root / "phonemfa" / lang / f"{message}.wav", 8000)
            write_wav(root / "phonemfa" / lang / f"{message}.wav16", 16000)
    manifest = {
        "prompts": {lang: {m: {} for m in ALL} for lang in ("en", "fr")},
        "templates": dict(SHIPPED.templates),
    }
    (root / "phonemfa" / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_load_shipped(sounds: Path) -> None:
    assert load_shipped(sounds) == SHIPPED


def test_check_passes_with_shipped_prompts(sounds: Path) -> None:
    assert check_prompts(PromptCatalog(SHIPPED), sounds) == []


def test_check_names_tenant_language_message_and_path_of_a_missing_file(
    sounds: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "bonjour.wav"
    catalog = PromptCatalog(SHIPPED, tenant="acme", custom={"fr": {"greeting": str(missing)}})
    [finding] = check_prompts(catalog, sounds)
    assert (finding.severity, finding.tenant, finding.language) == ("error", "acme", "fr")
    assert (finding.message, finding.path) == ("greeting", str(missing))
    assert str(finding) == (
        f"error: tenant 'acme', language fr, message greeting: recording not found ({missing})"
    )


def test_check_undecodable_long_and_missing_sounds(
    sounds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    junk = tmp_path / "junk.mp3"
    junk.write_text("not audio")
    long = tmp_path / "long.wav"
    sox("-n", "-r", "8000", str(long), "synth", "1.5", "sine", "300")
    monkeypatch.setattr(prompts, "LONG_PROMPT_SECONDS", 1.0)
    custom = {"en": {"denied": str(junk), "retry": str(long), "goodbye": "sound:nope/none"}}
    found = {
        (f.severity, f.message): f.text
        for f in check_prompts(PromptCatalog(SHIPPED, custom=custom), sounds)
    }
    assert found.keys() == {("error", "denied"), ("warning", "retry"), ("error", "goodbye")}
    assert "sox cannot decode" in found["error", "denied"]
    assert "1.5 s" in found["warning", "retry"]
    assert "'nope/none' not found" in found["error", "goodbye"]


def test_check_a_missing_shipped_prompt(sounds: Path) -> None:
    (sounds / "phonemfa" / "fr" / "success.wav").unlink()
    [finding] = check_prompts(PromptCatalog(SHIPPED), sounds)
    assert (finding.severity, finding.language, finding.message) == ("error", "fr", "success")
    assert "make prompts" in finding.text


def test_check_refuses_shipped_fraud_prompts_that_announce_another_code(sounds: Path) -> None:
    custom = {"en": {"greeting_fraud": "sound:phonemfa/en/greeting"}}
    catalog = PromptCatalog(SHIPPED, custom=custom)
    findings = check_prompts(catalog, sounds, fraud_code="5#")
    assert {f.severity for f in findings} == {"error"}
    found = {(f.language, f.message) for f in findings}
    assert found == {
        ("en", "code_prompt_fraud"),
        ("fr", "greeting_fraud"),
        ("fr", "code_prompt_fraud"),
    }
    assert check_prompts(catalog, sounds, fraud_code=None) == []


def test_check_finds_sounds_behind_chroot_symlinks(sounds: Path, tmp_path: Path) -> None:
    # The sandbox: <root>/usr/share/asterisk/sounds/en -> /etc/alternatives/prompt-en
    root = tmp_path / "root"
    real = root / "usr" / "share" / "asterisk" / "sounds" / "en_US_f_Allison"
    real.mkdir(parents=True)
    (real / "vm-goodbye.gsm").write_bytes(b"\0" * 33)
    (root / "etc" / "alternatives").mkdir(parents=True)
    (root / "etc" / "alternatives" / "prompt-en").symlink_to(
        "/usr/share/asterisk/sounds/en_US_f_Allison"
    )
    sounds_dir = real.parent
    (sounds_dir / "en").symlink_to("/etc/alternatives/prompt-en")
    (sounds_dir / "phonemfa").symlink_to(sounds / "phonemfa")
    catalog = PromptCatalog(SHIPPED, custom={"en": {"goodbye": "sound:vm-goodbye"}})
    assert check_prompts(catalog, sounds_dir) == []


@pytest.mark.parametrize("folder", ["fr_CA", "fr"])
def test_check_finds_a_regional_sound_where_asterisk_does(sounds: Path, folder: str) -> None:
    # A call in fr-CA plays with lang fr_CA: Asterisk looks in fr_CA/, then fr/ (it strips at
    # '_'), then no language, then en/. The check looked in fr-ca/ (no such folder for
    # Asterisk) and skipped fr/: it refused to start for a sound Asterisk plays.
    write_wav(sounds / folder / "custom" / "bonjour.wav", 8000)
    catalog = PromptCatalog(SHIPPED, custom={"fr-CA": {"greeting": "sound:custom/bonjour"}})
    assert catalog.get(MessageType.GREETING, "fr-CA").language == "fr_CA"
    assert check_prompts(catalog, sounds) == []


def test_check_does_not_find_a_sound_in_a_folder_asterisk_never_reads(sounds: Path) -> None:
    write_wav(sounds / "fr-ca" / "custom" / "bonjour.wav", 8000)  # Asterisk reads fr_CA/
    catalog = PromptCatalog(SHIPPED, custom={"fr-CA": {"greeting": "sound:custom/bonjour"}})
    [finding] = check_prompts(catalog, sounds)
    assert "'custom/bonjour' not found" in finding.text


@pytest.mark.parametrize(
    ("name", "rate", "channels"),
    [("hello.wav", 22050, 1), ("hello.wav", 8000, 2), ("hello.wav16", 8000, 1)],
)
def test_check_refuses_a_sound_wav_asterisk_cannot_play(
    sounds: Path, name: str, rate: int, channels: int
) -> None:
    # Asterisk's format_wav plays only mono 16-bit, 8 kHz as .wav and 16 kHz as .wav16; any
    # other fails silently at call time (DESIGN 8): the check said the sound was fine.
    path = sounds / "en" / "custom" / name
    path.parent.mkdir(parents=True)
    sox("-n", "-r", str(rate), "-c", str(channels), "-b", "16", "-t", "wav", str(path),
        "synth", "0.2", "sine", "300")  # fmt: skip
    catalog = PromptCatalog(SHIPPED, custom={"en": {"goodbye": "sound:custom/hello"}})
    [finding] = check_prompts(catalog, sounds)
    assert (finding.severity, finding.message, finding.path) == ("error", "goodbye", str(path))
    assert "Asterisk cannot play" in finding.text


# --- make prompts: the wordings and the manifest ----------------------------------------------


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_prompts", REPO / "scripts" / "make_prompts.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wordings_have_every_message_in_both_languages() -> None:
    wordings = load_script().load_wordings(REPO / "prompts" / "wordings.yaml")
    for lang in prompts.SUPPORTED_LANGUAGES:
        assert set(wordings[lang]) == {m.value for m in MessageType}
        assert "{name}" in wordings[lang]["organization_name"]
    assert "pound" in wordings["en"]["greeting"]
    assert "dièse" in wordings["fr"]["greeting"]


def test_manifest_lists_every_message_in_both_languages(tmp_path: Path) -> None:
    script = load_script()
    wordings = script.load_wordings(REPO / "prompts" / "wordings.yaml")

    def fake_speaker(text: str, voice: prompts.Voice, out: Path) -> None:
        sox("-n", "-r", "22050", str(out), "synth", "0.1", "sine", "440")

    voices = {lang: pick_voice(lang, mbrola=False)[0] for lang in wordings}
    manifest = script.build(wordings, tmp_path, voices, speaker=fake_speaker, engine="test")
    for lang in ("en", "fr"):
        assert set(manifest["prompts"][lang]) == ALL
        assert manifest["templates"][lang] == wordings[lang]["organization_name"]
        entry = manifest["prompts"][lang]["greeting"]
        assert entry["duration"] == pytest.approx(0.4, abs=0.01)  # 0.1 s + 2 x 0.15 s padding
        assert set(entry["sha256"]) == {"wav", "wav16"}
        assert (tmp_path / lang / "greeting.wav16").is_file()


# --- phonemfa prompts check -------------------------------------------------------------------


def run_prompts_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="phonemfa")
    add_prompts_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def test_prompts_check_fails_naming_the_missing_file(
    sounds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "acme-bonjour.wav"
    config = tmp_path / "phonemfa.yaml"
    config.write_text(
        f"ari: {{password: x}}\napi: {{tokens: [t]}}\nsounds: {{dir: {sounds}}}\n"
        f"tenants:\n  default: {{}}\n  acme:\n    prompts:\n      fr: {{greeting: {missing}}}\n"
    )
    assert run_prompts_cli("prompts", "check", "--config", str(config)) == 1
    out = capsys.readouterr().out
    assert (
        f"error: tenant 'acme', language fr, message greeting: recording not found ({missing})"
        in out
    )
    assert "FAILED: 1 error(s)" in out
    assert run_prompts_cli("prompts", "check", "--config", str(config), "--tenant", "default") == 0


def test_prompts_commands_need_no_secret(
    sounds: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PHONEMFA_TEST_ARI_PASSWORD", raising=False)
    config = tmp_path / "phonemfa.yaml"
    config.write_text(
        "ari:\n  password: ${PHONEMFA_TEST_ARI_PASSWORD}\napi: {tokens: [t]}\n"
        f"sounds: {{dir: {sounds}}}\ntenants: {{default: {{}}}}\n"
    )
    assert run_prompts_cli("prompts", "check", "--config", str(config)) == 0
    assert run_prompts_cli("prompts", "show", "--config", str(config)) == 0
    assert "prompts check: ok" in capsys.readouterr().out


def test_prompts_show_marks_a_regional_default_and_takes_any_spelling(
    sounds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The config spells fr-CA, the catalog fr-ca: "(default)" was never shown, and
    # --language fr_CA (the spelling the catalog accepts) showed nothing, exiting 0.
    config = tmp_path / "phonemfa.yaml"
    config.write_text(
        f"ari: {{password: x}}\napi: {{tokens: [t]}}\nsounds: {{dir: {sounds}}}\n"
        "tenants:\n  acme:\n    language: fr-CA\n"
        "    prompts: {fr-CA: {success: 'sound:phonemfa/fr/success'}}\n"
        "  quebec: {language: fr-CA}\n"
    )
    assert run_prompts_cli("prompts", "show", "-c", str(config), "--language", "fr_CA") == 0
    out = capsys.readouterr().out
    assert "tenant 'acme', language fr-ca (default)\n" in out
    assert "  success                sound:phonemfa/fr/success  [custom]" in out
    assert run_prompts_cli("prompts", "show", "-c", str(config), "-t", "quebec") == 0
    assert "tenant 'quebec', language fr (default)\n" in capsys.readouterr().out


# --- service start: prompt_setup -------------------------------------------------------------


def setup_config(sounds: Path, **tenants: dict[str, object]) -> Config:
    return Config.model_validate(
        {
            "ari": {"password": "x"},
            "api": {"tokens": ["t"]},
            "sounds": {"dir": str(sounds)},
            "tenants": {"default": {}, **tenants},
        }
    )


def catalogs_of(config: Config, shipped: Shipped = SHIPPED) -> dict[str, PromptCatalog]:
    return {n: PromptCatalog.for_tenant(n, t, shipped) for n, t in config.tenants.items()}


@pytest.mark.parametrize("effect", [["trim", "0", "0"], ["vol", "0"], ["gain", "-70"]])
def test_a_recording_with_no_sound_is_refused_before_anything_is_converted(
    sounds: Path, tmp_path: Path, effect: list[str]
) -> None:
    # Found by review: refused only while converting, after the tenant's other recordings
    # had replaced what callers hear: a settings PUT refused, and yet heard.
    good, silent = tmp_path / "good.wav", tmp_path / "silent.wav"
    sox("-n", "-r", "8000", str(good), "synth", "0.5", "sine", "440")
    sox("-n", "-r", "8000", "-c", "2", str(silent), "synth", "0.5", "sine", "440", *effect)
    acme = {"prompts": {"en": {"greeting": str(good), "denied": str(silent)}}}
    config = setup_config(sounds, acme=acme)
    with pytest.raises(PromptSetupError) as info:
        prepare_prompts(config, catalogs_of(config))
    [finding] = info.value.findings
    assert (finding.message, finding.path) == ("denied", str(silent))
    assert "no sound in it" in finding.text
    assert not (sounds / "phonemfa-custom").exists()  # the greeting was not converted


def test_prepare_prompts_converts_recordings_and_speaks_the_name(
    sounds: Path, tmp_path: Path
) -> None:
    src = tmp_path / "hello-44k.wav"
    sox("-n", "-r", "44100", "-c", "2", str(src), "synth", "0.5", "sine", "440")
    acme = {"organization_name": "Acme", "prompts": {"en": {"greeting": str(src)}}}
    config = setup_config(sounds, acme=acme)
    assert prepare_prompts(config, catalogs_of(config)) == []
    folder = sounds / "phonemfa-custom" / "acme"
    assert wav_format(folder / "en" / "greeting.wav") == (8000, 1, 2)
    assert wav_format(folder / "fr" / "organization_name.wav16") == (16000, 1, 2)
    assert not (sounds / "phonemfa-custom" / "default").exists()


def test_a_tenant_kept_from_its_stored_settings_has_its_prompts_prepared(
    sounds: Path, tmp_path: Path
) -> None:
    # Found by review: a tenant no longer in the file but kept with its settings stored
    # through the API was skipped: on a new sounds.dir its recording was never converted.
    src = tmp_path / "hello.wav"
    sox("-n", "-r", "8000", str(src), "synth", "0.5", "sine", "440")
    config = setup_config(sounds)
    stored = TenantSettings.model_validate({"prompts": {"en": {"greeting": str(src)}}})
    catalogs = {**catalogs_of(config), "acme": PromptCatalog.for_tenant("acme", stored, SHIPPED)}
    assert prepare_prompts(config, catalogs, {**config.tenants, "acme": stored}) == []
    assert wav_format(sounds / "phonemfa-custom" / "acme" / "en" / "greeting.wav") == (8000, 1, 2)
    # One that cannot be prepared is said, but does not stop the service: neither the file
    # (stored settings win) nor the API (down) could lift that.
    missing = TenantSettings.model_validate({"prompts": {"en": {"greeting": "/nowhere.wav"}}})
    catalogs["acme"] = PromptCatalog.for_tenant("acme", missing, SHIPPED)
    [said] = prepare_prompts(config, catalogs, {**config.tenants, "acme": missing})
    assert (said.severity, said.tenant, said.message) == ("error", "acme", "greeting")
    assert "recording not found" in said.text


def test_prepare_prompts_refuses_naming_every_problem_with_absolute_paths(
    sounds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths are taken from the working directory
    (tmp_path / "junk.wav").write_text("not audio")
    acme = {"prompts": {"fr": {"greeting": "missing.wav", "success": "junk.wav"}}}
    config = setup_config(sounds, acme=acme)
    with pytest.raises(PromptSetupError) as caught:
        prepare_prompts(config, catalogs_of(config))
    text = str(caught.value)
    assert "2 prompt problem(s), not starting" in text
    assert f"message greeting: recording not found ({tmp_path / 'missing.wav'})" in text
    assert f"message success: sox cannot decode {Path('junk.wav')}" in text
    assert "phonemfa prompts check" in text
    assert {f.message for f in caught.value.findings} == {"greeting", "success"}
    assert not (sounds / "phonemfa-custom").exists()  # nothing half-installed


def test_prepare_prompts_warns_but_starts(
    sounds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = tmp_path / "long.wav"
    sox("-n", "-r", "8000", str(long), "synth", "1.5", "sine", "300")
    monkeypatch.setattr(prompts, "LONG_PROMPT_SECONDS", 1.0)
    config = setup_config(sounds, acme={"prompts": {"en": {"retry": str(long)}}})
    warnings = prepare_prompts(config, catalogs_of(config))
    assert warnings and all(w.severity == "warning" and w.tenant == "acme" for w in warnings)


@pytest.mark.parametrize("with_sounds_dir", [True, False])
def test_a_fraud_code_the_shipped_prompts_do_not_announce_is_refused(
    sounds: Path, with_sounds_dir: bool
) -> None:
    # Found by review: only a warning (and none for a code set through the API, or without
    # sounds.dir): callers told "zero then pound" had their 0# read as a wrong answer.
    config = setup_config(sounds, acme={"fraud": {"code": "9#"}})
    if not with_sounds_dir:
        no_dir = config.sounds.model_copy(update={"dir": None})
        config = config.model_copy(update={"sounds": no_dir})
    with pytest.raises(PromptSetupError) as info:
        prepare_prompts(config, catalogs_of(config))
    found = {(f.tenant, f.language, f.message) for f in info.value.findings}
    assert {("acme", "en", "greeting_fraud"), ("acme", "fr", "code_prompt_fraud")} <= found
    assert all(f.severity == "error" and "announces 0#" in f.text for f in info.value.findings)
    # Recorded in every language the tenant serves: its code stands.
    recorded = {m: "sound:custom/fraud" for m in ("greeting_fraud", "code_prompt_fraud")}
    config = setup_config(
        sounds, acme={"fraud": {"code": "9#"}, "prompts": {"en": recorded, "fr": recorded}}
    )
    catalogs = catalogs_of(config)
    assert not unannounced_fraud_code(catalogs["acme"], "9#")


def test_the_start_checks_the_fraud_code_in_effect_with_the_prompts_in_effect() -> None:
    # Found by review: the config file says 9# with its fraud prompts recorded; the API set
    # 0# and removed them. The start checked the file's 9# against the shipped prompts in
    # effect, and would not start.
    recorded = {m: f"sound:custom/{m}" for m in ("greeting_fraud", "code_prompt_fraud")}
    acme = {"fraud": {"code": "9#"}, "prompts": {"en": recorded, "fr": recorded}}
    data = {"ari": {"password": "x"}, "api": {"tokens": ["t"]}, "tenants": {"acme": acme}}
    config = Config.model_validate(data)
    engine = Engine(config)
    assert prepare_prompts(config, engine.catalogs, engine.tenants) == []
    changed = config.tenants["acme"].model_copy(
        update={"fraud": config.tenants["acme"].fraud.model_copy(update={"code": "0#"})}
    )
    engine.set_tenant("acme", changed.model_copy(update={"prompts": {}}))
    assert prepare_prompts(config, engine.catalogs, engine.tenants) == []


def test_without_sounds_dir_only_tenants_that_need_files_are_refused() -> None:
    def config(**acme: object) -> Config:
        data = {"ari": {"password": "x"}, "api": {"tokens": ["t"]}, "tenants": {"acme": acme}}
        return Config.model_validate(data)

    plain = config(prompts={"en": {"greeting": "sound:custom/hello"}})
    assert prepare_prompts(plain, catalogs_of(plain)) == []
    named = config(organization_name="Acme")
    with pytest.raises(PromptSetupError, match="sounds.dir is not set"):
        prepare_prompts(named, catalogs_of(named))


def test_a_missing_sox_is_said_not_taken_for_a_bad_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: without sox, a good recording read "not audio, or an unknown format".
    src = tmp_path / "rec.wav"
    sox("-n", "-r", "8000", "-b", "16", str(src), "synth", "0.3", "sine", "300")
    assert 0.25 < prompts.probe(src) < 0.35
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(prompts.AudioError, match="sox is not installed"):
        prompts.probe(src)
