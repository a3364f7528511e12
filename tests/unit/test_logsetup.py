"""The log filter's safety net: numbers that slipped into a message are masked there."""

from __future__ import annotations

import pytest

from phonemfa.logsetup import mask_numbers


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("dialling +14255550170 now", "dialling +*******70 now"),
        ("bad number 425-555-0170", "bad number *******70"),
        ("(425) 555 0170", "(*******70"),
        # Extensions as people write them (found by review: the 'x' hid the whole number).
        ("+14255550170x5678", "+*******70x***"),
        ("call +1 425-555-1234x@5678 failed", "call +*******34x@*** failed"),
        ("+1 425 555 0170 ext. 12", "+*******70x***"),
        ("+1 425 555 0170;ext=12", "+*******70x***"),
    ],
)
def test_numbers_and_their_extensions_are_masked(text: str, masked: str) -> None:
    assert mask_numbers(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "call 7f3c9a2e-1234-4567-8901-123456789012 ended",  # a UUID
        "listening on 127.0.0.1:8088",
        "cause 16, 3 attempts, 12345 ms",
        "id 1234567abcdef",  # digits that run into a word are not a number
    ],
)
def test_what_is_not_a_number_is_left_alone(text: str) -> None:
    assert mask_numbers(text) == text
