"""`phonemfa calls`: where its connection options may go; `phonemfa call`: what it refuses."""

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
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and why in err
