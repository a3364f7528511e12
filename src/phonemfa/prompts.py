"""Prompt catalog: which Asterisk media a tenant's call plays, per message type and language.

Shipped prompts (made by `make prompts` from prompts/wordings.yaml) are installed in Asterisk's
sounds folder as ``phonemfa/<lang>/<message>``, with ``phonemfa/manifest.json`` saying what
exists. A tenant may replace any message per language with a recording (a WAV or MP3 file,
converted here) or an existing Asterisk sound (``sound:NAME``). Its ``organization_name``
setting is spoken by espeak-ng into its own folder, ``phonemfa-custom/<tenant>/<lang>/``.

The first half of this module is pure (resolution and composition, unit-tested without I/O);
the second half does the I/O: reading the manifest, sox conversion, espeak-ng, checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from phonemfa.messages import MessageType

__all__ = [
    "CUSTOM_PREFIX",
    "DEFAULT_LANGUAGE",
    "LONG_PROMPT_SECONDS",
    "SHIPPED_PREFIX",
    "SUPPORTED_LANGUAGES",
    "AudioError",
    "CustomSource",
    "Finding",
    "Prompt",
    "PromptCatalog",
    "PromptError",
    "Resolution",
    "Shipped",
    "Voice",
    "check_prompts",
    "greeting_message",
    "unannounced_fraud_code",
    "convert",
    "import_recording",
    "import_tenant_prompts",
    "load_shipped",
    "pick_voice",
    "synthesize",
]

SUPPORTED_LANGUAGES = ("en", "fr")
"""Languages with shipped prompts (and Asterisk core sounds for the digits)."""
DEFAULT_LANGUAGE = "en"
"""The last resort of every fallback."""
SHIPPED_PREFIX = "phonemfa"
"""Sound name prefix of the shipped prompts: ``sound:phonemfa/<lang>/<message>``."""
CUSTOM_PREFIX = "phonemfa-custom"
"""Sound name prefix of converted tenant prompts: ``sound:phonemfa-custom/<tenant>/<lang>/...``.
Beside, not inside, the shipped folder: installing the shipped prompts replaces phonemfa/."""
LONG_PROMPT_SECONDS = 20.0
"""Recordings longer than this get a warning: the flow's timers and callers' patience suffer."""
MANIFEST = "manifest.json"

# Path components we create under Asterisk's sounds folder: nothing that could climb out.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*")


class PromptError(ValueError):
    """A prompt that cannot be resolved or a bad custom prompt setting."""


# --------------------------------------------------------------------------------------------
# Pure part: no I/O below this line until the next banner.
# --------------------------------------------------------------------------------------------


def normalize_language(tag: str) -> str:
    """``fr_CA`` / ``FR-ca`` -> ``fr-ca``; raises PromptError on anything that is no language."""
    norm = tag.strip().replace("_", "-").lower()
    if not _LANGUAGE.fullmatch(norm):
        raise PromptError(f"not a language code: {tag!r}")
    return norm


def _safe_name(kind: str, value: str) -> str:
    if not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise PromptError(f"{kind} {value!r} cannot be used in a file name")
    return value


def shipped_sound(language: str, message: str) -> str:
    """The Asterisk sound name of a shipped prompt."""
    return f"{SHIPPED_PREFIX}/{language}/{message}"


def custom_sound(tenant: str, language: str, message: str) -> str:
    """The Asterisk sound name a tenant's converted recording (or spoken name) gets."""
    return f"{CUSTOM_PREFIX}/{_safe_name('tenant', tenant)}/{language}/{message}"


def asterisk_language(tag: str) -> str:
    """Asterisk's spelling of a language: ``fr-ca`` -> ``fr_CA``. Asterisk looks for
    ``fr_CA/digits/5``, then ``fr/digits/5`` (it strips at ``_``, not ``-``), then ``en/``."""
    first, *rest = normalize_language(tag).split("-")
    return "_".join([first, *(part.upper() if len(part) == 2 else part for part in rest)])


