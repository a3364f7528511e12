"""The log audit of a test run: no unmasked phone number, no secret, in anything phonemfa
logged (the services' log files, and this process's log records)."""

from __future__ import annotations

import json
import logging
import re

from tests.support import service

# Digit runs with the separators people type, 10+ digits: a phone number (E.164 or national).
# Not the tail of a word (an id such as "u-7961473627").
_CANDIDATE = re.compile(r"(?<![\w-])\+?\d[\d ().-]{7,}\d")
# What may look like one and is not: ids and times.
_NOT_NUMBERS = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # uuids
    r"|\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d([.,]\d+)?)?(Z|[+-]\d\d:?\d\d)?"  # timestamps
    r"|\d+\.\d+"  # durations, epoch seconds
)


class Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


def unmasked_numbers(text: str) -> list[str]:
    text = _NOT_NUMBERS.sub(" ", text)
    return [m for m in _CANDIDATE.findall(text) if len(re.sub(r"\D", "", m)) >= 10]


def _service_lines(proc: service.ServiceProcess) -> list[tuple[str, str]]:
    """(text to check for numbers, whole line to check for secrets) of a service's log."""
    out = []
    if not proc.log_path.exists():
        return out
    for line in proc.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
            text = " ".join(str(record.get(k, "")) for k in ("message", "exception"))
        except ValueError:
            text = line
        out.append((text, line))
    return out


def audit(own_lines: list[str]) -> list[str]:
    problems: list[str] = []
    secrets: set[str] = set()
    checked: list[tuple[str, str, str]] = [("test process", t, t) for t in own_lines]
    for proc in service.STARTED:
        secrets.update(proc.secrets())
        checked += [(str(proc.log_path), t, line) for t, line in _service_lines(proc)]
    for where, text, line in checked:
        for number in unmasked_numbers(text):
            problems.append(f"{where}: unmasked number {number!r} in: {line[:200]}")
        for secret in secrets:
            if secret and secret in line:
                problems.append(f"{where}: a secret in: {line[:80]}...")
    return problems
