#!/usr/bin/env python3
"""Speak prompts/wordings.yaml into the shipped prompts: `make prompts`.

    scripts/make_prompts.py [--wordings prompts/wordings.yaml] [--out asterisk/sounds]
                            [--no-mbrola]

Writes <out>/<lang>/<message>.wav (8 kHz) and .wav16 (16 kHz), mono 16-bit, level-normalised,
silence trimmed, and <out>/manifest.json (duration and SHA-256 of each file, the voice, and the
organisation-name templates). Same wordings, same voices and tools: same bytes.

Uses the MBROLA voices (more natural) when installed, else espeak-ng's own voices with a
warning; --no-mbrola (or PHONEMFA_NO_MBROLA=1) forces the latter.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from phonemfa.messages import MessageType
from phonemfa.prompts import (
    MANIFEST,
    OUTPUTS,
    SUPPORTED_LANGUAGES,
    Voice,
    convert,
    pick_voice,
    speak,
    wav_duration,
)

REPO = Path(__file__).resolve().parents[1]
TEMPLATED = {MessageType.ORGANIZATION_NAME.value}
"""Messages spoken per tenant at service start; the manifest carries their template."""

Speaker = Callable[[str, Voice, Path], None]


def load_wordings(path: Path) -> dict[str, dict[str, str]]:
    """The wordings, checked: every message type in every supported language, nothing else."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping of languages")
    wanted = {m.value for m in MessageType}
    problems = []
    for lang in SUPPORTED_LANGUAGES:
        got = data.get(lang) or {}
        if missing := sorted(wanted - set(got)):
            problems.append(f"{lang}: missing {', '.join(missing)}")
        if unknown := sorted(set(got) - wanted):
            problems.append(f"{lang}: unknown message types {', '.join(unknown)}")
        for message in TEMPLATED & set(got):
            if "{name}" not in str(got[message]):
                problems.append(f"{lang}: {message} must contain {{name}}")
    if problems:
        raise SystemExit(f"{path}: " + "; ".join(problems))
    return {
        lang: {msg: " ".join(str(text).split()) for msg, text in data[lang].items()}
        for lang in SUPPORTED_LANGUAGES
    }


def espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split("Data at")[0].strip()


def build(
    wordings: Mapping[str, Mapping[str, str]],
    out: Path,
    voices: Mapping[str, Voice],
    *,
    speaker: Speaker,
    engine: str,
) -> dict[str, object]:
    """Speak every message of every language into ``out`` and return the manifest."""
    prompts: dict[str, dict[str, object]] = {}
    templates: dict[str, str] = {}
    for lang, messages in wordings.items():
        lang_dir = out / lang
        # Start clean so a message removed from the wordings leaves no stale file behind.
        shutil.rmtree(lang_dir, ignore_errors=True)
        lang_dir.mkdir(parents=True, mode=0o755)
        prompts[lang] = {}
        with tempfile.TemporaryDirectory(prefix="phonemfa-prompts-") as tmp:
            for message, text in sorted(messages.items()):
                if message in TEMPLATED:
                    templates[lang] = text
                    continue
                raw = Path(tmp) / f"{message}.wav"
                speaker(text, voices[lang], raw)
                convert(raw, lang_dir / message)
                files = {s: lang_dir / f"{message}{s}" for s, _ in OUTPUTS}
                prompts[lang][message] = {
                    "text": text,
                    "duration": round(wav_duration(files[".wav"], 8000), 3),
                    "sha256": {
                        s.lstrip("."): hashlib.sha256(p.read_bytes()).hexdigest()
                        for s, p in files.items()
                    },
                }
    return {
        "format": 1,
        "engine": engine,
        "voices": {lang: voices[lang].espeak for lang in wordings},
        "prompts": prompts,
        "templates": templates,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordings", type=Path, default=REPO / "prompts" / "wordings.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "asterisk" / "sounds")
    parser.add_argument("--no-mbrola", action="store_true", help="espeak-ng's own voices only")
    args = parser.parse_args(argv)
    no_mbrola = args.no_mbrola or os.environ.get("PHONEMFA_NO_MBROLA", "0") not in ("", "0")

    wordings = load_wordings(args.wordings)
    voices: dict[str, Voice] = {}
    for lang in wordings:
        voices[lang], warning = pick_voice(lang, mbrola=not no_mbrola)
        if warning:
            print(f"make_prompts: WARNING: {warning}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / MANIFEST).unlink(missing_ok=True)  # no manifest while the audio is half made
    manifest = build(wordings, args.out, voices, speaker=speak, engine=espeak_version())
    # The manifest is written last, atomically: make reruns us if anything above failed.
    tmp = args.out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, args.out / MANIFEST)
    names = ", ".join(f"{lang}: {v.espeak}" for lang, v in voices.items())
    print(f"make_prompts: prompts in {args.out} ({names})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
