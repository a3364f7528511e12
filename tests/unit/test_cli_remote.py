"""`phonemfa calls`: where its connection options may go."""

from __future__ import annotations

import pytest

from phonemfa.cli import build_parser


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
