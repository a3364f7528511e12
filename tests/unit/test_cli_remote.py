"""`phonemfa calls`: where its connection options may go; `phonemfa call`: what it refuses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from phonemfa import cli_remote
from phonemfa.cli import build_parser
from phonemfa.cli_remote import RemoteError, _request


@pytest.mark.parametrize(
    "argv",
    [
        ["calls", "--server", "http://10.0.0.5:8080", "--token", "T", "list"],
        ["calls", "list", "--server", "http://10.0.0.5:8080", "--token", "T"],
        ["calls", "--server", "http://10.0.0.5:8080", "list", "--token", "T"],
    ],
)
def test_server_and_token_go_before_or_after_the_action(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.calls_action, args.server, args.token) == ("list", "http://10.0.0.5:8080", "T")


def test_the_defaults_hold_when_neither_is_given() -> None:
    args = build_parser().parse_args(["calls", "show", "abc"])
    assert (args.server, args.token, args.call_id) == ("http://127.0.0.1:8080", None, "abc")


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("--code", "", "is empty"),
        ("--code", "  ", "is empty"),
        ("--language", "", "is empty"),
        ("--user", "", "has no visible characters"),
        ("--user", "\u200b", "has no visible characters"),
    ],
)
@pytest.mark.parametrize("where", [["--server", "http://127.0.0.1:9"], ["--config", "x.yaml"]])
def test_call_refuses_an_empty_option_instead_of_leaving_it_out(
    capsys: pytest.CaptureFixture[str], where: list[str], option: str, value: str, why: str
) -> None:
    # `--code "$CODE"` with CODE unset must not place a call that '#' alone approves.
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["call", "+1 425 555 0100", *where, option, value])
    assert exited.value.code == 1  # an argument to fix: not 2, a refused number
    err = capsys.readouterr().err
    assert f"argument {option}" in err and why in err


@pytest.mark.parametrize("server", ["localhost:8080", "127.0.0.1:8080", "ftp://h", "http://"])
@pytest.mark.parametrize(
    "argv", [["call", "+1 425 555 0100", "--token", "T"], ["calls", "list", "--token", "T"]]
)
def test_a_server_that_is_not_an_http_url_is_refused_as_such(
    capsys: pytest.CaptureFixture[str], argv: list[str], server: str
) -> None:
    # `--server localhost:8080` read "cannot reach localhost:8080/v1/calls: localhost:8080/
    # v1/calls; a call may have started all the same": nothing was sent (found by review).
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*argv, "--server", server])
    assert exited.value.code == 1  # an argument to fix: not 2, a refused number
    err = capsys.readouterr().err
    assert "argument --server/-s: must be an http:// or https:// URL" in err


# --- the command line as a shell runs it: Ctrl-C, a closed pipe --------------------------------
# A stand-in for the service's API on loopback; `phonemfa` runs in a process of its own, so
# that the signal and the pipe are real (found by a walk through the README: each printed a
# traceback, and Ctrl-C left the call running on the service).


class FakeApi:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.cancelled = asyncio.Event()
        self.polled = asyncio.Event()
        self.posted = asyncio.Event()
        self.post_delay = 0.0  # seconds the call's creation takes
        self.delete_status = 200
        self.get_status = 200  # of a GET of the call while it is in progress

    def call(self, status: str) -> dict[str, Any]:
        reason = "cancelled" if status == "cancelled" else None
        # One more step at each look, as a call in progress has.
        steps = 1 + sum(r.startswith("GET /v1/calls/") for r in self.requests)
        timeline = [{"at": "2026-11-26T12:00:00Z", "event": status}] * steps
        return {"id": "c1", "phone": "+1425555****", "mode": "direct", "status": status,
                "reason": reason, "timeline": timeline}  # fmt: skip

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path}")
        if request.method == "POST":
            self.posted.set()
            await asyncio.sleep(self.post_delay)
            return web.json_response(self.call("ringing"), status=201)
        if request.method == "DELETE":
            if self.delete_status != 200:
                return web.json_response({"error": "x", "message": "y"}, status=self.delete_status)
            self.cancelled.set()
            return web.json_response(self.call("cancelled"))
        if request.path == "/v1/calls":
            calls = [self.call("approved") | {"id": f"c{i}", "created_at": "t", "tenant": "default"}
                     for i in range(5000)]  # fmt: skip
            return web.json_response({"calls": calls})
        if not self.cancelled.is_set() and self.get_status != 200:
            return web.json_response({"error": "x", "message": "y"}, status=self.get_status)
        if not self.cancelled.is_set():
            self.polled.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.cancelled.wait(), float(request.query.get("wait", 0)))
        return web.json_response(self.call("cancelled" if self.cancelled.is_set() else "ringing"))


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeApi, str]]:
    fake = FakeApi()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


def _ctrl_c_as_in_a_terminal() -> None:
    # A test run started in the background (`make test &`, some CI runners) ignores SIGINT,
    # and a child inherits that: Python then installs no KeyboardInterrupt handler at all.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def _phonemfa(*argv: str, **kw: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "phonemfa", *argv, stdout=PIPE, stderr=PIPE,
        preexec_fn=_ctrl_c_as_in_a_terminal, **kw,
    )  # fmt: skip


async def _call_interrupted(
    url: str, when: asyncio.Event, sig: int = signal.SIGINT
) -> tuple[int | None, str, str]:
    """`phonemfa call --server` sent `sig` as soon as `when` is set: (status, out, err)."""
    proc = await _phonemfa("call", "+1 425 555 0100", "--server", url, "--token", "t")
    await asyncio.wait_for(when.wait(), 20)
    proc.send_signal(sig)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert "Traceback" not in err.decode()
    return proc.returncode, out.decode(), err.decode()


# Ctrl-C; SIGTERM from `timeout 60 phonemfa call ...` in a script, or a supervisor.
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_ctrl_c_or_sigterm_cancels_the_call_it_started(
    api: tuple[FakeApi, str], sig: int
) -> None:
    fake, url = api
    status, out, err = await _call_interrupted(url, fake.polled, sig)
    assert status == 130, err
    assert "DELETE /v1/calls/c1" in fake.requests
    assert "OUTCOME: cancelled (cancelled)" in out


async def test_ctrl_c_while_the_call_is_being_created_still_cancels_it(
    api: tuple[FakeApi, str],
) -> None:
    fake, url = api
    fake.post_delay = 1.0
    status, out, err = await _call_interrupted(url, fake.posted)
    assert status == 130, err
    assert "DELETE /v1/calls/c1" in fake.requests
    assert "OUTCOME: cancelled" in out


async def test_a_failed_cancel_says_the_call_may_still_run(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    fake.delete_status = 500
    status, _, err = await _call_interrupted(url, fake.polled)
    assert status == 130
    assert f"the call may still be in progress ({url}/v1/calls/c1): HTTP 500" in err


async def test_a_closed_pipe_during_a_call_cancels_it_and_is_no_approval(
    api: tuple[FakeApi, str],
) -> None:
    # `phonemfa call ... | head -1`: the call must not run on, nor the status read "approved".
    fake, url = api
    command = f"{shlex.quote(sys.executable)} -m phonemfa call +14255550100 --server {url}"
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", f"set -o pipefail; {command} --token t | head -1", stdout=PIPE, stderr=PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1, err
    assert "DELETE /v1/calls/c1" in fake.requests
    assert "Traceback" not in err.decode()


async def test_a_closed_pipe_ends_quietly(api: tuple[FakeApi, str]) -> None:
    _, url = api
    command = f"{shlex.quote(sys.executable)} -m phonemfa calls list --server {url} --token t"
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", f"set -o pipefail; {command} --limit 5000 | head -1", stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert "Traceback" not in err.decode() and "BrokenPipe" not in err.decode(), err
    assert proc.returncode == 0 and len(out.splitlines()) == 1


async def test_calls_show_prints_a_dash_for_what_a_call_has_not(api: tuple[FakeApi, str]) -> None:
    _, url = api
    proc = await _phonemfa("calls", "show", "c1", "--server", url, "--token", "t")
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert "reason:     -" in lines and "status:     ringing" in lines


async def test_losing_track_of_the_call_cancels_it(api: tuple[FakeApi, str]) -> None:
    # A GET that fails (or times out) leaves nobody to see how the call ends.
    fake, url = api
    fake.get_status = 503
    proc = await _phonemfa("call", "+1 425 555 0100", "--server", url, "--token", "t")
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1, err
    assert "lost track of the call: HTTP 503" in err.decode()
    assert "DELETE /v1/calls/c1" in fake.requests and "Traceback" not in err.decode()
    assert "OUTCOME: cancelled" in out.decode()


async def test_no_answer_in_time_is_a_remote_error_not_a_traceback() -> None:
    # aiohttp's time-out is a TimeoutError, not a ClientError.
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as session:
            with pytest.raises(RemoteError, match="no answer from .* in time"):
                await _request(session, "GET", str(server.make_url("/")))
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (400, "invalid_number", 2),
        (429, "rate_limited_user", 2),
        (400, "unknown_tenant", 1),
        (400, "invalid_request", 1),
        (400, "bad_code", 1),
        (400, "duplicate_backup_phone", 1),
        (400, "no_webhook_secret", 1),
        (401, "unauthorized", 1),
        (403, "forbidden", 1),
        (503, "store_unavailable", 1),
    ],
)
def test_only_a_refused_call_exits_2(status: int, error: str, code: int) -> None:
    # Found by review: a wrong token and an unknown tenant exited 2, which a wrapper script
    # reads as "phonemfa would not call this number".
    assert cli_remote._fail(status, {"error": error, "message": "m"}).exit_code == code


def test_call_without_config_or_server_asks_the_local_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DESIGN §7: `phonemfa call NUMBER [--user U] [--tenant T]`; it was a usage error.
    asked: list[str] = []
    monkeypatch.setattr(cli_remote, "run_remote_call", lambda args: asked.append(args.server) or 0)
    args = build_parser().parse_args(["call", "+1 425 555 0100", "--user", "alice"])
    assert args.handler(args) == 0
    assert asked == ["http://127.0.0.1:8080"]
