"""Parse and format users' phone numbers: main number, office extension, '@'.

Accepted forms (what directories really contain)::

    +1 425-555-1234x5678        425-555-1234x5678 (tenant region)
    425-555-1234x@5678          '@' forces operator assistance for this user
    +1 (425) 555 1234 x 5678    +1 4255551234 ext. 5678
    tel:+14255551234;ext=5678   (RFC 3966)
    +44 (0)20 7946 0000 x 123   0033 1 23 45 67 89 (international prefix)

The extension is 1-10 digits and nothing else: pauses (`w`/`W`) belong to the
dial profile (see `policy.DialProfile`), because the operator prompt reads the
extension out digit by digit.

Pure: no I/O. Every refusal is a `NumberError` with a machine-readable code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType
from phonenumbers import PhoneNumber as PhoneNumberLib

__all__ = [
    "MAX_EXTENSION_DIGITS",
    "NumberError",
    "NumberType",
    "PhoneNumber",
    "mask",
    "mask_text",
    "parse_number",
]

MAX_EXTENSION_DIGITS = 10
# Longer input is not a phone number; also bounds the work done on hostile input.
MAX_INPUT_LENGTH = 120
# How many stars stand for the hidden digits: fixed so a masked number does not
# even reveal the number's length.
_MASK_STARS = "*******"
# An extension is part of the number: wherever it would be shown (the number, the timeline's
# DTMF sent and spoken digits), it is these stars.
EXTENSION_MASK = "***"


class NumberError(ValueError):
    """A phone number that cannot be dialled. `code` is stable, `message` for humans.

    Codes: empty, too_long, not_a_number, unknown_country, invalid_for_region,
    bad_extension, operator_flag_without_extension, operator_flag_in_main_number,
    trailing_garbage.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        # Which number of a request it is about: `phone`, or `backup_phones[i]` (calls.py).
        self.field = "phone"


class NumberType(StrEnum):
    """phonenumbers' number types, as the lower-case names used in config files."""

    FIXED_LINE = "fixed_line"
    MOBILE = "mobile"
    FIXED_LINE_OR_MOBILE = "fixed_line_or_mobile"
    TOLL_FREE = "toll_free"
    PREMIUM_RATE = "premium_rate"
    SHARED_COST = "shared_cost"
    VOIP = "voip"
    PERSONAL_NUMBER = "personal_number"
    PAGER = "pager"
    UAN = "uan"
    VOICEMAIL = "voicemail"
    UNKNOWN = "unknown"


_TYPE_FROM_LIB: dict[int, NumberType] = {
    PhoneNumberType.FIXED_LINE: NumberType.FIXED_LINE,
    PhoneNumberType.MOBILE: NumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: NumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.TOLL_FREE: NumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE: NumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST: NumberType.SHARED_COST,
    PhoneNumberType.VOIP: NumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER: NumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER: NumberType.PAGER,
    PhoneNumberType.UAN: NumberType.UAN,
    PhoneNumberType.VOICEMAIL: NumberType.VOICEMAIL,
    PhoneNumberType.UNKNOWN: NumberType.UNKNOWN,
}


# phonenumbers' region for the non-geographic services (+800 freephone, +870 and +881
# satellite phones, +882/+883 international networks, +979 premium rate...).
NON_GEOGRAPHIC = "001"

