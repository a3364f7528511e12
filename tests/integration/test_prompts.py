"""The voice prompts on the real Asterisk (issue: prompts, English and French, custom per tenant).

What Asterisk plays, it must find and decode: a missing or badly converted file fails silently
(`PlaybackFinished` with state `failed`, DESIGN §8), so each test checks the playback state, and
what a softphone hears is measured (not silent, about as long as the prompt).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import uuid
import wave
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from phonemfa.engine import Engine
from phonemfa.messages import MessageType
from phonemfa.outcomes import Outcome
from phonemfa.prompt_setup import PromptSetupError
from phonemfa.prompts import (
    CUSTOM_PREFIX,
    PAD_SECONDS,
    Prompt,
    PromptCatalog,
    Shipped,
    wav_duration,
)
from tests.conftest import Sandbox
from tests.support.ari_raw import Event, RawAri
from tests.support.flows import (
    FAST_CALLS,
    NO_LIMITS,
    SANDBOX_ROOT,
    SANDBOX_SOUNDS,
    FlowHarness,
    sandbox_config,
)
from tests.support.softphone import SoftphoneNetwork, wav_stats

pytestmark = pytest.mark.integration

MOBILE = "+1 425 555 0100"
MOBILE_E164 = "+14255550100"  # raw ARI dials the trunk with the number as is
OPERATOR_OFFICE = "+1 425 555 0120"
# Load bot: answers, listens 10 s for an extension, presses keys, waits 30 s more.
LISTENER = "+14255550171"
LANGUAGES = ("en", "fr")


def installed_manifest() -> dict[str, Any]:
    """What `asterisk/sandbox.sh up` installed: the prompts Asterisk has, with durations."""
    data: dict[str, Any] = json.loads((SANDBOX_SOUNDS / "phonemfa" / "manifest.json").read_text())
    return data


# --- measuring what a softphone heard ---------------------------------------------------------

FRAME_SECONDS = 0.02
# -40 dBFS over 20 ms: well under speech (prompts are levelled at -19 dBFS), well over the
# silence of a G.711 call.
SPEECH_RMS = 0.01


def heard_seconds(path: Path) -> float:
    """From the first to the last 20 ms frame louder than SPEECH_RMS: the length of what was
    said, without the silence before the answer and after the playback."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        samples = array.array("h", w.readframes(w.getnframes()))
    size = int(rate * FRAME_SECONDS)
    loud = [
        i
        for i in range(len(samples) // size)
        if _rms(samples[i * size : (i + 1) * size]) > SPEECH_RMS
    ]
    return (loud[-1] - loud[0] + 1) * FRAME_SECONDS if loud else 0.0


def _rms(frame: array.array[int]) -> float:
    return math.sqrt(sum(s * s for s in frame) / len(frame)) / 32768


def spoken_seconds(wav: Path) -> float:
    """The speech in one of our prompt files (8 kHz): without the padding convert() adds."""
    return wav_duration(wav, 8000) - 2 * PAD_SECONDS


def assert_heard_like(path: Path, expected: float, what: str) -> float:
    seconds, level = wav_stats(path)
    heard = heard_seconds(path)
    assert level > 0.01, f"{what}: silent ({seconds:.1f} s at RMS {level:.4f})"
    assert heard == pytest.approx(expected, rel=0.2), f"{what}: heard {heard:.2f} s"
    return heard


# --- raw ARI: play media on a channel ---------------------------------------------------------


def playback_segments(events: list[Event]) -> list[tuple[str, str, float]]:
    """(media, state, seconds) of each media of one playback, from Asterisk's own timestamps.
    A media list's PlaybackFinished says `done` even when a media in the middle is missing
    (it only "continues" at once), so a list is checked media by media."""
    out = []
    for started, ended in zip(events[::2], events[1::2], strict=True):
        assert started["type"] == "PlaybackStarted", events
        seconds = (_time(ended) - _time(started)).total_seconds()
        out.append((started["playback"]["media_uri"], ended["playback"]["state"], seconds))
    return out


def _time(event: Event) -> datetime:
    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")


async def answered_channel(ari: RawAri, number: str) -> str:
    cid = await ari.dial(number)
    await ari.wait_for("ChannelStateChange", cid, lambda e: e["channel"]["state"] == "Up")
    return cid


async def play(ari: RawAri, cid: str, media: list[str], lang: str) -> list[Event]:
    """Play `media` as one playback (in `lang`); its events, up to PlaybackFinished."""
    pid = str(uuid.uuid4())
    # One comma-separated value: of repeated `media` parameters ARI keeps only the last.
    params = {"media": ",".join(media), "lang": lang}
    await ari.request("POST", f"/channels/{cid}/play/{pid}", params=params)
    await ari.wait_for("PlaybackFinished", where=lambda e: e["playback"]["id"] == pid, timeout=40)
    return [e for e in ari.events if e.get("playback", {}).get("id") == pid]


def sandbox_file(relative: str) -> Path:
    """A file in the sandbox root, following its symlinks inside the root
    (sounds/fr -> /etc/alternatives/asterisk-prompt-fr -> /usr/share/.../fr_CA_f_June)."""
    path = SANDBOX_ROOT
    for part in Path(relative).parts:
        path = path / part
        while path.is_symlink():
            target = Path(os.readlink(path))
            path = (
                SANDBOX_ROOT / target.relative_to("/")
                if target.is_absolute()
                else path.parent / target
            )
    return path


def played_whole_at_most(expected: float) -> float:
    """The longest a play of `expected` seconds may take: Asterisk paces media by its timers,
    so on a starved host a play ends a little late (13.13 s for 12.96 s, 5.43 s for 5.25 s
    seen): up to 3 % and 0.15 s more is the pacing, not another file."""
    return expected * 1.03 + 0.15


def played_whole(seconds: float, expected: float) -> bool:
    """Whole: never shorter than the file (less the events' jitter), nor another file."""
    return expected - 0.15 <= seconds <= played_whole_at_most(expected)


def core_digits_seconds(lang: str, digits: str) -> float:
    """How long Asterisk's core sounds take to say `digits` in `lang` (GSM: 33 bytes/20 ms)."""
    sounds = "usr/share/asterisk/sounds"
    return sum(
        sandbox_file(f"{sounds}/{lang}/digits/{d}.gsm").stat().st_size // 33 * 0.02 for d in digits
    )


def _operator_prompt(lang: str, extension: str) -> Prompt:
    """The operator prompt as a call plays it, from the shipped prompts."""
    every = frozenset(m.value for m in MessageType)
    return PromptCatalog(Shipped(messages={lang: every})).operator_prompt(lang, extension)


# --- the shipped prompts ----------------------------------------------------------------------


async def test_every_shipped_prompt_plays_whole_in_both_languages(
    asterisk: Sandbox, ari: RawAri
) -> None:
    manifest = installed_manifest()["prompts"]
    shipped = {m.value for m in MessageType} - {MessageType.ORGANIZATION_NAME.value}
    assert {lang: set(manifest[lang]) for lang in LANGUAGES} == dict.fromkeys(LANGUAGES, shipped)
    jobs = [(lang, message) for lang in LANGUAGES for message in sorted(shipped)]
    # One call each, all at once: in turn they would take 150 s.
    channels = await asyncio.gather(*(answered_channel(ari, LISTENER) for _ in jobs))
    played = await asyncio.gather(
        *(
            play(ari, cid, [f"sound:phonemfa/{lang}/{message}"], lang)
            for cid, (lang, message) in zip(channels, jobs, strict=True)
        )
    )
    for (lang, message), events in zip(jobs, played, strict=True):
        [(_, state, seconds)] = playback_segments(events)
        assert state == "done", f"{lang}/{message}: {state}"
        assert played_whole(seconds, manifest[lang][message]["duration"]), (lang, message, seconds)


async def test_the_french_operator_prompt_says_the_digits_in_french(
    asterisk: Sandbox, ari: RawAri
) -> None:
    manifest = installed_manifest()["prompts"]["fr"]
    cid = await answered_channel(ari, LISTENER)
    media = list(_operator_prompt("fr", "5678").playable)
    events = await play(ari, cid, media, "fr")
    assert {e["playback"]["language"] for e in events} == {"fr"}
    segments = playback_segments(events)
    assert [m for m, _, _ in segments] == media
    assert [s for _, s, _ in segments] == ["continuing"] * 5 + ["done"]
    (_, _, before), *spoken, (_, _, after) = segments
    assert played_whole(before, manifest["operator_transfer"]["duration"]), before
    assert played_whole(after, manifest["operator_after_digits"]["duration"]), after
    # Asterisk spoke fr/digits/5..8 (June), not the English fallback (Allison): 2.7 s vs 3.3 s.
    french, english = core_digits_seconds("fr", "5678"), core_digits_seconds("en", "5678")
    assert english > played_whole_at_most(french) and french < english
    digits = sum(seconds for _, _, seconds in spoken)
    assert played_whole(digits, french), (digits, french, english)


@pytest.mark.parametrize("spoken_as", ["digits", "playable"])
async def test_a_stop_while_the_extension_is_spoken_ends_the_operator_prompt(
    asterisk: Sandbox, ari: RawAri, spoken_as: str
) -> None:
    # Found by trying the operator example: a '#' while Asterisk said `digits:5678` stopped
    # nothing (ARI answered 204, the digits and the prompt's last words played on, and the
    # greeting waited behind them). Said as the digits' own sounds, the stop ends it there.
    prompt = _operator_prompt("en", "5678")
    media = list(prompt.media if spoken_as == "digits" else prompt.playable)
    cid = await answered_channel(ari, LISTENER)
    pid = str(uuid.uuid4())
    params = {"media": ",".join(media), "lang": "en"}
    await ari.request("POST", f"/channels/{cid}/play/{pid}", params=params)
    digit = "digits:5678" if spoken_as == "digits" else "sound:digits/6"
    await ari.wait_for(
        "PlaybackStarted", where=lambda e: e["playback"]["media_uri"] == digit, timeout=20
    )
    await ari.request("DELETE", f"/playbacks/{pid}")
    await ari.wait_for("PlaybackFinished", where=lambda e: e["playback"]["id"] == pid, timeout=20)
    started = [
        e["playback"]["media_uri"]
        for e in ari.events
        if e["type"] == "PlaybackStarted" and e["playback"]["id"] == pid
    ]
    last_words = "sound:phonemfa/en/operator_after_digits"
    if spoken_as == "digits":  # Asterisk's own behaviour, which `Prompt.playable` works around
        assert last_words in started, started
    else:
        assert started[-1] == digit and last_words not in started, started


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_a_phone_hears_the_whole_greeting(
    ari: RawAri, phones: SoftphoneNetwork, tmp_path: Path, lang: str
) -> None:
    mobile = await phones.register("mobile")
    cid = await ari.dial(MOBILE_E164)
    ring = await mobile.next_call()
    recording = tmp_path / f"greeting-{lang}.wav"
    ring.start_recording(recording)
    ring.answer()
    await ari.wait_for("ChannelStateChange", cid, lambda e: e["channel"]["state"] == "Up")
    await ring.wait_media()
    [(_, state, _)] = playback_segments(
        await play(ari, cid, [f"sound:phonemfa/{lang}/greeting"], lang)
    )
    assert state == "done"
    await asyncio.sleep(0.5)  # the last packets reach the phone
    await ring.stop_recording()
    expected = spoken_seconds(SANDBOX_SOUNDS / "phonemfa" / lang / "greeting.wav")
    heard = assert_heard_like(recording, expected, f"{lang} greeting")
    print(f"{lang} greeting: heard {heard:.2f} s, prompt says {expected:.2f} s")


# --- prompts in calls (the flow) --------------------------------------------------------------


async def test_the_operator_hears_the_transfer_request_in_french(
    flows: FlowHarness, phones: SoftphoneNetwork, tmp_path: Path
) -> None:
    operator = await phones.register("operator")
    call = flows.start(f"{OPERATOR_OFFICE} x5678", tenant="ops", language="fr")
    op = await operator.next_call()
    recording = tmp_path / "operator-fr.wav"
    op.start_recording(recording)
    op.answer()
    media = [
        "sound:phonemfa/fr/operator_transfer",
        "digits:5678",
        "sound:phonemfa/fr/operator_after_digits",
    ]
    shown = [m if not m.startswith("digits:") else "digits:***" for m in media]  # masked
    assert await call.reached("operator_prompt") == {"attempt": 1, "media": shown, "language": "fr"}
    # The second attempt starts a pause after the first ended: the first was heard whole.
    await call.reached("operator_prompt", times=2, timeout=40)
    await op.stop_recording()
    first_attempt = call.events()
    op.hangup()  # (ends the second playback: that one is `failed`)
    assert await call.finished() == (Outcome.UNREACHABLE, "hung_up_before_greeting")
    assert not [e for e in first_attempt if e.startswith("playback_")], call.timeline
    assert "language_fallback" not in call.events()
    # What was heard lasts as long as the French prompts with French digits (not English ones).
    folder = SANDBOX_SOUNDS / "phonemfa" / "fr"
    files = (folder / "operator_transfer.wav", folder / "operator_after_digits.wav")
    words = sum(wav_duration(f, 8000) for f in files) - 2 * PAD_SECONDS  # no outer padding
    expected = words + core_digits_seconds("fr", "5678")
    english = words + core_digits_seconds("en", "5678")
    heard = assert_heard_like(recording, expected, "French operator prompt")
    # A loaded host only ever stretches what the softphone records (11.30 s for 10.86 seen
    # once in a full run): up to 3 % + 0.15 s over the French length, still short of English.
    late = expected * 1.03 + 0.15
    assert late < english, (expected, english)  # the test still tells them apart
    assert heard <= late, (heard, expected, english)
    print(f"fr operator prompt: heard {heard:.2f} s, expected {expected:.2f} s (en: {english:.2f})")


async def test_an_unsupported_language_falls_back_to_english(
    flows: FlowHarness, phones: SoftphoneNetwork
) -> None:
    mobile = await phones.register("mobile")
    call = flows.start(MOBILE, language="de")
    ring = await mobile.next_call()
    ring.answer()
    prompt = await call.reached("prompting")
    assert prompt == {"media": ["sound:phonemfa/en/greeting_fraud"], "language": "en"}
    assert call.timeline[0] == ("language_fallback", {"requested": "de", "used": "en"})
    await ring.send_dtmf("#")
    assert await call.finished() == (Outcome.APPROVED, None)


# --- a tenant's own recordings ------------------------------------------------------------------


def make_recording(path: Path, text: str) -> None:
    """What a tenant's admin uploads: speech at 44.1 kHz stereo, as a PC records it."""
    speech = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(speech), text], check=True)
    subprocess.run(["sox", str(speech), "-r", "44100", "-c", "2", str(path)], check=True)


