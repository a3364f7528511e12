"""Command line: `phonemfa serve|call|parse|check-config|prompts`.

Each command is one `_add_<name>(subparsers)` function that adds its parser
and sets `handler`; `COMMANDS` lists them. Adding a command is one function
and one line in `COMMANDS`.

Exit codes: 0 fine, 1 unusable configuration or arguments (usage errors too), 2 a
refusal (a number phonemfa would not call).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from phonemfa import __version__
from phonemfa.cli_call import add_call_command, stdout_gone
from phonemfa.cli_remote import add_calls_command
from phonemfa.config import (
    DEFAULT_TENANT,
    Config,
    ConfigError,
    DialProfile,
    TenantSettings,
    TrunkSettings,
    UnknownTenantError,
    format_errors,
    load_config,
    redacted_dump,
)
from phonemfa.numbers import NumberError, PhoneNumber, parse_number
from phonemfa.policy import DialMode, DialPlan, Wait, plan_call
from phonemfa.prompt_setup import PromptSetupError, check_config_prompts, located
from phonemfa.prompts_cli import add_prompts_commands
from phonemfa.server import add_serve_command
from phonemfa.tollfraud import Refusal, check_destination

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_REFUSED = 2

Handler = Callable[[argparse.Namespace], int]
_Subparsers = Any  # argparse's _SubParsersAction is private


class _CliError(Exception):
    """A problem with the command's inputs: printed to stderr, exit 1."""


# --- parse -------------------------------------------------------------------


def _add_parse(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "parse",
        help="show how a phone number would be dialled",
        description="Parse NUMBER as a user's phone number and show how phonemfa would call it: "
        "the dial mode, the exact trunk dial string and the DTMF sent after answer, "
        "or why it would refuse (exit code 2).",
    )
    p.add_argument("number", metavar="NUMBER", help="e.g. '+1 425-555-1234x@5678'")
    p.add_argument(
        "--tenant", "-t", help=f"tenant whose settings apply (default: {DEFAULT_TENANT})"
    )
    p.add_argument(
        "--config", "-c", metavar="FILE", help="config file (default: built-in defaults)"
    )
    p.add_argument("--region", help="override the tenant's region, e.g. FR")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_run_parse)


def _run_parse(args: argparse.Namespace) -> int:
    try:
        name, tenant, trunk, profiles = _parse_context(args)
    except (_CliError, ConfigError) as exc:
        print(f"phonemfa parse: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    report: dict[str, Any] = {"input": args.number, "tenant": name}
    try:
        number = parse_number(args.number, tenant.region)
    except NumberError as exc:
        report["refused"] = {"code": exc.code, "message": exc.message}
        return _emit(args, report, EXIT_REFUSED, tenant)
    report["number"] = _number_fields(number)
    refusal = check_destination(number, tenant)
    if refusal is not None:
        report["refused"] = _refusal_fields(refusal)
        return _emit(args, report, EXIT_REFUSED, tenant)
    report.update(_plan_fields(plan_call(number, tenant, trunk, profiles)))
    return _emit(args, report, EXIT_OK, tenant)


def _parse_context(
    args: argparse.Namespace,
) -> tuple[str, TenantSettings, TrunkSettings, Sequence[DialProfile]]:
    """The tenant, trunk and profiles from --config, or the built-in defaults."""
    name = args.tenant or DEFAULT_TENANT
    if args.config:
        config = load_config(args.config, secrets=False)  # parse uses none
        trunk, profiles = config.trunk, config.dial_profiles
        try:
            tenant = config.tenant(name)
        except UnknownTenantError as exc:
            raise _CliError(f"{exc} in {args.config}") from None
    else:
        if name != DEFAULT_TENANT:
            raise _CliError(f"unknown tenant {name!r} (without --config only 'default' exists)")
        tenant, trunk, profiles = TenantSettings(), TrunkSettings(), ()
    if args.region:
        try:
            tenant = TenantSettings.model_validate(tenant.model_dump() | {"region": args.region})
        except ValidationError as exc:
            raise _CliError(f"--region: {'; '.join(format_errors(exc))}") from None
    return name, tenant, trunk, profiles


def _number_fields(number: PhoneNumber) -> dict[str, Any]:
    return {
        "e164": number.e164,
        "country": number.country,
        "national": number.national,
        "type": number.number_type.value,
        "extension": number.extension,
        "operator_forced": number.operator_forced,
    }


def _refusal_fields(refusal: Refusal) -> dict[str, Any]:
    return {"code": refusal.code.value, "message": refusal.message}


def _plan_fields(plan: DialPlan) -> dict[str, Any]:
    return {
        "mode": plan.mode.value,
        "profile": plan.profile.name,
        "number_format": plan.profile.number_format,
        "dialled": plan.dialled,
        "dial_string": plan.dial_string,
        "dtmf": [
            {"wait": s.seconds}
            if isinstance(s, Wait)
            else {"digits": s.digits, "duration_ms": s.duration_ms, "gap_ms": s.gap_ms}
            for s in plan.dtmf
        ],
        "dtmf_string": plan.dtmf_string,
        "dtmf_text": plan.describe_dtmf(),
    }


def _emit(
    args: argparse.Namespace, report: dict[str, Any], code: int, tenant: TenantSettings
) -> int:
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(_text_lines(report, tenant)))
    return code


