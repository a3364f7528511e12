"""Structured logs (text or JSON), with phone numbers masked even if a message slips one in.

Code masks numbers itself (`PhoneNumber.mask()`); the filter here is the safety net for text
that came from elsewhere (an exception message quoting an input, a library's log line).
Secrets are never passed to loggers; `SecretStr` prints as '**********' anyway.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from phonemfa.numbers import EXTENSION_MASK

# 7+ digits, possibly with a leading + and the separators people type: a phone number, and
# its extension as people write it (x5678, ext. 5678, x@5678). UUIDs (hex runs broken by '-')
# and short numbers (ports, counts, causes) do not match.
_NUMBER = re.compile(
    r"(?<![\w.-])(?P<main>\+?\d[\d .()/-]{5,}\d)"
    r"(?:\s*(?:;ext=|ext(?:ension|n)?[.:]?|x)\s*(?P<at>@?)\s*\d+)?(?![\w-])",
    re.IGNORECASE | re.ASCII,
)
# Dates (with their time) and IPv4 addresses have 7+ digits too: an operator needs them whole
# (the retention's "created before 2026-09-09 00:28", an ARI address: found by review). Tried
# first at each place; a year outside 1900-2099 or a month past 12 is not a date.
_DATE = (
    r"(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:[.,]\d+)?)?)?"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_MASKABLE = re.compile(
    rf"(?<![\w.-])(?P<keep>{_DATE}|{_IPV4})(?!\d|[.-]\d)|{_NUMBER.pattern}",
    re.IGNORECASE | re.ASCII,
)
_KEEP = 2
_EXTRA_SKIP = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def mask_numbers(text: str) -> str:
    """Replace every digit run that looks like a phone number by its masked form."""

    def repl(m: re.Match[str]) -> str:
        if m.group("keep"):
            return m.group()
        main = m.group("main")
        digits = re.sub(r"\D", "", main)
        if len(digits) < 7:
            return m.group()
        masked = f"{'+' if main.startswith('+') else ''}*******{digits[-_KEEP:]}"
        if m.end() > m.end("main"):  # an extension: as `PhoneNumber.mask` writes it
            masked += f"x{m.group('at')}{EXTENSION_MASK}"
        return masked

    return _MASKABLE.sub(repl, text)


class MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_numbers(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _EXTRA_SKIP and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = mask_numbers(self.formatException(record.exc_info))
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return mask_numbers(super().formatException(ei))


def configure(level: str = "info", fmt: str = "text") -> None:
    """Set up the root logger for the service and the CLI (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(MaskingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log carries the request line, with query strings: ours have no
    # numbers or secrets, but keep it quiet at info.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
