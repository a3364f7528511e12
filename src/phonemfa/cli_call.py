"""`phonemfa call NUMBER`: one verification call, in this process, with live progress."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import Any, TextIO

from phonemfa.calls import CallRefused, prepare_call
from phonemfa.config import DEFAULT_TENANT, ConfigError, UnknownTenantError, load_config
from phonemfa.engine import Engine
from phonemfa.numbers import NumberError
from phonemfa.outcomes import Outcome

EXIT_APPROVED = 0
EXIT_NOT_APPROVED = 1
EXIT_REFUSED = 2
CONNECT_TIMEOUT = 10.0


class ProgressPrinter:
    """Prints each step as it happens: `  1.23s  ringing`."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.result: tuple[Outcome, str | None] | None = None

    def step(self, event: str, details: dict[str, Any]) -> None:
        if event == "key" and details.get("digit") is None:
            return
        extra = " ".join(f"{k}={_short(v)}" for k, v in details.items() if v is not None)
        print(f"{time.monotonic() - self.t0:7.2f}s  {event:<20} {extra}".rstrip(), file=self.out)
        self.out.flush()

    def outcome(self, outcome: Outcome, reason: str | None) -> None:
        self.result = (outcome, reason)
        why = f" ({reason})" if reason else ""
        print(f"{time.monotonic() - self.t0:7.2f}s  OUTCOME: {outcome}{why}", file=self.out)
        self.out.flush()


def _short(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def add_call_command(sub: Any) -> None:
    p = sub.add_parser(
        "call",
        help="place one verification call and show its progress",
        description="Call NUMBER as a verification call and print each step live: in this "
        "process (--config), or through a running service (--server, --token). Exit code 0 "
        "when approved, 1 for any other outcome, 2 when the number is refused.",
    )
    p.add_argument("number", metavar="NUMBER")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", "-c", metavar="FILE", help="run the call in this process")
    where.add_argument("--server", "-s", metavar="URL", help="a running phonemfa service")
    p.add_argument("--token", help="with --server: API bearer token (or PHONEMFA_TOKEN)")
    p.add_argument("--user", "-u", help="the user being verified (for the record)")
    p.add_argument("--tenant", "-t", default=DEFAULT_TENANT)
    p.add_argument("--language", "-l", help="call language (default: the tenant's)")
    p.add_argument("--code", help="number matching: the code shown on the sign-in screen")
    p.set_defaults(handler=run_call_command)


def run_call_command(args: argparse.Namespace) -> int:
    if args.server:
        from phonemfa.cli_remote import run_remote_call

        return run_remote_call(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"phonemfa call: {exc}", file=sys.stderr)
        return EXIT_NOT_APPROVED
    return asyncio.run(_call(config, args))


async def _call(config: Any, args: argparse.Namespace) -> int:
    engine = Engine(config)
    try:
        catalog = engine.catalog(args.tenant)
        request = prepare_call(
            config,
            config.tenant(args.tenant),
            catalog,
            call_id=str(uuid.uuid4()),
            phone=args.number,
            language=args.language,
            code=args.code,
        )
    except (NumberError, CallRefused, UnknownTenantError) as exc:
        print(f"phonemfa call: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    printer = ProgressPrinter(sys.stdout)
    try:
        await engine.start(connect_timeout=CONNECT_TIMEOUT)
    except TimeoutError:
        print(f"phonemfa call: no ARI connection to {config.ari.url}", file=sys.stderr)
        await engine.stop()
        return EXIT_NOT_APPROVED
    try:
        outcome = await engine.run_call(request, printer)
    finally:
        await engine.stop()
    return EXIT_APPROVED if outcome is Outcome.APPROVED else EXIT_NOT_APPROVED
