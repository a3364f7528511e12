"""User ids in one spelling (phonemfa.users)."""

from __future__ import annotations

import pytest

from phonemfa.users import canonical_user


@pytest.mark.parametrize(
    "spelling",
    ["alice", "Alice", "ALICE", " alice ", "ali\u200bce", "\u202ealice", "ａｌｉｃｅ"],
)
def test_every_spelling_of_a_user_is_one_user(spelling: str) -> None:
    assert canonical_user(spelling) == "alice"


def test_distinct_users_stay_distinct() -> None:
    assert canonical_user("alice@contoso.com") != canonical_user("alice@fabrikam.com")
    assert canonical_user("Straße") == canonical_user("STRASSE")  # what case folding means
