"""User ids in one spelling (phonemfa.users)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phonemfa.users import _canonical_unicode, canonical_user


@pytest.mark.parametrize(
    "spelling",
    [
        "alice",
        "Alice",
        "ALICE",
        " alice ",
        "ali\u200bce",  # zero-width space
        "\u202ealice",  # right-to-left override
        "ａｌｉｃｅ",  # full-width
        "alic\ufe0fe",  # a variation selector (not a format character)
        "al\u034fice",  # the combining grapheme joiner
        "alice\x7f",  # DEL: a control character the API's C0 check lets through
        "ali\x80ce",  # C1 controls: as invisible
        "ali\x85ce",
    ],
)
def test_every_spelling_of_a_user_is_one_user(spelling: str) -> None:
    assert canonical_user(spelling) == "alice"


def test_distinct_users_stay_distinct() -> None:
    assert canonical_user("alice@contoso.com") != canonical_user("alice@fabrikam.com")
    assert canonical_user("Straße") == canonical_user("STRASSE")  # what case folding means


def test_what_removing_an_invisible_character_leaves_is_normalised_again() -> None:
    assert canonical_user("jose\u200b\u0301") == canonical_user("josé")


def test_an_id_of_invisible_characters_is_empty() -> None:
    assert canonical_user("\u200b\u3164\ufe0f") == ""


@given(st.text(st.characters(max_codepoint=0x7F)))
def test_ascii_ids_take_a_short_path_to_the_same_spelling(user: str) -> None:
    assert canonical_user(user) == _canonical_unicode(user)
