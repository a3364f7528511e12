"""`phonemfa prompts check|import|show`: the voice prompts of every tenant in a config.

Registered in cli.py with `add_prompts_commands(subparsers)`; each action sets `handler`.
Exit codes: 0 fine (warnings allowed), 1 an unusable config or a prompt problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from phonemfa.config import Config, ConfigError, load_config
from phonemfa.messages import MessageType
from phonemfa.prompt_setup import fraud_code_of
from phonemfa.prompts import (
    AudioError,
    Finding,
    PromptCatalog,
    PromptError,
    check_prompts,
    greeting_message,
    import_tenant_prompts,
    load_shipped,
    normalize_language,
)

EXIT_OK = 0
EXIT_PROBLEM = 1


class _Stop(Exception):
    """Cannot go on (config, sounds folder, tenant): printed to stderr, exit 1."""


def add_prompts_commands(subparsers: Any) -> None:
    """Add `prompts` and its actions to the `phonemfa` subparsers."""
    prompts = subparsers.add_parser(
        "prompts",
        help="check, import or show the voice prompts",
        description="The voice prompts each tenant's callers hear: shipped ones (make prompts), "
        "custom recordings and the spoken organisation name.",
    )
    actions = prompts.add_subparsers(dest="prompts_action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="verify every prompt each tenant can hear",
        description="Verify that every prompt each tenant can hear, in each of its languages, "
        "exists and is playable; warn about recordings longer than 20 s. Exit 1 on a problem.",
    )
    check.set_defaults(handler=_run_check)
    load = actions.add_parser(
        "import",
        help="convert custom recordings and speak organisation names",
        description="Convert each tenant's recordings to 8/16 kHz mono WAV and speak its "
        "organisation name, into <sounds.dir>/phonemfa-custom/<tenant>/<lang>/. Unchanged "
        "recordings are not converted again. The service does the same at start.",
    )
    load.add_argument(
        "--no-mbrola", action="store_true", help="speak with espeak-ng's own voices only"
    )
    load.set_defaults(handler=_run_import)
    show = actions.add_parser(
        "show",
        help="show which media each message plays",
        description="For each tenant and language, the Asterisk media each message resolves "
        "to and where it comes from (custom, shipped, fallback).",
    )
    show.add_argument("--language", "-l", help="only this language")
    show.set_defaults(handler=_run_show)
    for action in (check, load, show):
        action.add_argument("--config", "-c", metavar="FILE", required=True)
        action.add_argument("--tenant", "-t", help="only this tenant (default: all)")
        action.add_argument(
            "--sounds-dir",
            type=Path,
            metavar="DIR",
            help="Asterisk's sounds folder (default: sounds.dir from the config)",
        )


def _run_check(args: argparse.Namespace) -> int:
    try:
        config, sounds_dir = _load(args)
        catalogs = list(_catalogs(args, config, sounds_dir))
    except _Stop as exc:
        return _stop("check", exc)
    findings: list[Finding] = []
    for catalog in catalogs:
        code = fraud_code_of(config.tenants[catalog.tenant])
        findings += check_prompts(catalog, sounds_dir, fraud_code=code)
    return _report("check", findings, f"{len(catalogs)} tenant(s), sounds in {sounds_dir}")


def _run_import(args: argparse.Namespace) -> int:
    try:
        config, sounds_dir = _load(args)
        catalogs = list(_catalogs(args, config, sounds_dir))
    except _Stop as exc:
        return _stop("import", exc)
    findings: list[Finding] = []
    for catalog in catalogs:
        done, problems = import_tenant_prompts(catalog, sounds_dir, mbrola=not args.no_mbrola)
        for line in done:
            print(line)
        findings += problems
    return _report("import", findings, f"{len(catalogs)} tenant(s) into {sounds_dir}")


def _run_show(args: argparse.Namespace) -> int:
    try:
        config, sounds_dir = _load(args)
        catalogs = list(_catalogs(args, config, sounds_dir))
    except _Stop as exc:
        return _stop("show", exc)
    try:
        only = normalize_language(args.language) if args.language else None
    except PromptError as exc:
        return _stop("show", exc)
    for catalog in catalogs:
        tenant = config.tenants[catalog.tenant]
        # The language its calls are made in by default, as the flow picks it: the config's
        # fr-CA is the catalog's fr-ca, or fr when the tenant has no fr-CA prompt of its own.
        greeting = greeting_message(fraud=tenant.fraud.enabled, code=False)
        default, fell_back = catalog.language_for(None, tenant.language, greeting)
        mark = f" (default, for {tenant.language})" if fell_back else " (default)"
        for lang in catalog.languages:
            if only is not None and lang != only:
                continue
            print(f"tenant {catalog.tenant!r}, language {lang}" + mark * (lang == default))
            for message in MessageType:
                found = catalog.resolve(message, lang)
                if found is None:
                    print(f"  {message:22} -")
                    continue
                origin = (
                    found.origin if found.language == lang else f"{found.origin} {found.language}"
                )
                print(f"  {message:22} {found.media}  [{origin}]")
    return EXIT_OK


def _load(args: argparse.Namespace) -> tuple[Config, Path]:
    try:
        config = load_config(args.config, secrets=False)  # prompts use none
    except ConfigError as exc:
        raise _Stop(str(exc)) from None
    sounds_dir = args.sounds_dir or config.sounds.dir
    if sounds_dir is None:
        raise _Stop(
            f"{args.config}: sounds.dir is not set: give Asterisk's sounds folder as phonemfa "
            "sees it (e.g. /usr/share/asterisk/sounds), or --sounds-dir"
        )
    if not Path(sounds_dir).is_dir():
        raise _Stop(f"sounds folder {sounds_dir} does not exist")
    return config, Path(sounds_dir)


def _catalogs(
    args: argparse.Namespace, config: Config, sounds_dir: Path
) -> Iterator[PromptCatalog]:
    if args.tenant and args.tenant not in config.tenants:
        raise _Stop(f"unknown tenant {args.tenant!r} in {args.config}")
    try:
        shipped = load_shipped(sounds_dir)
    except AudioError as exc:
        raise _Stop(
            f"{exc} (run `make prompts`; install asterisk/sounds as <sounds>/phonemfa)"
        ) from None
    for name, tenant in config.tenants.items():
        if args.tenant in (None, name):
            try:
                yield PromptCatalog.for_tenant(name, tenant, shipped)
            except PromptError as exc:
                raise _Stop(f"tenant {name!r}: {exc}") from None


def _report(action: str, findings: list[Finding], scope: str) -> int:
    errors = [f for f in findings if f.severity == "error"]
    for finding in findings:
        print(finding)
    warnings = len(findings) - len(errors)
    verdict = "FAILED" if errors else "ok"
    print(f"prompts {action}: {verdict}: {len(errors)} error(s), {warnings} warning(s); {scope}")
    return EXIT_PROBLEM if errors else EXIT_OK


def _stop(action: str, exc: Exception) -> int:
    print(f"phonemfa prompts {action}: {exc}", file=sys.stderr)
    return EXIT_PROBLEM