# France's national plan is shared by its overseas departments, each with its own country
# code: "0692 12 34 56" dialled in Paris reaches a mobile in Réunion, +262 692 12 34 56.
# Saint-Pierre-et-Miquelon (+508) is not in it: its national numbers are written otherwise.
_MAINLAND = "FR"
_MAINLAND_CODE = 33
_OVERSEAS = ("RE", "YT", "GP", "MQ", "GF", "BL", "MF")
# FR's metadata also takes some of their lines as its own (0596 30..., 0263..., 0269...):
# a fixed or mobile line of exactly one of them is theirs, whatever FR says. Their special
# ranges (08.., 09..) overlap the mainland's and each other's, and stay FR's.
_LINE_TYPES = frozenset(
    {PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
)
_OVERSEAS_LINES = tuple(
    (
        region,
        re.compile(
            "|".join(
                f"(?:{desc.national_number_pattern})"
                for desc in (meta.fixed_line, meta.mobile)
                if desc is not None and desc.national_number_pattern
            )
        ),
    )
    for region in _OVERSEAS
    if (meta := phonenumbers.PhoneMetadata.metadata_for_region(region)) is not None
)


@dataclass(frozen=True)
class PhoneNumber:
    """A dialable user number. Compare and hash by value.

    `country` is the ISO 3166 region phonenumbers assigns ("US", "CA", "JM" for
    +1 numbers; "001" for non-geographic numbers such as +800).
    """

    e164: str
    country_code: int
    country: str
    national: str
    number_type: NumberType
    extension: str | None = None
    operator_forced: bool = False

    def __post_init__(self) -> None:
        if self.extension is not None and not _EXT_DIGITS.fullmatch(self.extension):
            raise ValueError(f"extension must be 1-{MAX_EXTENSION_DIGITS} digits")
        if self.operator_forced and self.extension is None:
            raise ValueError("operator_forced needs an extension")

    @property
    def digits(self) -> str:
        """The E.164 number without its '+'."""
        return self.e164[1:]

    @property
    def national_digits(self) -> str:
        """The number as dialled inside its country, e.g. "0123456789" in France."""
        return re.sub(r"\D", "", self.national)

    def format(self) -> str:
        """Canonical text: `+14255551234`, `+14255551234x5678`, `+14255551234x@5678`."""
        if self.extension is None:
            return self.e164
        return f"{self.e164}x{'@' if self.operator_forced else ''}{self.extension}"

    def mask(self) -> str:
        """For logs: country code and last two digits only, e.g. `+1*******34x@***`."""
        text = f"+{self.country_code}{_MASK_STARS}{self.e164[-2:]}"
        if self.extension is not None:
            text += f"x{'@' if self.operator_forced else ''}{EXTENSION_MASK}"
        return text

    def __str__(self) -> str:
        return self.format()


def mask(number: PhoneNumber | str) -> str:
    """Mask a parsed number, or raw text that may not parse (see `mask_text`)."""
    if isinstance(number, PhoneNumber):
        return number.mask()
    return mask_text(number)


def mask_text(text: str) -> str:
    """Mask raw input for logs: only the last two digits of its number survive, and digits
    after it (an extension however marked: x, ext, ',,', '#', poste) are masked whole, as a
    parsed number's extension is (they were its last two digits: found by review)."""
    number = _MASKED_NUMBER.match(text)
    if number is None:
        return "<no digits>"
    digits = re.sub(r"\D", "", number.group())
    rest = any(c.isdigit() for c in text[number.end() :])
    return f"{_MASK_STARS}{digits[-2:]}" + (f"x{EXTENSION_MASK}" if rest else "")


# The number in raw text: up to its first digit, then what a number is written with.
_MASKED_NUMBER = re.compile(r"[^0-9]*[0-9][0-9+ .\-()/]*")


# --- parsing ---------------------------------------------------------------

_EXT_DIGITS = re.compile(rf"[0-9]{{1,{MAX_EXTENSION_DIGITS}}}")
# Leftmost match wins, so "ext" is found before its own "x". ASCII only: with
# Unicode case folding "ſ" would match "s" and "K" (Kelvin sign) "k".
_EXT_MARKER = re.compile(r";ext=|(?:extension|extn|ext)[.:]?|x", re.IGNORECASE | re.ASCII)
# What a main number may contain once extension markers are split off.
_MAIN_CHARS = re.compile(r"[0-9+ .\-()/]*")
_MAIN_PLUS_POSITION = re.compile(r"[( ]*\+[0-9 .\-()/]*")
_TEL_VISUAL = re.compile(r"[-.()]")
# Another marker, then what could be an extension: "#5678", ",,5678", "poste 1234".
_OTHER_MARKER = re.compile(r"([^\d\s]+)\s*[0-9]+\s*")
# Copy-paste from documents brings odd spaces and dashes; treat them as plain ones.
_NORMALISE = str.maketrans(
    {
        "\u00a0": " ",
        "\u2007": " ",
        "\u2009": " ",
        "\u202f": " ",
        "\t": " ",
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
    }
)


def parse_number(text: str, region: str | None = None) -> PhoneNumber:
    """Parse a user's number; `region` (e.g. "US") applies to numbers without '+'.

    Raises `NumberError` and nothing else for any text; `ValueError` only when
    `region` itself is not a region phonenumbers knows (a programming or config
    error, which config validation catches first).
    """
    if region is not None and region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unsupported region {region!r}")
    s = text.translate(_NORMALISE).strip()
    if not s:
        raise NumberError("empty", "no phone number given")
    if len(s) > MAX_INPUT_LENGTH:
        raise NumberError("too_long", f"more than {MAX_INPUT_LENGTH} characters")
    if s[:4].lower() == "tel:":
        main, ext_text = _split_tel_uri(s[4:])
    else:
        main, ext_text = _split_extension(s)
    extension, forced = _parse_extension(ext_text)
    return _parse_main(main, region, extension, forced)


def _split_extension(s: str) -> tuple[str, str | None]:
    """Split "main x ext"; check the main part's characters."""
    marker = _EXT_MARKER.search(s)
    main = s[: marker.start()] if marker else s
    ext_text = s[marker.end() :] if marker else None
    if not any(c.isdigit() for c in main):
        raise NumberError("not_a_number", "no phone number digits found")
    if "@" in main:
        if marker is None and not main[main.index("@") + 1 :].strip():
            raise NumberError(
                "operator_flag_without_extension",
                "'@' must be followed by an extension, as in 425-555-1234x@5678",
            )
        raise NumberError(
            "operator_flag_in_main_number",
            "'@' goes right after the extension marker, as in 425-555-1234x@5678",
        )
    ok = _MAIN_CHARS.match(main)
    assert ok is not None  # the pattern matches the empty string
    if ok.end() < len(main):
        bad = main[ok.end()]
        if any(c.isdigit() for c in main[: ok.end()]):
            raise NumberError("trailing_garbage", _after_number(main[ok.end() :]))
        raise NumberError("not_a_number", f"unexpected {bad!r}")
    if "+" in main and (main.count("+") > 1 or not _MAIN_PLUS_POSITION.fullmatch(main)):
        raise NumberError("not_a_number", "'+' may only start the number")
    return main, ext_text


def _after_number(rest: str) -> str:
    """Why `rest` cannot follow the number. Digits after another marker (a dialler's pause or
    key, "poste") are an extension written otherwise: say how to write it."""
    m = _OTHER_MARKER.fullmatch(rest)
    if m is None:
        return f"unexpected {rest[0]!r} after the number"
    return (
        f"{m.group(1)!r} does not mark an extension: write it after x, as in "
        "425-555-1234x5678 (pauses before it belong to the dial profile)"
    )


def _split_tel_uri(body: str) -> tuple[str, str | None]:
    """RFC 3966 `tel:` URI: global number or local number with a phone-context."""
    number, *params = body.split(";")
    ext_text: str | None = None
    context: str | None = None
    for param in params:
        name, _, value = param.partition("=")
        name = name.lower()
        if name == "ext" and ext_text is None:
            ext_text = _TEL_VISUAL.sub("", value)
            if not ext_text:
                raise NumberError("bad_extension", "empty ext= parameter")
        elif name == "phone-context" and context is None:
            context = _TEL_VISUAL.sub("", value)
        else:
            raise NumberError(
                "trailing_garbage", f"unsupported or repeated tel: URI parameter {name!r}"
            )
    digits = _TEL_VISUAL.sub("", number)
    if not re.fullmatch(r"\+?[0-9]+", digits):
        raise NumberError("not_a_number", "a tel: URI needs digits, e.g. tel:+14255551234")
    if digits.startswith("+"):
        if context is not None:
            raise NumberError("trailing_garbage", "phone-context is only for local numbers")
        return digits, ext_text
    if context is None or not re.fullmatch(r"\+[0-9]+", context):
        raise NumberError(
            "unknown_country", "a local tel: number needs phone-context=+<country code>"
        )
    return context + digits, ext_text


def _parse_extension(ext_text: str | None) -> tuple[str | None, bool]:
    if ext_text is None:
        return None, False
    m = re.fullmatch(r"\s*(@?)\s*([0-9]*)\s*(.*)", ext_text, re.DOTALL)
    assert m is not None  # every part is optional
    at, digits, rest = m.groups()
    if rest:
        if digits and rest.lstrip().startswith("@"):
            raise NumberError("bad_extension", "'@' goes before the extension digits, as in x@5678")
        if digits and not any(c.isdigit() or c == "@" for c in rest):
            raise NumberError("trailing_garbage", f"unexpected {rest[0]!r} after the extension")
        raise NumberError("bad_extension", f"an extension is 1-{MAX_EXTENSION_DIGITS} digits")
    if not digits:
        if at:
            raise NumberError(
                "operator_flag_without_extension", "'@' must be followed by extension digits"
            )
        raise NumberError("bad_extension", "the extension marker has no digits after it")
    if len(digits) > MAX_EXTENSION_DIGITS:
        raise NumberError(
            "bad_extension", f"an extension has at most {MAX_EXTENSION_DIGITS} digits"
        )
    return digits, bool(at)


def _parse_main(main: str, region: str | None, extension: str | None, forced: bool) -> PhoneNumber:
    try:
        parsed = phonenumbers.parse(main, region)
    except NumberParseException as exc:
        raise _from_lib_error(exc, main, region) from None
    if parsed.extension:  # defensive: markers were split off before
        raise NumberError("bad_extension", "unexpected extension in the main number")
    country_code = parsed.country_code
    if country_code is None:  # defensive: a successful parse always sets it
        raise NumberError("unknown_country", "no country code")
    # A number is valid exactly when its type is known: that is how the library decides
    # `is_valid_number`, which matches the number against its region's type patterns as
    # `number_type` does. Asking only `number_type` does that work once instead of twice.
    lib_type = phonenumbers.number_type(parsed)
    if (shared := _shared_plan_reading(main, region, lib_type, parsed)) is not None:
        parsed, lib_type, country_code = shared
    if lib_type == PhoneNumberType.UNKNOWN:
        where = phonenumbers.region_code_for_country_code(country_code)
        message = f"not a valid number for {where} (+{country_code})"
        raise NumberError("invalid_for_region", message + _abroad_hint(main))
    country = phonenumbers.region_code_for_number(parsed) or NON_GEOGRAPHIC
    return PhoneNumber(
        e164=phonenumbers.format_number(parsed, PhoneNumberFormat.E164),
        country_code=country_code,
        country=country,
        national=phonenumbers.format_number(parsed, PhoneNumberFormat.NATIONAL),
        number_type=_TYPE_FROM_LIB.get(lib_type, NumberType.UNKNOWN),
        extension=extension,
        operator_forced=forced,
    )


def _shared_plan_reading(
    main: str, region: str | None, own_type: int, own: PhoneNumberLib
) -> tuple[PhoneNumberLib, int, int] | None:
    """`main` as the number of another region of France's plan (parsed, its type, its
    country code), or None to keep the tenant region's reading (`own_type`, `own`). Written
    with France's country code (+33, 0033), it is read as dialled in mainland France: "+33 2
    63 ..." is Reunion's line as "02 63 ..." is there (found by review: it was French, past a
    country rule refusing Reunion, with a per-number limit of its own)."""
    digits = "".join(c for c in main if c.isdigit())
    if "+" in main or digits.startswith("00"):
        if own.country_code != _MAINLAND_CODE:
            return None  # another country's code: read as written
        national = "0" + phonenumbers.national_significant_number(own)
        return _national_reading(national, _MAINLAND, own_type)
    return _national_reading(main, region, own_type)


def _national_reading(
    main: str, region: str | None, own_type: int
) -> tuple[PhoneNumberLib, int, int] | None:
    """`main`, written nationally in a region of France's plan, as the number of another of
    its regions, or None. An overseas reading wins when it is the only one: over FR's when
    it is a fixed or mobile line, over an invalid reading in any case; FR's reading comes
    last, for an overseas tenant's number valid nowhere overseas."""
    overseas_tenant = region in _OVERSEAS
    valid = own_type != PhoneNumberType.UNKNOWN
    if not (region == _MAINLAND or overseas_tenant) or (overseas_tenant and valid):
        return None
    digits = "".join(c for c in main if c.isdigit())
    if not digits.startswith("0") or digits.startswith("00"):
        return None  # without the trunk prefix, or dialled abroad: read as written
    nsn = digits[1:]
    found: dict[str, tuple[PhoneNumberLib, int, int]] = {}
    for other, lines in _OVERSEAS_LINES:
        # A valid FR reading is only overridden by a line: look no further than the patterns.
        if other == region or (valid and not lines.fullmatch(nsn)):
            continue
        reading = _valid_reading(main, other)
        if reading is not None and (not valid or reading[1] in _LINE_TYPES):
            e164 = phonenumbers.format_number(reading[0], PhoneNumberFormat.E164)
            found.setdefault(e164, reading)
    if len(found) == 1:
        return next(iter(found.values()))
    if overseas_tenant and not found:
        return _valid_reading(main, _MAINLAND)
    return None  # several overseas readings: only its country code can say which


def _valid_reading(main: str, region: str) -> tuple[PhoneNumberLib, int, int] | None:
    try:
        parsed = phonenumbers.parse(main, region)
    except NumberParseException:
        return None
    lib_type = phonenumbers.number_type(parsed)
    if lib_type == PhoneNumberType.UNKNOWN or not parsed.country_code:
        return None
    return parsed, lib_type, parsed.country_code


def _abroad_hint(main: str) -> str:
    """Read without a '+', a number is the tenant region's: one of another country written as
    at home ("01 23 45 67 89") or with another country's way out ("0033...") is not valid
    there, and only its country code says which it is."""
    if "+" in main:
        return ""
    return "; a number of another country needs + and its country code (+33 1 23 45 67 89)"


def _from_lib_error(exc: NumberParseException, main: str, region: str | None) -> NumberError:
    kind = exc.error_type
    if kind == NumberParseException.INVALID_COUNTRY_CODE:
        if region is None and "+" not in main:
            return NumberError("unknown_country", "no country code (+..) and no default region")
        return NumberError("unknown_country", "unknown country code")
    if kind in (
        NumberParseException.TOO_SHORT_NSN,
        NumberParseException.TOO_SHORT_AFTER_IDD,
        NumberParseException.TOO_LONG,
    ):
        message = "too short or too long for its country"
        return NumberError("invalid_for_region", message + _abroad_hint(main))
    return NumberError("not_a_number", "does not look like a phone number")
