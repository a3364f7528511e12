"""User ids as phonemfa keeps them: one spelling per user.

The per-user velocity limits and the block after a fraud report hold for a user, not for a
spelling: an identity system that passes the login as typed ("Alice", "ALICE", "alice" with a
zero-width space) must not get a fresh limit, or a call past the block, for each. Ids are
compared after Unicode NFKC normalisation and case folding, without invisible format
characters, and stored that way.
"""

from __future__ import annotations

import unicodedata


def canonical_user(user: str) -> str:
    """The form a user id is compared and stored in ("" when nothing is left of it)."""
    text = unicodedata.normalize("NFKC", user)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")  # zero-width, bidi...
    return text.casefold().strip()


__all__ = ["canonical_user"]
