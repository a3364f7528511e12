"""JSON on the paths every call takes: ARI's events and replies, the API's answers, timeline
details in the store. orjson (C) reads an ARI event in about a third of the standard
library's time and writes a call's record ten times faster; the standard library stays for
the rest (config, CLI output, webhooks' signed bodies), where speed does not matter.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# orjson's JSONDecodeError is a ValueError, as the standard library's is.
loads = orjson.loads


def loads_lenient(data: str | bytes) -> Any:
    """`loads`, or what the standard library reads where orjson refuses: NaN and Infinity
    (which `json.dumps` writes), text that is not UTF-8 (decoded with replacement)."""
    try:
        return orjson.loads(data)
    except ValueError:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        return json.loads(text)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. TypeError (orjson.JSONEncodeError) for what JSON cannot hold."""
    return orjson.dumps(value)


def dumps_text(value: Any) -> str:
    """Compact JSON text for anything: what JSON cannot hold is written as its str().

    orjson refuses integers beyond 64 bits even with `default`; the standard library takes
    them, so a timeline detail is never an error.
    """
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=str)


__all__ = ["dumps", "dumps_text", "loads", "loads_lenient"]
