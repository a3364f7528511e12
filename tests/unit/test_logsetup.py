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
        # Not dates, nor addresses: a 5th group, a month 13, a year 3026, digits run on.
        ("01.23.45.67.89", "*******89"),
        ("call 2026-13-08 00 11", "call *******11"),
        ("3026-12-08", "*******08"),
        ("2026-12-08-5551234", "*******34"),
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
        # Dates, times and IPv4 addresses (found by review: they were masked as numbers).
        "deleted 5 decided calls created before 2026-09-09 00:28 UTC (retention)",
        "at 2026-12-08T01:53:43.123+00:00",
        "ARI at http://192.168.100.200:8088 is down",
        "from 10.0.0.1.",
    ],
)
def test_what_is_not_a_number_is_left_alone(text: str) -> None:
    assert mask_numbers(text) == text
