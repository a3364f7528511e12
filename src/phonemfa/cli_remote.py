"""CLI commands that talk to a running service over its HTTP API:
`phonemfa call --server URL`, `phonemfa calls list`, `phonemfa calls show ID`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import aiohttp

from phonemfa.cli_call import (
    DEFAULT_SERVER,
    EXIT_INTERRUPTED,
    EXIT_NOT_APPROVED,
    EXIT_REFUSED,
    end_on_sigterm,
    exit_code,
    server_url,
    stdout_gone,
)
from phonemfa.outcomes import TERMINAL

POLL_WAIT = 2  # seconds each GET ?wait= holds, so steps print as they happen


class RemoteError(Exception):
    def __init__(self, message: str, status: int = EXIT_NOT_APPROVED) -> None:
        super().__init__(message)
        self.exit_code = status


def _headers(token: str | None) -> dict[str, str]:
    token = token or os.environ.get("PHONEMFA_TOKEN")
    if not token:
        raise RemoteError("give --token or set PHONEMFA_TOKEN")
    return {"Authorization": f"Bearer {token}"}


async def _request(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any]:
    try:
        async with session.request(method, url, **kw) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text) if text else None
            except ValueError:
                return resp.status, text
    except aiohttp.ClientError as exc:
        raise RemoteError(f"cannot reach {url}: {exc}") from None
    except TimeoutError:  # aiohttp's ClientTimeout: not a ClientError
        raise RemoteError(f"no answer from {url} in time") from None


def _fail(status: int, body: Any) -> RemoteError:
    """Like `phonemfa call --config`: 2 when phonemfa would not place the call (a number it
    cannot dial, a limit; a policy refusal is an outcome, `blocked`), else 1: a wrong
    token, an unknown tenant, a bad code or backup list, a parameter the API does not take
    (found by review: those were 2, read as a refused number by a wrapper script)."""
    error = body.get("error") if isinstance(body, dict) else None
    refused = status == 429 or (status == 400 and error == "invalid_number")
    code = EXIT_REFUSED if refused else EXIT_NOT_APPROVED
    if isinstance(body, dict):
        return RemoteError(f"HTTP {status}: {body.get('error')}: {body.get('message')}", code)
    return RemoteError(f"HTTP {status}", code)


async def remote_call(args: argparse.Namespace) -> int:
    base = args.server.rstrip("/")
    body: dict[str, Any] = {"phone": args.number, "tenant": args.tenant}
    if getattr(args, "backup", None):
        body["backup_phones"] = args.backup
    for key in ("user", "language", "code"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    async with aiohttp.ClientSession(
        headers=_headers(args.token), timeout=aiohttp.ClientTimeout(total=POLL_WAIT + 30)
    ) as session:
        end_on_sigterm()  # cancelled through the API, as on Ctrl-C
        # Ctrl-C during the request must not leave a call we cannot name: let it finish.
        post = asyncio.ensure_future(_request(session, "POST", f"{base}/v1/calls", json=body))
        interrupted = False
        try:
            status, call = await _started(asyncio.shield(post))
        except asyncio.CancelledError:
            interrupted = True
            status, call = await _started(post)
        if status not in (200, 201):
            raise _fail(status, call)
        print(f"call {call['id']}  {call['phone']}  mode={call['mode']}")
        url = f"{base}/v1/calls/{call['id']}"
        # The call was started here: Ctrl-C or a closed output ends it here too.
        if interrupted:
            return await _cancel(session, url)
        try:
            return await _follow(session, url, call)
        except asyncio.CancelledError:
            return await _cancel(session, url)
        except BrokenPipeError:
            stdout_gone()
            await _cancel(session, url)
            return EXIT_NOT_APPROVED
        except RemoteError as exc:
            # Nobody would see how it ends: end it rather than let a phone ring unwatched.
            print(f"phonemfa: lost track of the call: {exc}", file=sys.stderr)
            await _cancel(session, url)
            return exc.exit_code


async def _started(post: Any) -> tuple[int, Any]:
    """The POST's answer; without one, the service may have started a call all the same."""
    try:
        return await post  # type: ignore[no-any-return]
    except RemoteError as exc:
        raise RemoteError(
            f"{exc}; a call may have started all the same: `phonemfa calls list` shows it",
            exc.exit_code,
        ) from None