@dataclass(frozen=True)
class Prompt:
    """What to play: ``media`` (in order, as the timeline shows them) and ``lang``.

    ``language`` is the call's language in Asterisk's spelling; the digits of ``digits:``
    media are spoken from Asterisk's sounds in it (fr/digits/5, ...).
    """

    media: tuple[str, ...]
    language: str

    def __add__(self, other: Prompt) -> Prompt:
        if other.language != self.language:
            raise PromptError(f"cannot join {self.language} and {other.language} prompts")
        return Prompt(self.media + other.media, self.language)

    @property
    def playable(self) -> tuple[str, ...]:
        """The media for ARI ``POST /channels/{id}/play``: ``digits:5678`` as
        ``sound:digits/5`` ... ``sound:digits/8``, the files Asterisk's own ``digits:`` says.
        Asterisk 22 ignores a stop while it says ``digits:`` (204, then the digits and the
        rest of the list play on, verified on the sandbox): a '#' during the operator
        prompt's extension left its last words playing and the greeting queued behind them,
        unheard when its keys were read (found by trying the operator example)."""
        played: list[str] = []
        for m in self.media:
            if m.startswith("digits:"):
                played.extend(f"sound:digits/{d}" for d in m.removeprefix("digits:"))
            else:
                played.append(m)
        return tuple(played)


SourceKind = Literal["file", "media", "speech"]
_MEDIA = re.compile(r"(sound|recording):[A-Za-z0-9_][A-Za-z0-9_./-]*")


@dataclass(frozen=True)
class CustomSource:
    """A tenant's replacement for one message in one language.

    ``file``: a recording (WAV, MP3, ... any rate/channels), converted into the tenant's folder.
    ``media``: Asterisk media that already exists, played as is (``sound:NAME``,
    ``recording:NAME``).
    ``speech``: text spoken by espeak-ng into the tenant's folder (the organisation name).
    """

    kind: SourceKind
    value: str

    @classmethod
    def parse(cls, raw: str, base_dir: Path | None = None) -> CustomSource:
        """A config value: Asterisk media or a file path (relative ones are taken from
        ``base_dir`` when given, else from the working directory, like the config's)."""
        raw = raw.strip()
        if not raw:
            raise PromptError("empty prompt source")
        if raw.startswith(("sound:", "recording:")):
            if not _MEDIA.fullmatch(raw) or ".." in raw:
                raise PromptError(f"bad media {raw!r}: use sound:dir/name, without extension")
            return cls("media", raw)
        path = Path(raw).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return cls("file", str(path))


@dataclass(frozen=True)
class Shipped:
    """What `make prompts` installed (from its manifest): messages per language, and the
    organisation-name sentence per language (``{name}`` is replaced by the tenant's setting)."""

    messages: Mapping[str, frozenset[str]]
    templates: Mapping[str, str] = field(default_factory=dict)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.messages)

    def has(self, language: str, message: str) -> bool:
        return message in self.messages.get(language, frozenset())


Origin = Literal["custom", "shipped"]
CustomPrompts = Mapping[str, Mapping[MessageType, str]] | Mapping[str, Mapping[str, str]]
"""language -> message type -> source, as in a tenant's ``prompts`` setting."""


class TenantPrompts(Protocol):
    """What the catalog reads from a tenant's settings (config.TenantSettings)."""

    @property
    def prompts(self) -> Mapping[str, Mapping[MessageType, str]]: ...
    @property
    def organization_name(self) -> str | None: ...


@dataclass(frozen=True)
class Resolution:
    """Where one message in one language comes from."""

    message: str
    language: str
    """The language of the audio chosen (differs from the one asked for on fallback)."""
    media: str
    origin: Origin
    source: CustomSource | None = None


def greeting_message(*, fraud: bool, code: bool) -> MessageType:
    """The verification prompt's message: greeting, greeting_fraud, code_prompt or
    code_prompt_fraud (fraud reporting on, number matching)."""
    if code:
        return MessageType.CODE_PROMPT_FRAUD if fraud else MessageType.CODE_PROMPT
    return MessageType.GREETING_FRAUD if fraud else MessageType.GREETING


_RESOLVED_MAX = 1024