@contextlib.asynccontextmanager
async def custom_tenant_engine(
    asterisk: Sandbox, tenant: str, prompts: dict[str, dict[str, str]]
) -> AsyncIterator[Engine]:
    """An Engine (own Stasis app) whose config has one tenant with these custom prompts; its
    converted prompts are removed from the sandbox afterwards."""
    settings = {"region": "US", "limits": NO_LIMITS, "calls": FAST_CALLS, "prompts": prompts}
    config = sandbox_config(
        f"phonemfa-test-{uuid.uuid4().hex[:6]}",
        asterisk.ari_url,
        asterisk.ari_password,
        tenants={tenant: settings},
    )
    engine = Engine(config)
    try:
        await engine.start(connect_timeout=10)
        yield engine
    finally:
        await engine.stop()
        shutil.rmtree(SANDBOX_SOUNDS / CUSTOM_PREFIX / tenant, ignore_errors=True)


async def test_a_tenant_recording_at_44khz_is_converted_and_played(
    asterisk: Sandbox, phones: SoftphoneNetwork, tmp_path: Path
) -> None:
    tenant = f"test-{uuid.uuid4().hex[:8]}"  # its own folder in the shared sandbox
    upload = tmp_path / "welcome.wav"
    make_recording(upload, "Welcome to Contoso. Press the pound key to sign in.")
    custom = {"greeting": str(upload), "greeting_fraud": str(upload)}
    async with custom_tenant_engine(asterisk, tenant, {"en": custom}) as engine:
        # start() converted it (8 kHz mono) where Asterisk finds it.
        installed = SANDBOX_SOUNDS / CUSTOM_PREFIX / tenant / "en" / "greeting_fraud.wav"
        expected = spoken_seconds(installed)
        flows = FlowHarness(engine)
        try:
            mobile = await phones.register("mobile")
            call = flows.start(MOBILE, tenant=tenant)
            ring = await mobile.next_call()
            recording = tmp_path / "heard.wav"
            ring.start_recording(recording)
            ring.answer()
            prompt = await call.reached("prompting")
            assert prompt == {
                "media": [f"sound:{CUSTOM_PREFIX}/{tenant}/en/greeting_fraud"],
                "language": "en",
            }
            await call.reached("no_input")  # the greeting ended, then nobody pressed a key
            await ring.stop_recording()
            await ring.send_dtmf("#")  # at the repeat
            assert await call.finished() == (Outcome.APPROVED, None)
            assert not [e for e in call.events() if e.startswith("playback_")], call.timeline
        finally:
            await flows.settle()
    heard = assert_heard_like(recording, expected, "custom greeting")
    print(f"custom greeting: heard {heard:.2f} s, converted prompt says {expected:.2f} s")


