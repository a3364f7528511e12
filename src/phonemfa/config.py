"""The phonemfa YAML configuration as typed, frozen pydantic models.

`load_config(path)` reads the file; every problem becomes one `ConfigError`
whose lines read `phonemfa.yaml:14: tenants.default.operator_assistance: Input
should be a valid boolean`. The same models validate plain JSON (the HTTP API
PUTs `TenantSettings`); `format_errors()` turns a pydantic `ValidationError`
into "field.path: reason" lines for it.

Values may use `${VAR}` or `${VAR:-default}` (the default also applies when
VAR is empty, as in the shell); `$${` writes a literal `${`. Relative paths
(storage.path, sounds.dir, prompt files) are used as written, i.e. relative to
the service's working directory.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, Self, get_args, get_origin
from urllib.parse import urlsplit

import phonenumbers
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from phonemfa.messages import MessageType
from phonemfa.numbers import NON_GEOGRAPHIC, NumberType

__all__ = [
    "DEFAULT_TENANT",
    "ApiSettings",
    "ApiToken",
    "AriSettings",
    "CallSettings",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DialProfile",
    "FieldError",
    "FraudSettings",
    "Limits",
    "LoggingSettings",
    "RateLimit",
    "ShutdownSettings",
    "SoundsSettings",
    "StorageSettings",
    "TenantSettings",
    "TrunkSettings",
    "UnknownTenantError",
    "config_line",
    "field_errors",
    "format_errors",
    "is_secret_path",
    "load_config",
    "redacted_dump",
]

DEFAULT_TENANT = "default"
"""The tenant used when a request names none."""


# --- errors ------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file; `line` and `path` when known."""

    file: str
    line: int | None
    path: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """An unusable config file: one exception, one line per problem, first line first."""

    MAX_SHOWN = 20

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(sorted(issues, key=lambda i: (i.line is None, i.line or 0)))
        shown = [str(i) for i in self.issues[: self.MAX_SHOWN]]
        if len(self.issues) > self.MAX_SHOWN:
            shown.append(f"... and {len(self.issues) - self.MAX_SHOWN} more problems")
        super().__init__("\n".join(shown))

    @classmethod
    def one(
        cls, file: str, line: int | None, message: str, path: Sequence[Any] = ()
    ) -> ConfigError:
        return cls([ConfigIssue(file, line, _path_text(path) or None, message)])


