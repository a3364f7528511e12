"""`phonemfa call NUMBER --config FILE`: one verification call, in this process, with live
progress (`--server` sends it to a running service instead: cli_remote.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any, TextIO
from urllib.parse import urlsplit

from phonemfa.app_owner import AppTaken
from phonemfa.calls import CallRefused
from phonemfa.config import DEFAULT_TENANT, Config, ConfigError, UnknownTenantError, load_config
from phonemfa.fallback import naming_backup
from phonemfa.numbers import NumberError
from phonemfa.outcomes import Outcome
from phonemfa.prompt_setup import PromptSetupError
from phonemfa.service import CallService, RateLimited, ServiceUnavailable, StartCall
from phonemfa.startup import StartupError, hold_cli_lock, open_service, start_service
from phonemfa.store import CallRecord, TimelineEntry
from phonemfa.users import canonical_user

EXIT_APPROVED = 0
EXIT_NOT_APPROVED = 1
EXIT_REFUSED = 2
# Without --config or --server, `phonemfa call NUMBER` (DESIGN §7) asks the service here, at
# api.listen's default, as `phonemfa calls` does.
DEFAULT_SERVER = "http://127.0.0.1:8080"
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT: the call was ended, not decided
CONNECT_TIMEOUT = 10.0


def stdout_gone() -> None:
    """After a BrokenPipeError on stdout (`| head`): point stdout somewhere that takes what
    is still written, Python's flush at exit included, quietly."""
    with contextlib.suppress(OSError, ValueError):  # no file descriptor (captured)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def end_on_sigterm() -> None:
    """SIGTERM (`timeout 60 phonemfa call ...`, a supervisor) cancels the running task, so
    that the call it started ends as on Ctrl-C."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


def print_entry(entry: TimelineEntry, t0: float, out: TextIO) -> None:
    """One timeline step: `   1.23s  ringing`."""
    extra = " ".join(f"{k}={_short(v)}" for k, v in entry.details.items() if v is not None)
    print(f"{entry.at - t0:7.2f}s  {entry.event:<20} {extra}".rstrip(), file=out)
    out.flush()


def _short(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _given(value: str) -> str:
    # An empty option (say `--code "$CODE"` with CODE unset) is refused, never read as
    # "not given": without its code a number-matching call would approve on '#' alone.
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty")
    return value


def server_url(value: str) -> str:
    """--server: the service's base URL. Without a scheme ("localhost:8080") aiohttp only
    echoes the URL back, and nothing was sent: say what is wrong instead."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            "must be an http:// or https:// URL, e.g. http://127.0.0.1:8080"
        )
    return value.strip()


def _user(value: str) -> str:
    if not canonical_user(value):  # as the API refuses it: no user, out of reach of blocks
        raise argparse.ArgumentTypeError("has no visible characters")
    return value


def add_call_command(sub: Any) -> None:
    p = sub.add_parser(
        "call",
        help="place one verification call and show its progress",
        description="Call NUMBER as a verification call and print each step live: in this "
        "process (--config), or through a running service (--server, --token). Exit code 0 "
        "when approved, 1 for any other outcome, 2 when the number is refused, 130 when "
        "interrupted (Ctrl-C or SIGTERM ends the call).",
    )
    p.add_argument("number", metavar="NUMBER")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", "-c", metavar="FILE", help="run the call in this process")
    where.add_argument(
        "--server",
        "-s",
        metavar="URL",
        type=server_url,
        help=f"a running phonemfa service (the default: {DEFAULT_SERVER})",
    )
    p.add_argument("--token", help="with --server: API bearer token (or PHONEMFA_TOKEN)")
    p.add_argument("--user", "-u", type=_user, help="the user being verified (for the record)")
    p.add_argument("--tenant", "-t", default=DEFAULT_TENANT)
    p.add_argument("--language", "-l", type=_given, help="call language (default: the tenant's)")
    p.add_argument(
        "--code", type=_given, help="number matching: the code shown on the sign-in screen"
    )
    p.add_argument(
        "--backup",
        type=_given,
        action="append",
        default=[],
        metavar="NUMBER",
        help="a backup number, called when NUMBER reaches nobody (busy, no answer, voicemail, "
        "a switchboard that did not put the call through); repeat for more, called in turn",
    )
    p.set_defaults(handler=run_call_command)