async def test_a_pound_on_a_greeting_deleted_since_the_start_does_not_approve(
    asterisk: Sandbox, phones: SoftphoneNetwork, tmp_path: Path
) -> None:
    """A tenant's recording removed from Asterisk's sounds after the start: Asterisk ends the
    greeting at once, failed, and the person hears silence. A '#' then (an operator's, a
    person pressing on) answered nothing heard: the call fails, it is not approved (found by
    review: it approved)."""
    tenant = f"test-{uuid.uuid4().hex[:8]}"
    upload = tmp_path / "welcome.wav"
    make_recording(upload, "Welcome. Press the pound key.")
    custom = {"greeting": str(upload), "greeting_fraud": str(upload)}
    async with custom_tenant_engine(asterisk, tenant, {"en": custom}) as engine:
        for installed in (SANDBOX_SOUNDS / CUSTOM_PREFIX / tenant / "en").glob("greeting*"):
            installed.unlink()
        flows = FlowHarness(engine)
        try:
            mobile = await phones.register("mobile")
            call = flows.start(MOBILE, tenant=tenant)
            ring = await mobile.next_call()
            ring.answer()
            failed = await call.reached("playback_failed")
            assert failed["media"] == f"sound:{CUSTOM_PREFIX}/{tenant}/en/greeting_fraud"
            await ring.send_dtmf("#")
            assert await call.finished() == (Outcome.FAILED, "prompt_failed")
            assert call.count("entry") == 1, call.timeline
        finally:
            await flows.settle()