def _text_lines(report: dict[str, Any], tenant: TenantSettings) -> list[str]:
    assistance = "on" if tenant.operator_assistance else "off"
    rows = [
        ("input", report["input"]),
        (
            "tenant",
            f"{report['tenant']} (region {tenant.region}, operator assistance {assistance})",
        ),
    ]
    number = report.get("number")
    if number:
        rows.append(("number", f"{number['e164']} ({number['country']}, {number['type']})"))
        rows.append(("national", number["national"]))
        if number["extension"]:
            forced = ", operator forced by '@'" if number["operator_forced"] else ""
            rows.append(("extension", number["extension"] + forced))
    if "refused" in report:
        refused = report["refused"]
        rows.append(("refused", f"{refused['code']}: {refused['message']}"))
    else:
        rows.append(("mode", report["mode"]))
        rows.append(("profile", f"{report['profile']} ({report['number_format']})"))
        rows.append(("dial", report["dial_string"]))
        if report["mode"] == DialMode.OPERATOR:
            extension = report["number"]["extension"]
            transfer = f"none: the operator is asked to transfer to extension {extension}"
            rows.append(("dtmf", transfer))
        else:
            rows.append(("dtmf", report["dtmf_text"]))
        if report["dtmf_string"]:
            rows.append(("dtmf string", report["dtmf_string"]))
    width = max(len(k) for k, _ in rows) + 2
    return [f"{k + ':':<{width}}{v}" for k, v in rows]


# --- check-config -------------------------------------------------------------


def _add_check_config(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a configuration file",
        description="Validate FILE and print it with every default filled in and secrets "
        "shown as ***; on error print where (file:line: key) and exit 1. Prompts that "
        "`phonemfa serve` would refuse from the file alone (a recording or a spoken "
        "organization_name without sounds.dir) are errors too.",
    )
    p.add_argument("--config", "-c", metavar="FILE", required=True)
    p.set_defaults(handler=_run_check_config)


def _run_check_config(args: argparse.Namespace) -> int:
    try:
        config: Config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    try:  # what serve refuses at start from the file alone: say it now
        warnings = check_config_prompts(config)
    except PromptSetupError as exc:
        problems = "".join(f"\n  {located(f, args.config)}" for f in exc.findings)
        print(f"{args.config}: `phonemfa serve` would not start:{problems}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in warnings:  # valid, but probably not what was meant
        print(located(warning, args.config), file=sys.stderr)
    print(f"# {args.config}: valid. Effective configuration, secrets shown as ***")
    if DEFAULT_TENANT not in config.tenants:  # valid, but easy to miss (found by review)
        print(
            f"# No tenant is named {DEFAULT_TENANT!r}: every API request, dialplan entry and "
            "`phonemfa call` must name its tenant"
        )
    if config.sounds.dir is not None:
        print(
            "# Prompts are checked in sounds.dir at start: `phonemfa prompts check` checks them now"
        )
    print(yaml.safe_dump(redacted_dump(config), sort_keys=False, allow_unicode=True), end="")
    return EXIT_OK


# --- dispatch -------------------------------------------------------------------

COMMANDS: list[Callable[[_Subparsers], None]] = [
    add_serve_command,
    add_call_command,
    add_calls_command,
    _add_parse,
    _add_check_config,
    add_prompts_commands,
]


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which is our "refused" (found by review: a wrapper
    script read a misspelt option as a refused number): 1, as any argument to fix."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="phonemfa",
        description="Phone-call second factor on Asterisk, with operator assistance.",
    )
    parser.add_argument("--version", action="version", version=f"phonemfa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


# Commands that only show something: a reader that stops reading ends them normally.
# Not `prompts check`: its verdict may be in what was not read (found by review).
_READ_ONLY = frozenset({"calls", "parse", "check-config", "prompts show"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    handler: Handler = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        stdout_gone()
        # `phonemfa calls list | head`: the reader has all it wanted. Anything else (a call,
        # serve) did not finish: never the status of an approval or of a clean stop.
        command = f"{args.command} {getattr(args, 'prompts_action', '')}".strip()
        return EXIT_OK if command in _READ_ONLY else 1