class PromptCatalog:
    """One tenant's prompts. Fallback order for a message in language L:

    1. the tenant's custom prompt in L (for organization_name: its recording, else its spoken name);
    2. the shipped prompt in L;
    3. 1 and 2 for L's primary language when L has a region (``fr-ca`` -> ``fr``);
    4. the tenant's custom prompt in English;
    5. the shipped English prompt.
    """

    def __init__(
        self,
        shipped: Shipped,
        *,
        tenant: str = "default",
        custom: CustomPrompts | None = None,
        organization_name: str | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.shipped = shipped
        self.tenant = _safe_name("tenant", tenant)
        self.organization_name = (organization_name or "").strip() or None
        self.sources: dict[tuple[str, str], CustomSource] = {}
        for raw_lang, messages in (custom or {}).items():
            lang = normalize_language(raw_lang)
            for raw_message, raw_source in messages.items():
                message = _message(raw_message)
                self.sources[lang, message] = CustomSource.parse(raw_source, base_dir)
        if self.organization_name:
            org = MessageType.ORGANIZATION_NAME.value
            for lang, template in shipped.templates.items():
                if (lang, org) not in self.sources:
                    text = template.replace("{name}", self.organization_name)
                    self.sources[lang, org] = CustomSource("speech", text)
        # What resolve() found, by what it was asked: every prompt of every call asks again
        # (five times a call), and a catalog never changes (a tenant's change makes a new one).
        self._resolved: dict[tuple[str, str], Resolution | None] = {}

    @classmethod
    def for_tenant(
        cls, name: str, tenant: TenantPrompts, shipped: Shipped, *, base_dir: Path | None = None
    ) -> PromptCatalog:
        """The catalog of a configured tenant."""
        return cls(
            shipped,
            tenant=name,
            custom=tenant.prompts,
            organization_name=tenant.organization_name,
            base_dir=base_dir,
        )

    @property
    def languages(self) -> tuple[str, ...]:
        """Every language this tenant's callers can be served in: shipped ones first."""
        extra = sorted({lang for lang, _ in self.sources} - set(self.shipped.languages))
        return self.shipped.languages + tuple(extra)

    def language_for(
        self,
        requested: str | None,
        tenant_default: str,
        greeting: MessageType = MessageType.GREETING,
    ) -> tuple[str, bool]:
        """The language to speak and whether it differs from the one requested.

        The requested tag, then its primary subtag (``fr-CA`` -> ``fr``, not a fallback), then
        the tenant's default language, then English. No request means the tenant's default.
        A language of the tenant's own (not shipped) counts when `greeting`, the one the call
        will play (greeting_fraud, code_prompt...), is its own or its primary subtag's: with
        only its success message in German, the call was greeted in English while the
        timeline said German (found by review).
        """
        shipped = self.shipped.languages

        def served(lang: str) -> bool:
            if lang in shipped:
                return True
            if lang not in self.languages:
                return False
            found = self.resolve(greeting, lang)
            return found is not None and found.language in _language_candidates(lang)

        wanted = requested if requested else tenant_default
        for candidate in _language_candidates(wanted):
            if served(candidate):
                return candidate, False
        fallbacks = [*_language_candidates(tenant_default), DEFAULT_LANGUAGE]
        for candidate in fallbacks:
            if served(candidate):
                return candidate, True
        raise PromptError("no language available")  # only with an empty Shipped

    def has_own(self, messages: Iterable[str]) -> bool:
        """Whether the tenant has its own prompt for any of `messages`, in any language."""
        wanted = {_message(m) for m in messages}
        return any(message in wanted for _, message in self.sources)

    def resolve(self, message: str, language: str) -> Resolution | None:
        """Where ``message`` comes from in ``language``; None only for organization_name when
        the tenant has neither a recording nor the setting."""
        key = (message, language)
        try:
            return self._resolved[key]
        except KeyError:
            found = self._resolve(message, language)
            if len(self._resolved) < _RESOLVED_MAX:  # languages come from requests: bounded
                self._resolved[key] = found
            return found

    def _resolve(self, message: str, language: str) -> Resolution | None:
        message = _message(message)
        lang = normalize_language(language)
        for step_lang in dict.fromkeys([*_language_candidates(lang), DEFAULT_LANGUAGE]):
            source = self.sources.get((step_lang, message))
            if source is not None:
                media = (
                    source.value
                    if source.kind == "media"
                    else f"sound:{custom_sound(self.tenant, step_lang, message)}"
                )
                return Resolution(message, step_lang, media, "custom", source)
            if self.shipped.has(step_lang, message):
                media = f"sound:{shipped_sound(step_lang, message)}"
                return Resolution(message, step_lang, media, "shipped")
        if message == MessageType.ORGANIZATION_NAME:
            return None
        raise PromptError(f"no prompt for {message} in {lang} nor in {DEFAULT_LANGUAGE}")

    def get(self, message: str, language: str) -> Prompt:
        """One message as a playable prompt."""
        found = self.resolve(message, language)
        if found is None:
            raise PromptError(f"tenant {self.tenant!r} has no {message} prompt")
        return Prompt((found.media,), asterisk_language(language))

    def greeting(
        self, language: str, *, fraud: bool = False, code: bool = False, organization: bool = True
    ) -> Prompt:
        """The verification prompt: [organisation name] + greeting, greeting_fraud, code_prompt
        or code_prompt_fraud. ``organization=False`` for repeats (after retry)."""
        prompt = self.get(greeting_message(fraud=fraud, code=code), language)
        org = self.resolve(MessageType.ORGANIZATION_NAME, language) if organization else None
        if org is not None:
            prompt = Prompt((org.media, *prompt.media), prompt.language)
        return prompt

    def operator_prompt(self, language: str, extension: str) -> Prompt:
        """operator_transfer + the extension digit by digit + operator_after_digits."""
        if not extension.isascii() or not extension.isdigit():
            raise PromptError(f"extension must be digits only, got {extension!r}")
        before = self.get(MessageType.OPERATOR_TRANSFER, language)
        after = self.get(MessageType.OPERATOR_AFTER_DIGITS, language)
        # digits: is spoken by Asterisk in the playback's lang (fr/digits/5, ...).
        return before + Prompt((f"digits:{extension}",), before.language) + after

    def materialized(self) -> Iterator[tuple[str, str, CustomSource]]:
        """(language, message, source) of every prompt that import must write to the tenant's
        folder: recordings to convert and text to speak."""
        for (lang, message), source in sorted(self.sources.items()):
            if source.kind != "media":
                yield lang, message, source


def _message(value: str) -> str:
    try:
        return MessageType(value).value
    except ValueError:
        known = ", ".join(m.value for m in MessageType)
        raise PromptError(f"unknown message type {value!r} (known: {known})") from None


def _language_candidates(tag: str) -> list[str]:
    try:
        norm = normalize_language(tag)
    except PromptError:
        return []
    return list(dict.fromkeys((norm, norm.split("-")[0])))  # dict: ordered, no duplicates


Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """A problem (error) or a doubt (warning) about one prompt of one tenant."""

    severity: Severity
    tenant: str
    language: str
    message: str
    text: str
    path: str | None = None
    # The tenant setting at fault when it is not the prompt itself (`fraud.code`): where a
    # config file is known, its line is shown (`check-config`).
    field: str | None = None

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return (
            f"{self.severity}: tenant {self.tenant!r}, language {self.language}, "
            f"message {self.message}: {self.text}{where}"
        )


# What the shipped greeting_fraud and code_prompt_fraud tell the caller to press.
SHIPPED_FRAUD_CODE = "0#"
FRAUD_MESSAGES = (MessageType.GREETING_FRAUD, MessageType.CODE_PROMPT_FRAUD)


# --------------------------------------------------------------------------------------------
# I/O: the manifest, sox, espeak-ng, checks.
# --------------------------------------------------------------------------------------------

# Bump when the conversion below changes, so every converted recording is redone.
CONVERSION_VERSION = "2"  # 2: a recording with no sound is refused, not converted
# Rates Asterisk's format_wav reads: .wav is 8 kHz, .wav16 16 kHz; both mono 16-bit.
OUTPUTS = ((".wav", 8000), (".wav16", 16000))
# Leading/trailing silence is cut, then this much is put back: prompts chain without gaps.
PAD_SECONDS = 0.15


class AudioError(RuntimeError):
    """A recording sox cannot read, or a tool that is missing or failed."""


def load_shipped(sounds_dir: Path) -> Shipped:
    """The shipped prompts installed in Asterisk's sounds folder (``phonemfa/manifest.json``)."""
    path = sounds_dir / SHIPPED_PREFIX / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc  # path once
        raise AudioError(f"shipped prompts not installed: cannot read {path}: {why}") from exc
    return Shipped(
        messages={lang: frozenset(msgs) for lang, msgs in data["prompts"].items()},
        templates=dict(data.get("templates", {})),
    )


def sound_path(sounds_dir: Path, sound: str) -> Path:
    """File path (without extension) of an Asterisk sound name."""
    return sounds_dir / sound


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice, MBROLA (more natural) or espeak-ng's own formant voice."""

    language: str
    espeak: str
    """``-v`` argument: ``mb-us1`` (MBROLA) or ``en-us``."""
    speed: int = 160
    amplitude: int = 100

    @property
    def mbrola(self) -> bool:
        return self.espeak.startswith("mb-")


# MBROLA voices: us1 and fr4 are female like Asterisk's core sounds (Allison, June), which speak
# the digits. fr4 saturates at full amplitude, hence 60 (the level is normalised afterwards).
_MBROLA_VOICES = {"en": Voice("en", "mb-us1"), "fr": Voice("fr", "mb-fr4", amplitude=60)}
_ESPEAK_VOICES = {"en": Voice("en", "en-us"), "fr": Voice("fr", "fr-fr")}
MBROLA_DIRS = (Path("/usr/share/mbrola"),)


def pick_voice(language: str, *, mbrola: bool = True) -> tuple[Voice, str | None]:
    """The voice for ``language`` and a warning when MBROLA was wanted but is not installed."""
    lang = normalize_language(language).split("-")[0]
    plain = _ESPEAK_VOICES.get(lang, Voice(lang, lang))
    wanted = _MBROLA_VOICES.get(lang)
    if not mbrola or wanted is None:
        return plain, None
    db = wanted.espeak.removeprefix("mb-")
    if shutil.which("mbrola") and any((d / db / db).is_file() for d in MBROLA_DIRS):
        return wanted, None
    return plain, (
        f"MBROLA voice {db} is not installed: speaking {lang} with espeak-ng's {plain.espeak}, "
        f"which sounds robotic (apt-get install mbrola mbrola-{db}, Debian contrib/non-free)"
    )


def _run(cmd: list[str], *, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(cmd, input=stdin, check=True, capture_output=True, timeout=120)
    except FileNotFoundError as exc:
        raise AudioError(f"{cmd[0]} is not installed") from exc
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace").strip()
        raise AudioError(f"{cmd[0]} failed: {err or f'exit status {exc.returncode}'}") from exc
    except subprocess.TimeoutExpired as exc:
        raise AudioError(f"{cmd[0]} timed out") from exc


def probe(path: Path) -> float:
    """Duration in seconds of any file sox decodes; AudioError if it cannot."""
    if not path.is_file():
        raise AudioError(f"no such file: {path}")
    if shutil.which("sox") is None:  # not the recording's fault (found by review)
        raise AudioError(f"sox is not installed, needed to read {path} (apt-get install sox)")
    try:
        out = _run(["sox", "--i", "-D", *_input_type(path), str(path)])
        return float(out.stdout.decode().strip())
    except (AudioError, ValueError) as exc:
        raise AudioError(f"sox cannot decode {path}: not audio, or an unknown format") from exc


def wav_duration(path: Path, rate: int | None = None) -> float:
    """Duration of a PCM WAV that Asterisk can play (mono, 16-bit, ``rate``); AudioError if
    it is not one (Asterisk fails such a file silently)."""
    try:
        with wave.open(str(path), "rb") as w:
            ok = w.getnchannels() == 1 and w.getsampwidth() == 2
            if not ok or (rate is not None and w.getframerate() != rate):
                raise AudioError(
                    f"{path}: {w.getframerate()} Hz, {w.getnchannels()} channel(s), "
                    f"{8 * w.getsampwidth()}-bit; Asterisk needs mono 16-bit at {rate} Hz"
                )
            return w.getnframes() / w.getframerate()
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioError(f"{path}: not a readable WAV file ({exc})") from exc


def convert(src: Path, dest: Path, *, trim: bool = True) -> None:
    """Convert any audio sox reads into ``dest.wav`` (8 kHz) and ``dest.wav16`` (16 kHz), mono
    16-bit, at one loudness (see _gain_db); with ``trim`` the leading and trailing silence is
    cut to PAD_SECONDS. Files appear atomically: Asterisk never plays a half-written one."""
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    effects = []
    if trim:
        # silence/reverse twice: cut both ends; -50 dB only takes true silence.
        cut = ["silence", "1", "0.02", _QUIET]
        effects += [*cut, "reverse", *cut, "reverse", "pad", str(PAD_SECONDS), str(PAD_SECONDS)]
    with tempfile.TemporaryDirectory(prefix="phonemfa-convert-") as tmp:
        mono = Path(tmp) / "mono.wav"  # float: no rounding before the gain
        _run([*_SOX, *_input_type(src), str(src), *_MONO_FLOAT, str(mono), *effects])
        gain = _gain_db(mono)
        if gain is None:  # converted, it would play as silence (found by review)
            raise AudioError(f"{src}: {_NO_SOUND}")
        for suffix, rate in OUTPUTS:
            out = Path(tmp) / f"out{suffix}"
            _run(
                [
                    *_SOX,
                    str(mono),
                    *_PCM16,
                    str(out),
                    "rate",
                    "-h",
                    str(rate),
                    "gain",
                    f"{gain:.2f}",
                ]
            )
            # Copy next to the destination, then rename: atomic on the destination's filesystem.
            staged = dest.with_name(f".{dest.name}{suffix}.tmp")
            shutil.copyfile(out, staged)
            staged.chmod(0o644)
            os.replace(staged, dest.with_name(dest.name + suffix))


# Trimmed as silence at each end: anything quieter.
QUIET_DB = -50.0
_QUIET = f"{QUIET_DB:g}d"
_NO_SOUND = f"no sound in it (empty, silent, or nothing louder than {QUIET_DB:g} dBFS)"


def has_sound(path: Path) -> bool:
    """Whether anything in ``path`` is louder than QUIET_DB: else its conversion trims it to
    silence. True when sox does not say (the conversion then finds out)."""
    out = _run(["sox", *_input_type(path), str(path), "-n", "stats"]).stderr.decode()
    for line in out.splitlines():
        if line.startswith("Pk lev dB"):
            try:
                return float(line.split()[3]) > QUIET_DB  # overall: the first column
            except (IndexError, ValueError):
                return True
    return True


# -D: no dither, -R: repeatable; the same input gives the same bytes.
_SOX = ["sox", "-D", "-R", "-V1"]
_MONO_FLOAT = ["-t", "wav", "-c", "1", "-e", "floating-point", "-b", "32"]
_PCM16 = ["-t", "wav", "-b", "16", "-e", "signed-integer"]
# Headerless formats Asterisk uses: sox must be told what they are.
_RAW_INPUTS = {
    ".ulaw": ["-t", "ul", "-r", "8000", "-c", "1"],
    ".alaw": ["-t", "al", "-r", "8000", "-c", "1"],
    ".sln": ["-t", "s16", "-r", "8000", "-c", "1"],
    ".sln16": ["-t", "s16", "-r", "16000", "-c", "1"],
}


def _input_type(src: Path) -> list[str]:
    return _RAW_INPUTS.get(src.suffix.lower(), [])


# Loudness of every prompt: speech RMS near Asterisk's English core sounds (about -19 dBFS), so
# our prompts and Asterisk's digits sound alike; peaks stay under the ceiling.
TARGET_RMS_DB = -19.0
PEAK_CEILING_DB = -1.5


def _gain_db(path: Path) -> float | None:
    """The gain that brings `path` to TARGET_RMS_DB; None when it holds only silence."""
    levels = {}
    for line in _run(["sox", str(path), "-n", "stats"]).stderr.decode().splitlines():
        name, _, value = line.rpartition(" ")
        levels[name.strip()] = value
    try:
        rms, peak = float(levels["RMS lev dB"]), float(levels["Pk lev dB"])
    except (KeyError, ValueError):
        return 0.0
    if rms == float("-inf"):
        return None  # silence: nothing to scale
    return min(TARGET_RMS_DB - rms, PEAK_CEILING_DB - peak)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _up_to_date(dest: Path, key: str) -> bool:
    stamp = dest.with_name(dest.name + ".source-sha256")
    outputs = (dest.with_name(dest.name + s) for s, _ in OUTPUTS)
    try:
        return stamp.read_text().strip() == key and all(p.is_file() for p in outputs)
    except OSError:
        return False


def _stamp(dest: Path, key: str) -> None:
    stamp = dest.with_name(dest.name + ".source-sha256")
    stamp.write_text(key + "\n")
    stamp.chmod(0o644)


def import_recording(src: Path, dest_dir: Path, name: str) -> bool:
    """Convert the recording ``src`` into ``dest_dir/name.wav`` and ``.wav16``, unless the
    same content was already converted (keyed by its SHA-256). True when it converted."""
    try:
        content = src.read_bytes()
    except OSError as exc:
        raise AudioError(f"cannot read recording {src}: {exc.strerror or exc}") from exc
    dest = dest_dir / _safe_name("prompt name", name)
    key = _sha256(f"recording {CONVERSION_VERSION}\n".encode() + content)
    if _up_to_date(dest, key):
        return False
    convert(src, dest)
    _stamp(dest, key)
    return True


def speak(text: str, voice: Voice, out: Path) -> None:
    """espeak-ng ``text`` (stdin, plain text: no markup, no option injection) into WAV ``out``."""
    options = ["-b", "1", "-v", voice.espeak, "-s", str(voice.speed), "-a", str(voice.amplitude)]
    _run(["espeak-ng", *options, "-w", str(out), "--stdin"], stdin=text.encode())


def synthesize(text: str, voice: Voice, dest_dir: Path, name: str) -> bool:
    """Speak ``text`` into ``dest_dir/name.wav`` and ``.wav16`` unless that text was already
    spoken with that voice. True when it synthesized."""
    dest = dest_dir / _safe_name("prompt name", name)
    key = _sha256(f"speech {CONVERSION_VERSION}\n{voice!r}\n{text}".encode())
    if _up_to_date(dest, key):
        return False
    with tempfile.TemporaryDirectory(prefix="phonemfa-speak-") as tmp:
        raw = Path(tmp) / "speech.wav"
        speak(text, voice, raw)
        convert(raw, dest)
    _stamp(dest, key)
    return True


def import_tenant_prompts(
    catalog: PromptCatalog, sounds_dir: Path, *, mbrola: bool = True
) -> tuple[list[str], list[Finding]]:
    """Write a tenant's recordings and spoken organisation name into its folder under
    ``sounds_dir`` (at service start and by `phonemfa prompts import`). Returns what was done,
    one line each, and the failures (errors) and voice fallbacks (warnings)."""
    done: list[str] = []
    findings: list[Finding] = []
    for lang, message, source in catalog.materialized():
        dest = sound_path(sounds_dir, custom_sound(catalog.tenant, lang, message))
        what = f"tenant {catalog.tenant!r}, language {lang}, message {message}"
        try:
            if source.kind == "file":
                changed = import_recording(Path(source.value), dest.parent, dest.name)
                action = "converted" if changed else "up to date"
            else:
                voice, warning = pick_voice(lang, mbrola=mbrola)
                if warning:
                    findings.append(Finding("warning", catalog.tenant, lang, message, warning))
                changed = synthesize(source.value, voice, dest.parent, dest.name)
                action = "spoken" if changed else "up to date"
        except AudioError as exc:
            path = source.value if source.kind == "file" else None
            findings.append(Finding("error", catalog.tenant, lang, message, str(exc), path))
            continue
        done.append(f"{what}: {action} -> {dest}.wav ({source.kind} {source.value!r})")
    return done, findings


# Formats Asterisk may find a sound in (sound: sources are existing Asterisk sounds).
_ASTERISK_EXTENSIONS = (
    ".wav",
    ".wav16",
    ".gsm",
    ".ulaw",
    ".alaw",
    ".g722",
    ".sln",
    ".sln16",
    ".g729",
    ".ogg",
    ".WAV",
)


def _heard(
    catalog: PromptCatalog, messages: Iterable[MessageType]
) -> Iterator[tuple[str, MessageType, Resolution | PromptError]]:
    """(language, message, where it comes from) for each of `messages` a caller can hear in
    each of the tenant's languages, once per audio (a language falling back to another's
    prompt yields that prompt once); a message that cannot be resolved yields its error."""
    seen: set[tuple[str, str]] = set()
    for lang in catalog.languages:
        for message in messages:
            try:
                found = catalog.resolve(message, lang)
            except PromptError as exc:
                yield lang, message, exc
                continue
            if found is None or (found.language, message) in seen:
                continue
            seen.add((found.language, message))
            yield found.language, message, found


def check_prompts(
    catalog: PromptCatalog,
    sounds_dir: Path,
    *,
    fraud_code: str | None = SHIPPED_FRAUD_CODE,
    espeak: bool = True,
) -> list[Finding]:
    """Every prompt the tenant can hear, in each of its languages: errors for a missing or
    undecodable recording, a missing Asterisk sound or shipped prompt, and for shipped fraud
    prompts that announce another code than the tenant's ``fraud_code`` (None: fraud reporting
    is off); warnings for a recording longer than LONG_PROMPT_SECONDS."""
    findings: list[Finding] = []
    for lang, message, found in _heard(catalog, MessageType):
        if isinstance(found, PromptError):
            findings.append(Finding("error", catalog.tenant, lang, message, str(found)))
            continue
        for severity, text, path in _check_one(found, sounds_dir, espeak=espeak):
            findings.append(Finding(severity, catalog.tenant, lang, message, text, path))
    return findings + unannounced_fraud_code(catalog, fraud_code)


def unannounced_fraud_code(catalog: PromptCatalog, fraud_code: str | None) -> list[Finding]:
    """Errors for the shipped fraud prompts a caller would hear while the tenant's fraud code
    (None: reporting off) is not the one they announce: told "press zero then pound", the
    caller's 0# would be a wrong answer and their fraud report lost (found by review: it was
    a warning nobody saw for a code set through the API). Needs no file; an unresolvable
    prompt is check_prompts' to report."""
    if fraud_code in (None, SHIPPED_FRAUD_CODE):
        return []
    text = (
        f"the shipped prompt announces {SHIPPED_FRAUD_CODE} but fraud.code is "
        f"{fraud_code}: record this message, or set fraud.code to {SHIPPED_FRAUD_CODE}"
    )
    return [
        Finding("error", catalog.tenant, lang, message, text, field="fraud.code")
        for lang, message, found in _heard(catalog, FRAUD_MESSAGES)
        if isinstance(found, Resolution) and found.origin == "shipped"
    ]


def _check_one(
    found: Resolution, sounds_dir: Path, *, espeak: bool
) -> list[tuple[Severity, str, str | None]]:
    lang, message, source = found.language, found.message, found.source
    if source is None:
        base = sound_path(sounds_dir, shipped_sound(lang, message))
        try:
            for suffix, rate in OUTPUTS:
                wav_duration(Path(f"{base}{suffix}"), rate)
        except AudioError as exc:
            hint = "run `make prompts` and install asterisk/sounds as <sounds>/phonemfa"
            return [("error", f"shipped prompt missing or unplayable: {exc} ({hint})", str(base))]
    elif source.kind == "file":
        if not Path(source.value).is_file():
            return [("error", "recording not found", source.value)]
        try:
            seconds = probe(Path(source.value))
            silent = seconds == 0 or not has_sound(Path(source.value))
        except AudioError as exc:
            return [("error", str(exc), source.value)]
        if silent:  # refused here, before any conversion: a PUT refused changes nothing
            return [("error", _NO_SOUND, source.value)]
        if seconds > LONG_PROMPT_SECONDS:
            limit = f"over {LONG_PROMPT_SECONDS:.0f} s"
            return [("warning", f"recording lasts {seconds:.1f} s ({limit})", source.value)]
    elif source.kind == "media":
        # recording: media live in Asterisk's spool, which we cannot see: not checked.
        name = source.value.removeprefix("sound:")
        if not source.value.startswith("sound:"):
            return []
        files = _find_sound(sounds_dir, name, lang)
        if not files:
            return [("error", f"Asterisk sound {name!r} not found", str(sounds_dir / name))]
        # Asterisk fails a WAV of another rate or channels silently at call time (DESIGN 8).
        for path, real in files:
            wav_rate = _WAV_RATES.get(path.suffix)
            try:
                if wav_rate is not None:
                    wav_duration(real, wav_rate)
            except AudioError as exc:
                return [("error", f"Asterisk cannot play this sound file: {exc}", str(path))]
    elif espeak:
        if shutil.which("espeak-ng") is None:
            text = "espeak-ng is not installed: cannot speak the organisation name (record it)"
            return [("error", text, None)]
        _, warning = pick_voice(lang)
        if warning:
            return [("warning", warning, None)]
    return []


# The WAV files Asterisk's format_wav reads, and the only rate it takes in each.
_WAV_RATES = dict(OUTPUTS)


def _find_sound(sounds_dir: Path, name: str, language: str) -> list[tuple[Path, Path]]:
    """The files of sound ``name`` Asterisk chooses from for ``language``: every format in
    the first language folder that has one; each as (path, path to read it by). Empty when
    Asterisk finds none."""
    for lang in _asterisk_folders(language):
        base = sounds_dir / lang / name
        found = [
            (path, real)
            for ext in _ASTERISK_EXTENSIONS
            if (real := _located(path := Path(f"{base}{ext}"), sounds_dir)) is not None
        ]
        if found:
            return found
    return []


def _asterisk_folders(language: str) -> list[str]:
    """The language folders Asterisk looks for a sound in, in its order (file.c
    fileexists_core): the language in its spelling, cut at each ``_`` (``fr_CA``, ``fr``), no
    language, English. Not ``fr-ca``: a sound there is never played (found by review)."""
    folders = []
    lang = asterisk_language(language)
    while lang:
        folders.append(lang)
        lang = lang.rpartition("_")[0]
    return list(dict.fromkeys([*folders, "", DEFAULT_LANGUAGE]))


def _located(path: Path, sounds_dir: Path) -> Path | None:
    """``path`` if it exists, also when the sounds folder is inside a chroot (the sandbox):
    there ``en -> /etc/alternatives/...`` means ``<root>/etc/alternatives/...``; each ancestor
    of the sounds folder is tried as that root. None when it exists nowhere."""
    if path.exists():
        return path
    for root in sounds_dir.parents:
        if root != root.parent and (real := _rerooted(path, root)).exists():
            return real
    return None


def _rerooted(path: Path, root: Path) -> Path:
    current = Path(path.anchor)
    for part in path.parts[1:]:
        current = current / part
        for _ in range(16):  # symlink hops, as the kernel's limit
            if not current.is_symlink():
                break
            target = Path(os.readlink(current))
            current = (
                root / target.relative_to("/") if target.is_absolute() else current.parent / target
            )
    return current
