"""User ids as phonemfa keeps them: one spelling per user.

The per-user velocity limits and the block after a fraud report hold for a user, not for a
spelling: an identity system that passes the login as typed ("Alice", "ALICE", "alice" with a
zero-width space) must not get a fresh limit, or a call past the block, for each. Ids are
compared after Unicode NFKC normalisation and case folding, without invisible format and
control characters, and stored that way.
"""

from __future__ import annotations

import unicodedata

# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt) beside the format
# characters (Cf): variation selectors, fillers, the combining grapheme joiner... invisible.
_IGNORABLE = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip


# ASCII's control characters (C0 and DEL): the API refuses C0 only, DEL would pass.
_ASCII_CONTROLS = dict.fromkeys([*range(0x20), 0x7F])


def _visible(c: str) -> bool:
    code = ord(c)
    # Format characters (zero-width spaces and joiners, bidi marks...) and control ones
    # (DEL, the C1 range): nothing shows, so "alice" plus one of them is alice.
    if unicodedata.category(c) in ("Cf", "Cc"):
        return False
    return not any(low <= code <= high for low, high in _IGNORABLE)


def canonical_user(user: str) -> str:
    """The form a user id is compared and stored in ("" when nothing visible is left)."""
    if user.isascii():
        # Most ids. ASCII is its own NFKC form, has no format or ignorable character, and
        # folds case as it lowers: the general path gives the same, 20 times slower.
        return user.translate(_ASCII_CONTROLS).lower().strip()
    return _canonical_unicode(user)


def _canonical_unicode(user: str) -> str:
    text = "".join(c for c in unicodedata.normalize("NFKC", user) if _visible(c))
    # Normalised again: removing a character or folding case can leave a composable pair.
    return unicodedata.normalize("NFKC", text.casefold()).strip()


__all__ = ["canonical_user"]
