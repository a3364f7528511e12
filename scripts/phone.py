"""Be the person phonemfa calls, in the sandbox: a softphone (the tests' own, on pjsua2) that
registers as one of the simulated network's phones, answers, and presses keys or, as the
operator, transfers the call.

    .venv/bin/python scripts/phone.py mobile                  # answers, presses '#'
    .venv/bin/python scripts/phone.py mobile --keys 0#        # reports fraud
    .venv/bin/python scripts/phone.py mobile --keys 42#       # a call with "code": "42"
    .venv/bin/python scripts/phone.py 5678 --keys '#' '#'     # a desk behind an office:
                                                              # '#' at the extension prompt,
                                                              # then '#' at the greeting
    .venv/bin/python scripts/phone.py operator --transfer 5678   # the office's operator
                                                              # (run a desk 5678 beside it)

Then call the phone's number (README: "A first call", "The sandbox"). It shares the sandbox's
lock with other phones while it runs (test sessions and the bench register the same phones,
and hold the lock alone): it waits for a test session or bench that runs, and one started
meanwhile waits for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sandbox import sandbox_lock  # noqa: E402
from tests.support.softphone import SoftphoneError, softphone_network  # noqa: E402

REGISTRAR = "127.0.0.2:5060"  # the simulated phone network (asterisk/etc/pjsip.conf)
PASSWORD = "sandbox"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("user", help="the phone to be: mobile, operator, 5678 or 5679")
    p.add_argument(
        "--keys",
        nargs="*",
        help="keys to press, one group per prompt, each WAIT seconds after the last "
        "(default: '#'; none with --transfer)",
    )
    p.add_argument("--transfer", metavar="EXT", help="as the operator: transfer to EXT")
    p.add_argument("--wait", type=float, default=3.0, help="seconds before each group (3)")
    p.add_argument("--calls", type=int, default=1, help="calls to answer before exiting (1)")
    p.add_argument("--registrar", default=REGISTRAR)
    args = p.parse_args()
    if args.keys is None:
        args.keys = [] if args.transfer else ["#"]
    return args


async def answer(args: argparse.Namespace) -> None:
    async with softphone_network(args.registrar, PASSWORD) as net:
        phone = await net.register(args.user)
        print(f"{args.user}: registered at {args.registrar}; waiting for a call", flush=True)
        for _ in range(args.calls):
            call = await phone.next_call(timeout=3600)
            print(f"{args.user}: ringing, answering", flush=True)
            call.answer()
            await call.wait_media()
            if args.transfer:
                await asyncio.sleep(args.wait)
                print(f"{args.user}: transferring to {args.transfer}", flush=True)
                status = await call.blind_transfer(f"sip:{args.transfer}@{args.registrar}")
                print(f"{args.user}: transfer answered {status}", flush=True)
            for keys in args.keys:
                await asyncio.sleep(args.wait)
                print(f"{args.user}: pressing {keys}", flush=True)
                await call.send_dtmf(keys)
            with contextlib.suppress(SoftphoneError):
                await call.wait_disconnected(timeout=120)
            print(f"{args.user}: call ended", flush=True)


def main() -> int:
    args = parse_args()
    try:
        # A test run registering the same phone would take its calls, silently (found by
        # trying the README as a new user): the sandbox's lock, as the tests and the bench.
        with sandbox_lock(who=args.user, shared=True):
            asyncio.run(answer(args))
    except SoftphoneError as exc:
        print(f"phone.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
