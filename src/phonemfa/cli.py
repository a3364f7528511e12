"""Command line: `phonemfa serve|call|parse|check-config|prompts`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from phonemfa import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phonemfa",
        description="Phone-call second factor on Asterisk, with operator assistance.",
    )
    parser.add_argument("--version", action="version", version=f"phonemfa {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0
