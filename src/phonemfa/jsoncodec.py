"""JSON on the paths every call takes: ARI's events and replies read, timeline details
written and read. orjson (C) reads an ARI event in about a third of the standard library's
time and writes a timeline detail in a seventh.

The API's answers and ARI's request bodies stay with the standard library: written by orjson
they cost phonemfa 8 KiB more memory (RSS) per call in flight in `make bench`'s burst (34
against 26 KiB, measured twice) for some 60 µs of CPU per call. Config, CLI output and the
webhooks' signed bodies keep it too.
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


def dumps_text(value: Any) -> str:
    """Compact JSON text for anything: what JSON cannot hold is written as its str().

    orjson refuses integers beyond 64 bits even with `default`; the standard library takes
    them, so a timeline detail is never an error.
    """
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=str)


__all__ = ["dumps_text", "loads", "loads_lenient"]