class UnknownTenantError(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown tenant {name!r}")
        self.name = name


@dataclass(frozen=True)
class FieldError:
    """One validation problem: `path` like "calls.attempts" or "api.tokens[0]"."""

    path: str
    message: str
    loc: tuple[str | int, ...]

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def field_errors(exc: ValidationError) -> list[FieldError]:
    """The errors of `exc` with readable paths and messages (for the API and files)."""
    errors = exc.errors(include_url=False, include_input=False)
    locs = [tuple(p for p in err["loc"] if p != "[key]") for err in errors]
    out = []
    for err, loc in zip(errors, locs, strict=True):
        # A list whose entries are wrong is also "too short" to pydantic (it counts the
        # entries that passed): "must not be empty" above a list that is not (found by
        # review). Its entries' errors say what is wrong.
        if err["type"] == "too_short" and any(o[: len(loc)] == loc and o != loc for o in locs):
            continue
        out.append(FieldError(_path_text(loc), _message(err, exc.title, loc), loc))
    return out


def format_errors(exc: ValidationError) -> list[str]:
    """Each error of `exc` as "field.path: reason", e.g. for a 400 response body."""
    return [str(e) for e in field_errors(exc)]


def _path_text(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `choices`, or "" when none is close."""
    close = difflib.get_close_matches(word, [c for c in choices if c != word], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _message(err: Any, root: str, loc: tuple[str | int, ...]) -> str:
    if err["type"] == "extra_forbidden":
        return f"unknown key{_unknown_key_hint(root, loc)}"
    if err["type"] == "string_pattern_mismatch":
        pattern_hint = _PATTERN_HINTS.get(str(err.get("ctx", {}).get("pattern", "")))
        if pattern_hint:
            return f"should be {pattern_hint}"
    if err["type"] == "too_short":
        # pydantic says "Tuple should have..."; a config or JSON author wrote a list.
        low = err["ctx"]["min_length"]
        return "must not be empty" if low == 1 else f"needs at least {low} entries"
    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] == "tuple_type":  # lists are tuples here (frozen); a file has lists
        return "Input should be a list"
    if err["type"] == "value_error":  # a validator's ValueError, without "Value error, "
        return str(err["ctx"]["error"])
    return str(err["msg"])


_PATTERN_HINTS: dict[str, str] = {}


def _hint(pattern: str, hint: str) -> str:
    """Register what `pattern` means, so errors say that instead of the regex."""
    _PATTERN_HINTS[pattern] = hint
    return pattern


def _fail(message: str) -> PydanticCustomError:
    # A custom error keeps pydantic's "Value error, " prefix out of our messages.
    return PydanticCustomError("invalid", message)


# --- reusable field types -----------------------------------------------------


def _region(value: str) -> str:
    code = value.upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise _fail(f"{value!r} is not an ISO 3166 region code phonenumbers knows (e.g. US, FR)")
    return code


def _secret_not_empty(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise _fail("must not be empty")
    return value


Region = Annotated[str, AfterValidator(_region)]
# Every field of this type must be matched by `is_secret_path` (a test checks).
Secret = Annotated[SecretStr, AfterValidator(_secret_not_empty)]
TenantName = Annotated[
    str,
    Field(
        pattern=_hint(
            r"^[a-z0-9][a-z0-9_-]{0,62}$",
            "1-63 of a-z 0-9 - _, starting with a letter or digit",
        )
    ),
]
Language = Annotated[
    str, Field(pattern=_hint(r"^[a-z]{2}(-[A-Z]{2})?$", "a language code such as en, fr or fr-CA"))
]


class _Model(BaseModel):
    # Numbers where text is expected are text: `extension_prefix: 9`, `caller_id: 1425...`.
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


# --- sections -----------------------------------------------------------------


class AriSettings(_Model):
    """How phonemfa reaches Asterisk's REST interface."""

    url: str = "http://127.0.0.1:8088"
    username: str = Field(default="phonemfa", min_length=1)
    password: Secret
    app: str = Field(
        default="phonemfa",
        pattern=_hint(r"^[A-Za-z0-9_.-]{1,64}$", "1-64 of A-Z a-z 0-9 . - _"),
    )
    reconnect_max_delay: float = Field(default=2, gt=0, le=300)
    heartbeat: float = Field(default=10, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _fail("must be an http:// or https:// URL, e.g. http://127.0.0.1:8088")
        try:
            port = parts.port  # urlsplit checks the port only when asked
        except ValueError:
            port = 0
        if port == 0:
            raise _fail("has a bad port: 1-65535, e.g. http://127.0.0.1:8088")
        if parts.username is not None or parts.password is not None:
            # It would be logged with the URL: the credentials have fields of their own.
            raise _fail("must not hold a user or password: set ari.username and ari.password")
        if parts.path.rstrip("/").endswith("/ari"):
            raise _fail("is Asterisk's HTTP address without /ari (phonemfa adds it)")
        if parts.query or parts.fragment:
            raise _fail("must not have a query (?...) or a fragment (#...)")
        return value.rstrip("/")


_NOT_A_CALLER_NUMBER = (
    "must be a phone number: +country code and number (e.g. +14255550199), or the digits your "
    "carrier wants"
)


class TrunkSettings(_Model):
    endpoint: str = "PJSIP/{number}@trunk"
    """Asterisk dial string; `{number}` becomes the number as dialled."""
    caller_id: str | None = None
    """The number presented to the called party (digits, an optional leading +)."""
    dial_timeout: int = Field(default=45, ge=1, le=300)
    max_calls: int = Field(default=200, ge=1, le=10_000)
    """Calls in progress at once (the trunk's channels, what the PBX carries); more wait."""
    queue_timeout: float = Field(default=60, ge=0, le=600)
    """How long a call may wait for a free line before it fails with `no_free_line`."""

    @field_validator("caller_id")
    @classmethod
    def _caller_number(cls, value: str | None) -> str | None:
        # It goes out as the connected line's number, exactly as given here: written
        # separators are dropped, anything else is refused.
        if value is None or not value.strip():  # "" (an unset ${VAR:-}) is no caller id
            return None
        if value.strip().startswith("+"):
            # International: E.164, which also drops a "(0)" trunk prefix ("+44 (0)20 ...").
            try:
                parsed = phonenumbers.parse(value, None)
            except phonenumbers.NumberParseException:
                parsed = None
            if parsed is None or parsed.extension or not phonenumbers.is_possible_number(parsed):
                raise _fail(_NOT_A_CALLER_NUMBER)
            return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
        number = re.sub(r"[\s.-]", "", value)  # as the carrier wants it, separators aside
        if not re.fullmatch(r"[0-9]{2,20}", number):
            raise _fail(_NOT_A_CALLER_NUMBER)
        return number

    @field_validator("endpoint")
    @classmethod
    def _has_number(cls, value: str) -> str:
        if "{number}" not in value:
            raise _fail("must contain {number}, e.g. PJSIP/{number}@trunk")
        if re.search(r"[{}]", value.replace("{number}", "")):
            raise _fail("the only placeholder allowed is {number}")
        return value

    def dial_string(self, number: str) -> str:
        """The endpoint with `{number}` filled in (no str.format: no brace surprises)."""
        return self.endpoint.replace("{number}", number)


# The longest window a rate limit may have; calls are kept at least this long
# (storage.retention_days), so that a window lengthened at run time still counts them.
MAX_LIMIT_WINDOW_DAYS = 30


class RateLimit(_Model):
    """At most `count` calls in any `window` seconds."""

    count: int = Field(ge=1, le=100_000)
    window: int = Field(ge=1, le=MAX_LIMIT_WINDOW_DAYS * 86400)


class ApiToken(_Model):
    token: Secret
    tenants: tuple[TenantName, ...] | None = None
    """Tenants this token may act for; None = all."""
    name: str | None = Field(default=None, max_length=64)
    """A label for logs, so tokens themselves are never logged."""
    limits: tuple[RateLimit, ...] = (RateLimit(count=1000, window=60),)
    """Calls this token may start per window (429 past it); [] for none."""

    @field_validator("tenants")
    @classmethod
    def _some_tenant(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        # [] would be a token for nobody, every request a 403: not what anyone means.
        if value == ():
            raise _fail(
                "list at least one tenant, or leave tenants out for a token for every tenant"
            )
        return value


def _token_shorthand(value: Any) -> Any:
    # "tokens: [abc]" is the short form of "tokens: [{token: abc}]".
    if isinstance(value, list | tuple):
        return [{"token": v} if isinstance(v, str | int | float) else v for v in value]
    return value


class ApiSettings(_Model):
    listen: str = "127.0.0.1:8080"
    tokens: Annotated[tuple[ApiToken, ...], BeforeValidator(_token_shorthand)] = Field(min_length=1)
    max_body_bytes: int = Field(default=16384, ge=1024, le=10 * 1024 * 1024)
    callback_hosts: tuple[str, ...] | None = None
    """Hosts a call's callback_url may name (names or IP addresses, case aside); null: any
    but link-local addresses (cloud metadata services live there)."""

    @field_validator("callback_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        hosts = []
        for text in value:
            host = text.strip().strip("[]").lower().rstrip(".")
            bad = _fail(f"{text!r}: a host name or IP address, no scheme, port or path")
            if ":" in host:  # an IPv6 address, in the one spelling a URL's host is compared in
                try:
                    host = str(ipaddress.IPv6Address(host))
                except ValueError:  # a port or a scheme
                    raise bad from None
            if not host or "/" in host:
                raise bad
            hosts.append(host)
        return tuple(hosts)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _split_listen(value)
        return value

    @field_validator("tokens")
    @classmethod
    def _unique(cls, tokens: tuple[ApiToken, ...]) -> tuple[ApiToken, ...]:
        secrets = [t.token.get_secret_value() for t in tokens]
        if len(set(secrets)) != len(secrets):
            raise _fail("the same token appears twice")
        return tokens

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _fail("must be host:port, e.g. 127.0.0.1:8080 or [::1]:8080")
    return host, int(port)


# A word setting written in any case: `FULL`, `JSON`, `INFO`.
_CASE_BLIND = BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)


class StorageSettings(_Model):
    path: Path = Path("/var/lib/phonemfa/phonemfa.db")
    # Days a decided call (its record, timeline and webhook) is kept; null: for ever.
    retention_days: int | None = Field(default=90, le=36500)
    # SQLite's: "normal" syncs the WAL every second (a power cut can take the last second's
    # commits), "full" at every commit (docs/reliability.md).
    synchronous: Annotated[
        Literal["normal", "full"],
        _CASE_BLIND,
    ] = "normal"

    @field_validator("path", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        # "" is Path("."): the database would be the working directory, which serve finds
        # out only after it has put its lock file beside it (found by review).
        if isinstance(value, str) and not value.strip():
            raise _fail("must name the database file, e.g. /var/lib/phonemfa/phonemfa.db")
        return value

    @field_validator("retention_days", mode="before")
    @classmethod
    def _whole_days(cls, value: Any) -> Any:
        # It deletes calls: a number of days as written, not `true` or 45.0 made one. Digits
        # in a string are taken: `${RETENTION_DAYS}` is one (found by review).
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _fail("must be a whole number of days, or null to keep calls for ever")
        if value is not None and value < MAX_LIMIT_WINDOW_DAYS:
            raise _fail(
                f"must be at least {MAX_LIMIT_WINDOW_DAYS} days: a rate limit's window may be "
                f"up to {MAX_LIMIT_WINDOW_DAYS} days and counts the calls kept"
            )
        return value


class LoggingSettings(_Model):
    format: Annotated[  # as level (found by review)
        Literal["text", "json"],
        _CASE_BLIND,
    ] = "text"
    level: Annotated[
        Literal["debug", "info", "warning", "error"],
        _CASE_BLIND,
    ] = "info"


class ShutdownSettings(_Model):
    grace_period: float = Field(default=30, ge=0, le=3600)


class SoundsSettings(_Model):
    dir: Path | None = None
    """Asterisk's sounds folder as phonemfa sees it (to install custom prompts)."""


_PREFIX = re.compile(r"\+[0-9]{1,15}")
_DTMF = _hint(r"^[0-9*#A-DwW]{0,20}$", "up to 20 of 0-9 * # A-D, w (0.5 s pause), W (1 s)")


class DialProfile(_Model):
    """How numbers matching `match` are dialled and how their extension is keyed in."""

    name: str = Field(min_length=1, max_length=64)
    match: tuple[str, ...] = Field(min_length=1)
    """E.164 prefixes ("+1", "+44 20"; spaces ignored) and/or ISO regions ("FR")."""
    number_format: Literal["e164", "e164_digits", "national", "international"] = "e164"
    international_prefix: str = Field(
        default="011", pattern=_hint(r"^[0-9]{1,4}$", "1-4 digits, e.g. 011 or 00")
    )
    strip_prefix: str = Field(
        default="", pattern=_hint(r"^\+?[0-9]{0,10}$", "up to 10 digits, optionally after '+'")
    )
    add_prefix: str = Field(default="", pattern=_hint(r"^[0-9+*#]{0,10}$", "up to 10 of 0-9 + * #"))
    pre_delay: float = Field(default=2.0, ge=0, le=30)
    dtmf_duration_ms: int = Field(default=100, ge=20, le=2000)
    dtmf_gap_ms: int = Field(default=100, ge=1, le=5000)
    """Silence between tones. Not 0: Asterisk sends 0 as its default, 100 ms (found by
    review: "0 ms gaps" was said, and the flow's wait for the digits fell short)."""
    extension_prefix: str = Field(default="", pattern=_DTMF)
    """DTMF before the extension digits; `w` waits 0.5 s, `W` 1 s."""
    extension_suffix: str = Field(default="", pattern=_DTMF)
    """DTMF after the extension digits, e.g. "#" for switchboards that wait for it."""

    @field_validator("match", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("match")
    @classmethod
    def _normalise(cls, items: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for item in items:
            text = item.replace(" ", "")
            if text.startswith("+"):
                if not _PREFIX.fullmatch(text):
                    raise _fail(f"{item!r} is not an E.164 prefix such as '+44 20'")
                out.append(text)
            elif text.isdigit():  # "1425": a prefix written without its '+'
                raise _fail(f"{item!r} is neither a region nor a prefix: write '+{text}'")
            else:
                out.append(_region(text))
        return tuple(out)

    @model_validator(mode="after")
    def _national_in_one_country(self) -> DialProfile:
        # A national number drops its country code: two countries' numbers could then dial
        # the same digits (+41 44 123 45 67 and +33 4 41 23 45 67 as 0441234567), one
        # passing the other's country rules (found by review).
        if self.number_format == "national":
            codes = {_calling_code(m[1:]) for m in self.prefixes}
            codes |= {str(phonenumbers.country_code_for_region(c)) for c in self.countries}
            if len(codes) > 1 or None in codes:
                raise _fail(
                    "number_format national dials numbers without their country code: its "
                    "match must stay within one country code (one profile per country)"
                )
        return self

    @property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(m for m in self.match if m.startswith("+"))

    @property
    def countries(self) -> tuple[str, ...]:
        return tuple(m for m in self.match if not m.startswith("+"))


def _calling_code(digits: str) -> str | None:
    """The country calling code an E.164 prefix lies in; None when it is shorter than one
    ("+3": thirty-odd countries). Country codes are prefix-free."""
    known = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
    heads = (digits[:n] for n in (1, 2, 3) if len(digits) >= n)
    return next((head for head in heads if int(head) in known), None)


# --- tenants ------------------------------------------------------------------


class FraudSettings(_Model):
    enabled: bool = True
    """Offer "press 0 then pound to report fraud" in the greeting."""
    code: str = Field(default="0#", pattern=_hint(r"^[0-9]{1,10}#$", "digits then '#', e.g. 0#"))
    block_user: bool = True
    """Refuse new calls to a user who reported fraud, until unblocked."""

    @field_validator("code", mode="before")
    @classmethod
    def _not_a_comment(cls, value: Any) -> Any:
        if value is None:  # `code: #` reads as an empty value followed by a comment
            raise _fail("is empty (in a YAML file ' #' starts a comment: quote the code, \"0#\")")
        return value


class CallSettings(_Model):
    first_digit_timeout: float = Field(default=10, gt=0, le=120)
    inter_digit_timeout: float = Field(default=5, gt=0, le=60)
    # Keys already received when the greeting starts (always), and in its first seconds (this
    # long; 0: none), answer an earlier prompt (a "##" at the switchboard) or nothing the
    # person has heard (flow.py).
    greeting_key_guard: float = Field(default=0.5, ge=0, le=5)
    # Keys in the first seconds of the retry prompt are the tail of the wrong entry (flow.py).
    retry_key_guard: float = Field(default=1, ge=0, le=5)
    attempts: int = Field(default=3, ge=1, le=10)
    no_input_prompts: int = Field(default=2, ge=1, le=10)
    extension_prompt_repeats: int = Field(default=5, ge=1, le=20)
    extension_prompt_pause: float = Field(default=1, ge=0, le=60)
    operator_prompt_repeats: int = Field(default=5, ge=1, le=20)
    operator_prompt_pause: float = Field(default=2, ge=0, le=60)
    max_duration: float = Field(default=300, ge=10, le=3600)
    # Direct calls: a far end that talks on from the answer is a voicemail greeting (flow.py).
    # report: a call that then ends without a key is no_answer (voicemail); hang_up: the call
    # ends there; off: no talk detection at all.
    voicemail_detection: Literal["off", "report", "hang_up"] = "report"


def _limits(*pairs: tuple[int, int]) -> Any:
    return Field(default=tuple(RateLimit(count=c, window=w) for c, w in pairs))


class Limits(_Model):
    """Velocity limits; an empty list disables that kind of limit."""

    per_user: tuple[RateLimit, ...] = _limits((5, 300), (20, 86400))
    per_number: tuple[RateLimit, ...] = _limits((5, 300), (20, 86400))
    per_tenant: tuple[RateLimit, ...] = _limits((1000, 60))


# Types phonemfa refuses to call unless a tenant says otherwise: they cost the
# caller (premium, shared cost, UK 070 "personal" numbers that are billed like
# premium ones; UAN, "universal access" numbers, in most countries billed above a
# geographic call: UK 055, NL 084/087, JP 0570...), cannot answer a voice prompt (pager,
# voicemail access), or are not classified at all. UK 03 numbers, UANs billed as
# geographic by Ofcom's rules, stay allowed (tollfraud.GEOGRAPHIC_RATE_UAN), and so does
# toll-free: both are common office switchboards.
DEFAULT_REFUSED_TYPES = (
    NumberType.PREMIUM_RATE,
    NumberType.UAN,
    NumberType.SHARED_COST,
    NumberType.PERSONAL_NUMBER,
    NumberType.PAGER,
    NumberType.VOICEMAIL,
    NumberType.UNKNOWN,
)

# Same rules as the prompt catalog (prompts.CustomSource): existing Asterisk media,
# or a recording file it converts with sox (so: a format Debian's sox reads; not .opus nor
# .g722, which passed here and failed at start: found by review).
_MEDIA = re.compile(r"(sound|recording):[A-Za-z0-9_][A-Za-z0-9_./-]*")
_AUDIO_SUFFIXES = {
    ".wav", ".mp3", ".ogg", ".flac", ".aif", ".aiff", ".au",
    ".gsm", ".ulaw", ".alaw", ".sln", ".sln16",
}  # fmt: skip


def _prompt_source(value: str) -> str:
    if value.startswith(("sound:", "recording:")):
        if not _MEDIA.fullmatch(value) or ".." in value:
            raise _fail("Asterisk media looks like sound:custom/thanks (no extension)")
        return value
    if PurePath(value).suffix.lower() not in _AUDIO_SUFFIXES:
        raise _fail("a prompt is sound:NAME, recording:NAME or an audio file (.wav, .mp3, ...)")
    return value


PromptSource = Annotated[str, AfterValidator(_prompt_source)]


class TenantSettings(_Model):
    """One organisation's call settings; also the body of the API's tenant PUT."""

    region: Region = "US"
    """ISO region for numbers written without a country code."""
    operator_assistance: bool = False
    """Entra's "operator required to transfer extensions"; x@ forces it per user."""
    operator_fallback: bool = False
    """An extension keyed in to an auto attendant that never put the call through is tried
    once more through the number's operator (fallback.py)."""
    language: Language = "en"
    organization_name: str | None = Field(default=None, max_length=100)
    webhook_secret: Secret | None = None
    allowed_countries: tuple[str, ...] | None = None
    """None = only `region`; ["*"] = any country. "001" = the non-geographic numbers
    (+870/+881 satellite phones, +882/+883 international networks, +800...): never part of
    "*", whose fraud they are the classic target of, so listed apart (["*", "001"])."""
    refused_number_types: tuple[NumberType, ...] = DEFAULT_REFUSED_TYPES
    fraud: FraudSettings = FraudSettings()
    calls: CallSettings = CallSettings()
    limits: Limits = Limits()
    prompts: dict[Language, dict[MessageType, PromptSource]] = Field(default_factory=dict)

    @field_validator("allowed_countries")
    @classmethod
    def _countries(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise _fail('list at least one country, ["*"] for any, or null for the region')
        if "*" in value:
            if set(value) - {"*", NON_GEOGRAPHIC}:
                raise _fail(
                    '"*" (any country) must be alone, or with "001" (non-geographic numbers)'
                )
            return tuple(dict.fromkeys(value))
        return tuple(v if v == NON_GEOGRAPHIC else _region(v) for v in value)

    def allowed_country_set(self) -> frozenset[str]:
        """What this tenant may call: ISO regions, "*" for every one, "001" (NON_GEOGRAPHIC)
        for the non-geographic numbers."""
        if self.allowed_countries is None:
            return frozenset((self.region,))
        return frozenset(self.allowed_countries)

    def allows_country(self, country: str) -> bool:
        """Whether a number of this region ("001": non-geographic) may be called."""
        allowed = self.allowed_country_set()
        return country in allowed or ("*" in allowed and country != NON_GEOGRAPHIC)


# --- the whole file -----------------------------------------------------------


def _none_is_empty(value: Any) -> Any:
    # "logging:" with nothing under it means "all defaults", not "null".
    return {} if value is None else value


Section = BeforeValidator(_none_is_empty)


class Config(_Model):
    ari: Annotated[AriSettings, Section]
    trunk: Annotated[TrunkSettings, Section] = TrunkSettings()
    api: Annotated[ApiSettings, Section]
    storage: Annotated[StorageSettings, Section] = StorageSettings()
    logging: Annotated[LoggingSettings, Section] = LoggingSettings()
    shutdown: Annotated[ShutdownSettings, Section] = ShutdownSettings()
    sounds: Annotated[SoundsSettings, Section] = SoundsSettings()
    dial_profiles: tuple[DialProfile, ...] = ()
    tenants: dict[TenantName, Annotated[TenantSettings, Section]] = Field(min_length=1)

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        errors: list[InitErrorDetails] = []
        for i, token in enumerate(self.api.tokens):
            for j, name in enumerate(token.tenants or ()):
                if name not in self.tenants:
                    errors.append(_error(("api", "tokens", i, "tenants", j), "no such tenant"))
        seen: set[str] = set()
        for i, profile in enumerate(self.dial_profiles):
            if profile.name in seen:
                errors.append(_error(("dial_profiles", i, "name"), "duplicate profile name"))
            seen.add(profile.name)
        if errors:
            # A ValidationError with absolute locations, so messages name the exact key.
            raise ValidationError.from_exception_data("Config", errors)
        return self

    def tenant(self, name: str | None = None) -> TenantSettings:
        """The named tenant's settings; `None` means the "default" tenant."""
        key = DEFAULT_TENANT if name is None else name
        try:
            return self.tenants[key]
        except KeyError:
            raise UnknownTenantError(key) from None


def _error(loc: tuple[str | int, ...], message: str) -> InitErrorDetails:
    return {"type": _fail(message), "loc": loc, "input": None}


@functools.cache
def _all_field_names() -> list[str]:
    """Every key any section knows, for "did you mean" hints."""
    return sorted({name for model in _Model.__subclasses__() for name in model.model_fields})


# Keys other servers' configs use for what `api.listen` holds.
_LISTEN_GUESSES = frozenset({"host", "port", "bind", "address", "listen_address"})


def _unknown_key_hint(root: str, loc: tuple[str | int, ...]) -> str:
    """The hint after "unknown key": a close key of the same section first (a key of
    another section that merely looks alike misleads: `api.port` is not `format`), then
    the section where this exact key belongs, then any close key."""
    word = str(loc[-1])
    section = _section_at(root, loc[:-1])
    if section is not None:
        hint = did_you_mean(word, section.model_fields)
        if hint:
            return hint
        if word in _LISTEN_GUESSES and "listen" in section.model_fields:
            return " (listen takes host:port, e.g. listen: 127.0.0.1:8080)"
    homes = [path for path, model in _sections(root) if word in model.model_fields]
    if homes:
        return f" ({word!r} belongs under {' or '.join(homes)})"
    if root not in _CONFIG_ROOTS:
        return ""  # a request body (the API's): another model's keys would mislead
    return _file_key_hint(root, word) or did_you_mean(word, _all_field_names())


def _file_key_hint(root: str, word: str) -> str:
    """Where a key of the file that is out of its place belongs: "did you mean" would name
    the very key written (a section indented under a tenant, a file setting PUT)."""
    if word in Config.model_fields:
        if root == "Config":
            return f" ({word!r} is a top-level section: check this line's indentation)"
        return f" ({word!r} is a section of the config file, not a tenant setting)"
    in_file = [path for path, model in _sections("Config") if word in model.model_fields]
    if in_file:  # only a TenantSettings root gets here: the file's own were homes above
        return f" ({word!r} is a setting of the config file, under {' or '.join(in_file)})"
    return ""


# The models whose unknown keys may be any config key misplaced (a file, tenant settings).
_CONFIG_ROOTS = frozenset({"Config", "TenantSettings"})


def _section_at(root: str, loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model whose keys are at `loc` below the model named `root` (Config, or
    TenantSettings for the API's settings), or None when `loc` leads elsewhere."""
    model = _model_named(root)
    keys_to_skip = 0  # a dict key or list index comes next: not a field name
    for part in loc:
        if keys_to_skip:
            keys_to_skip -= 1
            continue
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model, keys_to_skip = _model_inside(model.model_fields[part].annotation)
    return model if not keys_to_skip else None


def _model_inside(annotation: Any) -> tuple[type[BaseModel] | None, int]:
    """The settings model an annotation holds, and how many keys/indexes lead to it."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _model_inside(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, 0
    if origin in (dict, list, tuple):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        model, depth = _model_inside(args[-1]) if args else (None, 0)
        return model, depth + 1
    for arg in get_args(annotation):  # X | None
        model, depth = _model_inside(arg)
        if model is not None:
            return model, depth
    return None, 0


def _model_named(name: str) -> type[BaseModel] | None:
    # Config's sections first; then other models, such as the API's request bodies.
    models: list[type[BaseModel]] = [Config, *_Model.__subclasses__(), *BaseModel.__subclasses__()]
    return next((m for m in models if m.__name__ == name), None)


@functools.cache
def _sections(root: str) -> list[tuple[str, type[BaseModel]]]:
    """Each settings section below the model named `root` as written in a file ("trunk",
    "tenants.<name>.calls", "dial_profiles[]"), for "belongs under" hints."""
    out: list[tuple[str, type[BaseModel]]] = []
    top = _model_named(root)
    if top is None:
        return out

    def walk(path: str, model: type[BaseModel]) -> None:
        out.append((path, model))
        for name, field in model.model_fields.items():
            inner, depth = _model_inside(field.annotation)
            if inner is None:
                continue
            where = f"{path}.{name}" if path else name
            if depth and get_origin(field.annotation) is dict:
                where += ".<name>"
            elif depth:
                where += "[]"
            walk(where, inner)

    walk("", top)
    return [(path, model) for path, model in out if path]


# --- redaction ----------------------------------------------------------------


def redacted_dump(config: BaseModel) -> dict[str, Any]:
    """Plain data for display (check-config): secrets as "***", paths as text."""
    data = _plain(config.model_dump(mode="python"))
    assert isinstance(data, dict)
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --- loading ------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    secrets: bool = True,
) -> Config:
    """Read and validate a YAML config file; any problem raises one `ConfigError`.

    `secrets=False` is for commands that never use a secret (`parse`, `prompts`): a secret
    (`is_secret_path`) whose ${VAR} is unset gets a placeholder instead of failing, so that
    an administrator need not have the service's secrets in their shell. Every other
    unset variable is still an error."""
    name = os.fspath(path)
    try:
        text = Path(name).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError.one(name, None, "no such file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError.one(name, None, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError.one(name, None, f"cannot read: {exc.strerror}") from None
    data, lines = _read_yaml(text, name, os.environ if environ is None else environ, secrets)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        issues = [
            ConfigIssue(name, _line_of(e.loc, lines), e.path, e.message) for e in field_errors(exc)
        ]
        raise ConfigError(issues) from None


_Key = tuple[Any, ...]


def config_line(path: str | os.PathLike[str], loc: Sequence[str | int]) -> int | None:
    """The line of `loc` (its deepest part written in the file) in a config file that
    loads: for a problem found after loading, such as a tenant's prompts (check-config)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
        _, lines = _read_yaml(text, os.fspath(path), os.environ, secrets=False)
    except (OSError, UnicodeDecodeError, ConfigError):
        return None
    return _line_of(loc, lines)


def _line_of(loc: Sequence[str | int], lines: Mapping[_Key, int]) -> int | None:
    """The line of the deepest part of `loc` in the file (for a missing key: its parent's).
    A missing top-level section has none: line 1 named whatever is there (found by review)."""
    if not loc:
        return lines.get(())
    for end in range(len(loc), 0, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None


class _Loader(yaml.SafeLoader):
    """SafeLoader without the YAML 1.1 surprises that bite a phone config.

    Only true/false are booleans (`region: NO` is Norway, not false; pydantic
    still reads yes/no/on/off for boolean keys), and integers are plain
    decimals: `international_prefix: 011` stays "011" instead of octal 9, and
    `1:30` is not 90. Numbers where text is expected become text (`_Model`).
    """


_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _INT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# Only a number's own spelling is a number: "+44", "1_000" and "0123" stay text, so a prefix,
# caller id or password written without quotes reaches its field as written.
_Loader.add_implicit_resolver(_INT_TAG, re.compile(r"^-?(?:0|[1-9][0-9]*)$"), list("-0123456789"))


def _float_or_text(loader: yaml.SafeLoader, node: yaml.Node) -> float | str:
    # A float whose text Python would not write back the same way ("1.50", "+1.5", "1e3",
    # ".inf") stays text: a text field keeps it as written, a number field parses it itself.
    assert isinstance(node, yaml.ScalarNode)
    value = loader.construct_yaml_float(node)
    return value if repr(value) == node.value else node.value


_Loader.add_constructor("tag:yaml.org,2002:float", _float_or_text)


def is_secret_path(path: Sequence[Any]) -> bool:
    """Whether a config path (as ("api", "tokens", 0)) holds a `Secret`."""
    p = tuple(path)
    if p == ("ari", "password"):
        return True
    if p[:2] == ("api", "tokens"):  # `tokens: [abc]` or `tokens: [{token: abc}]`
        return len(p) == 3 or (len(p) == 4 and p[3] == "token")
    return len(p) == 3 and p[0] == "tenants" and p[2] == "webhook_secret"


def _read_yaml(
    text: str, name: str, environ: Mapping[str, str], secrets: bool = True
) -> tuple[Any, dict[_Key, int]]:
    """Parse YAML, interpolate ${VAR}, and record the line of every key and list item."""
    try:
        # The reader refuses control characters as soon as it is built: inside the try.
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise ConfigError.one(name, None, f"invalid YAML: {exc}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError.one(name, None, "the file is empty")
        if not isinstance(node, yaml.MappingNode):
            found = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
            raise ConfigError.one(
                name, _line(node), f"the top level must be a mapping of sections, found {found}"
            )
        walker = _Walker(loader, name, environ, secrets)
        walker.walk(node, ())
        if walker.issues:
            raise ConfigError(walker.issues)
        return loader.construct_document(node), walker.lines
    except yaml.MarkedYAMLError as exc:
        line, problem = _yaml_problem(exc)
        raise ConfigError.one(name, line, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError.one(name, None, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


# The parser's words for the mistakes people make, and what to look at.
_YAML_HINTS = (
    ("expected <block end>", "this line is indented differently from the keys beside it"),
    (
        "mapping values are not allowed",
        "a ':' that YAML did not expect here: check this line's "
        "indentation against the lines above, or quote a value that holds ': '",
    ),
    ("could not find expected ':'", "a line without 'key: value' (or indented under a value)"),
    ("found character '\\t'", "a tab: YAML is indented with spaces"),
    (
        "found '<stream end>'",
        "the file ends where a value was expected (an unclosed [ or {, or "
        "a ' #' that started a comment)",
    ),
)


# PyYAML's words that quote the value itself, which may be a secret (a generated password
# starting with '*'): said without it.
_YAML_QUOTING = (
    (
        "found undefined alias",
        "a value starting with '*' is a YAML alias, and no anchor has its name: quote the value",
    ),
)


def _yaml_problem(exc: yaml.MarkedYAMLError) -> tuple[int | None, str]:
    """The line and words for a YAML syntax error: PyYAML's own, with a hint when it has
    one, and an unclosed [ or { at the line that opened it (not where the parser gave up)."""
    problem = exc.problem or exc.context or "syntax error"
    problem = next((said for words, said in _YAML_QUOTING if words in problem), problem)
    mark = exc.problem_mark or exc.context_mark
    opened = {"while parsing a flow sequence": "[", "while parsing a flow mapping": "{"}
    if exc.context in opened and exc.context_mark is not None:
        line = exc.context_mark.line + 1
        return line, f"the {opened[exc.context]} opened here is not closed ({problem})"
    if exc.context == "while scanning a quoted scalar" and exc.context_mark is not None:
        # Not where the parser gave up (the end of the file, found by review).
        return exc.context_mark.line + 1, f"the quote opened here is not closed ({problem})"
    for words, hint in _YAML_HINTS:
        if words in problem:
            problem = f"{hint} ({problem})"
            break
    if mark is None:
        return None, problem
    line = mark.line + 1
    if mark.buffer:  # at the end of the file the parser points past its last line
        text = mark.buffer.rstrip("\0")
        line = min(line, max(1, len(text.splitlines())))
    return line, problem


def _tag_problem(tag: str, loader: yaml.SafeLoader) -> str:
    short = tag.replace("tag:yaml.org,2002:", "!!")
    if tag in loader.yaml_constructors:
        return f"is not a valid {short} (remove the tag, or quote the value to keep it as text)"
    return "a value starting with '!' is a YAML tag phonemfa does not read: quote the value"


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VAR = re.compile(r"\$(\$?)\{([^}]*)\}")
_VAR_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_MAX_DEPTH = 64
# A config has hundreds of values; aliases of aliases can make billions (a "YAML bomb").
_MAX_VALUES = 100_000


class _Walker:
    """Records the line of every key and interpolates ${VAR} in string values."""

    def __init__(
        self, loader: _Loader, name: str, environ: Mapping[str, str], secrets: bool = True
    ) -> None:
        self.loader = loader
        self.name = name
        self.environ = environ
        self.secrets = secrets  # False: an unset secret gets a placeholder (load_config)
        self.lines: dict[_Key, int] = {}
        self.issues: list[ConfigIssue] = []
        self._done: set[int] = set()  # scalars already interpolated (reached again by alias)
        self.values = 0  # nodes walked, aliases expanded

    def walk(self, node: yaml.Node, path: _Key) -> None:
        self.values += 1
        if self.values > _MAX_VALUES:
            raise ConfigError.one(
                self.name, _line(node), f"more than {_MAX_VALUES} values once aliases are expanded"
            )
        self.lines.setdefault(path, _line(node))
        if len(path) > _MAX_DEPTH:
            self._issue(node, path, "nesting too deep")
        elif isinstance(node, yaml.MappingNode):
            self._mapping(node, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, (*path, i))
        elif isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
            if id(node) not in self._done:
                self._done.add(id(node))
                node.value = self._interpolate(node, path)
        elif isinstance(node, yaml.ScalarNode):
            self._construct(node, path)

    def _construct(self, node: yaml.ScalarNode, path: _Key) -> None:
        """A tagged value built now, where its line and key are known: PyYAML's errors
        quote the value (a password starting with '!') or escape as a ValueError (`!!int
        abc`). Construction later reuses what is built here."""
        try:
            self.loader.construct_object(node)
        except Exception:  # noqa: BLE001 (any constructor's error: reported, never quoted)
            self._issue(node, path, _tag_problem(node.tag, self.loader))

    def _mapping(self, node: yaml.MappingNode, path: _Key) -> None:
        # PyYAML keeps the last of duplicate keys silently; in a config that hides mistakes.
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag != _MERGE_TAG:
                key = self._key(key_node, path)
                if key in first:
                    self._issue(
                        key_node, (*path, key), f"duplicate key (first at line {first[key]})"
                    )
                first.setdefault(key, _line(key_node))
        self.loader.flatten_mapping(node)  # resolve "<<: *anchor" merges, as construction will
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            # Merged keys come first, the mapping's own after: as in construction, the last
            # one is the value, and its lines (its own, its entries') the ones to show (found
            # by review).
            if key in seen:
                under = (*path, key)
                for known in [k for k in self.lines if k[: len(under)] == under]:
                    del self.lines[known]
            seen.add(key)
            self.lines[(*path, key)] = _line(key_node)
            self.walk(value_node, (*path, key))

    def _key(self, key_node: yaml.Node, path: _Key) -> Any:
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError.one(self.name, _line(key_node), "keys must be plain names", path)
        try:
            return self.loader.construct_object(key_node)
        except Exception:  # noqa: BLE001 (as a value's: reported, never quoted)
            problem = _tag_problem(key_node.tag, self.loader)
            raise ConfigError.one(self.name, _line(key_node), problem, path) from None

    def _interpolate(self, node: yaml.ScalarNode, path: _Key) -> str:
        def replace(m: re.Match[str]) -> str:
            if m.group(1):  # "$${...}" is a literal "${...}"
                return m.group(0)[1:]
            body = _VAR_BODY.fullmatch(m.group(2))
            if body is None:
                # A secret's text is never quoted back, even a part of it (found by review).
                shown = "a ${...}" if is_secret_path(path) else repr(m.group(0))
                self._issue(node, path, f"bad variable reference {shown}")
                return ""
            var, default = body.groups()
            value = self.environ.get(var)
            if value and default is not None or value is not None and default is None:
                return value
            if default is not None:
                return str(default)
            if not self.secrets and is_secret_path(path):
                return f"<{var} unset>"  # one per variable: two tokens never look the same
            hint = (  # a secret's default would be a secret written in the file
                f"set it in the environment, e.g. {var}=... in the service's env file"
                if is_secret_path(path)
                else f"write ${{{var}:-default}} for a default"
            )
            self._issue(node, path, f"environment variable {var} is not set ({hint})")
            return ""

        value = str(node.value)
        return _VAR.sub(replace, value) if "$" in value else value

    def _issue(self, node: yaml.Node, path: _Key, message: str) -> None:
        self.issues.append(ConfigIssue(self.name, _line(node), _path_text(path) or None, message))