async def _follow(session: aiohttp.ClientSession, url: str, call: dict[str, Any]) -> int:
    shown = 0
    while True:
        shown = _print_timeline(call, shown)
        if call["status"] in TERMINAL:
            why = f" ({call['reason']})" if call.get("reason") else ""
            print(f"OUTCOME: {call['status']}{why}")
            return exit_code(call["status"])
        status, call = await _request(session, "GET", url, params={"wait": POLL_WAIT})
        if status != 200:
            raise _fail(status, call)


async def _cancel(session: aiohttp.ClientSession, url: str) -> int:
    print("interrupted: cancelling the call", file=sys.stderr)
    try:
        status, body = await _request(session, "DELETE", url)
        if status == 409:  # it ended meanwhile
            status, body = await _request(session, "GET", url)
        elif status in (200, 202):
            status, body = await _request(session, "GET", url, params={"wait": POLL_WAIT})
        if status != 200 or not isinstance(body, dict):
            raise _fail(status, body)
    except RemoteError as exc:
        print(f"phonemfa: the call may still be in progress ({url}): {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    why = f" ({body['reason']})" if body.get("reason") else ""
    print(f"OUTCOME: {body['status']}{why}")
    return EXIT_INTERRUPTED


def _print_timeline(call: dict[str, Any], shown: int) -> int:
    for entry in call.get("timeline", [])[shown:]:
        extra = " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("at", "event"))
        print(f"  {entry['at']}  {entry['event']:<20} {extra}".rstrip())
    return len(call.get("timeline", []))


def add_calls_command(sub: Any) -> None:
    p = sub.add_parser("calls", help="list or show calls of a running service")
    p.add_argument("--server", "-s", type=server_url, default=DEFAULT_SERVER)
    p.add_argument("--token", help="API bearer token (or PHONEMFA_TOKEN)")
    # The same options after the action too (`calls list --token T`), as `call` takes them;
    # SUPPRESS keeps an action's parser from resetting what was given before it.
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--server", "-s", type=server_url, default=argparse.SUPPRESS)
    connection.add_argument("--token", default=argparse.SUPPRESS, help="as before ACTION")
    actions = p.add_subparsers(dest="calls_action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="newest first", parents=[connection])
    ls.add_argument("--user")
    ls.add_argument("--status")
    ls.add_argument("--tenant")
    ls.add_argument("--since", help="ISO-8601 or epoch seconds")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="one call and its timeline", parents=[connection])
    show.add_argument("call_id")
    show.add_argument("--json", action="store_true")
    p.set_defaults(handler=lambda a: _run(_calls(a)))


async def _calls(args: argparse.Namespace) -> int:
    base = args.server.rstrip("/")
    async with aiohttp.ClientSession(
        headers=_headers(args.token), timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        if args.calls_action == "show":
            status, call = await _request(session, "GET", f"{base}/v1/calls/{args.call_id}")
            if status != 200:
                raise _fail(status, call)
            if args.json:
                print(json.dumps(call, indent=2))
                return 0
            for key in (
                "id",
                "status",
                "reason",
                "tenant",
                "user",
                "phone",
                "mode",
                "language",
                "origin",
                "created_at",
                "ended_at",
            ):
                value = call.get(key)
                print(f"{key + ':':<12}{'-' if value is None else value}")
            _print_timeline(call, 0)
            return 0
        params = {"limit": str(args.limit)}
        for key in ("user", "status", "tenant", "since"):
            if getattr(args, key):
                params[key] = getattr(args, key)
        status, page = await _request(session, "GET", f"{base}/v1/calls", params=params)
        if status != 200:
            raise _fail(status, page)
        if args.json:
            print(json.dumps(page, indent=2))
            return 0
        for call in page["calls"]:
            print(
                f"{call['created_at']}  {call['id']}  {call['status']:<15} "
                f"{call['tenant']:<12} {call.get('user') or '-':<16} {call['phone']}"
            )
        return 0


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except RemoteError as exc:
        print(f"phonemfa: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside a call
        print("phonemfa: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run_remote_call(args: argparse.Namespace) -> int:
    return _run(remote_call(args))