def run_call_command(args: argparse.Namespace) -> int:
    if args.config is None:
        from phonemfa.cli_remote import run_remote_call

        args.server = args.server or DEFAULT_SERVER
        return run_remote_call(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"phonemfa call: {exc}", file=sys.stderr)
        return EXIT_NOT_APPROVED
    try:
        return asyncio.run(_call(config, args))
    except PromptSetupError as exc:  # as serve refuses
        print(f"phonemfa call: {exc.located(args.config)}", file=sys.stderr)
        return EXIT_NOT_APPROVED
    except StartupError as exc:
        print(f"phonemfa call: {exc.located(args.config)}", file=sys.stderr)
        return EXIT_NOT_APPROVED
    except (OSError, AppTaken) as exc:
        print(f"phonemfa call: {exc}", file=sys.stderr)
        return EXIT_NOT_APPROVED
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM: _call's clean-up
        print("phonemfa call: interrupted: the call was ended", file=sys.stderr)  # hung up
        return EXIT_INTERRUPTED


async def _call(config: Config, args: argparse.Namespace) -> int:
    """Through a CallService of our own, so this path has the same records, toll-fraud guard
    and blocks as the API (the store is shared with a service using the same config)."""
    end_on_sigterm()  # hung up and recorded interrupted, as on Ctrl-C
    # A Stasis app of its own: a service running on the same Asterisk keeps its app.
    app = f"{config.ari.app}-cli-{os.getpid()}"
    config = config.model_copy(update={"ari": config.ari.model_copy(update={"app": app})})
    # Before any call of ours is in the store: a service starting meanwhile leaves it to us.
    cli_lock = hold_cli_lock(config.storage.path)
    service = await open_service(config, holding=cli_lock)
    try:
        await start_service(service, primary=False)
        try:
            await service.engine.events.wait_connected(CONNECT_TIMEOUT)
        except TimeoutError:
            why = service.engine.events.problem or "no answer"
            print(f"phonemfa call: no ARI connection to {config.ari.url}: {why}", file=sys.stderr)
            return EXIT_NOT_APPROVED
        try:
            record = await service.start_call(
                StartCall(
                    phone=args.number,
                    tenant=args.tenant,
                    user=args.user,
                    language=args.language,
                    code=args.code,
                    origin="cli",
                    backup_phones=tuple(args.backup),
                )
            )
        except (UnknownTenantError, CallRefused) as exc:  # an argument to fix: 1, as remotely
            field = getattr(exc, "field", "")  # CallRefused says which number, if one
            print(f"phonemfa call: {naming_backup(field, str(exc))}", file=sys.stderr)
            return EXIT_NOT_APPROVED
        except (NumberError, RateLimited) as exc:
            field = getattr(exc, "field", "")  # NumberError says which number
            print(f"phonemfa call: refused: {naming_backup(field, str(exc))}", file=sys.stderr)
            return EXIT_REFUSED
        except ServiceUnavailable as exc:
            print(f"phonemfa call: {exc.message}", file=sys.stderr)
            return EXIT_NOT_APPROVED
        return await _follow(service, record)
    finally:
        await service.shutdown(grace=0)
        await service.store.close()
        cli_lock.close()


async def _follow(service: CallService, record: CallRecord) -> int:
    """Print the call's steps as they happen, then its outcome."""
    out = sys.stdout
    print(f"call {record.id}  {record.phone_masked}  mode={record.mode}", file=out)
    live = service.live.get(record.id)
    shown = 0
    while live is not None and not (live.task is None or live.task.done()):
        for entry in record.timeline[shown:]:
            print_entry(entry, record.created_at, out)
        shown = len(record.timeline)
        await asyncio.sleep(0.05)
    for entry in record.timeline[shown:]:
        print_entry(entry, record.created_at, out)
    why = f" ({record.reason})" if record.reason else ""
    print(f"OUTCOME: {record.outcome}{why}", file=out)
    return exit_code(record.outcome)


def exit_code(outcome: str | None) -> int:
    """`phonemfa call`'s exit status, in this process or through a service: 0 approved,
    2 refused by policy (blocked), 1 any other outcome."""
    if outcome == Outcome.BLOCKED:
        return EXIT_REFUSED
    return EXIT_APPROVED if outcome == Outcome.APPROVED else EXIT_NOT_APPROVED
