"""What a call request may ask for before anything is dialled (calls.py); no I/O."""

from __future__ import annotations

import pytest

from phonemfa.calls import CallRefused, check_code


@pytest.mark.parametrize(
    ("code", "fraud_code", "refused"),
    [
        ("42", "0#", False),
        ("42", "42#", True),  # its entry is the fraud code
        ("42", "0042#", True),  # or its end: "00", a pause, "42#" would report fraud
        ("420", "42#", False),
        ("42", None, False),  # no fraud option
    ],
)
def test_a_code_whose_entry_ends_the_fraud_code_is_refused(
    code: str, fraud_code: str | None, refused: bool
) -> None:
    if refused:
        with pytest.raises(CallRefused) as err:
            check_code(code, fraud_code)
        assert err.value.code == "bad_code"
    else:
        check_code(code, fraud_code)