async def test_the_engine_refuses_to_start_when_a_recording_is_missing(
    asterisk: Sandbox, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "bonjour.wav"
    tenant = f"test-{uuid.uuid4().hex[:8]}"
    with pytest.raises(PromptSetupError) as refused:
        async with custom_tenant_engine(asterisk, tenant, {"fr": {"greeting": str(missing)}}):
            pytest.fail("the engine started")
    assert (
        f"error: tenant '{tenant}', language fr, message greeting: recording not found ({missing})"
        in str(refused.value)
    )


def test_prompts_check_command_names_a_missing_recording(asterisk: Sandbox, tmp_path: Path) -> None:
    missing = tmp_path / "acme-bonjour.wav"
    config = tmp_path / "phonemfa.yaml"
    config.write_text(
        f"ari: {{password: x}}\napi: {{tokens: [t]}}\nsounds: {{dir: {SANDBOX_SOUNDS}}}\n"
        f"tenants:\n  default: {{}}\n  acme:\n    prompts:\n      fr: {{greeting: {missing}}}\n"
    )

    def check(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "phonemfa", "prompts", "check", "--config", str(config)]
        return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=60)

    failed = check()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert (
        f"error: tenant 'acme', language fr, message greeting: recording not found ({missing})"
        in failed.stdout
    )
    assert "prompts check: FAILED: 1 error(s)" in failed.stdout
    # The sandbox's installed shipped prompts are complete for a tenant without custom ones.
    fine = check("--tenant", "default")
    assert fine.returncode == 0, fine.stdout + fine.stderr
