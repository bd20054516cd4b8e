"""Phone numbers as routing keys: whatever people or Vapi send in, E.164 out, and masked for logs."""

from __future__ import annotations

import re
from urllib.parse import unquote

import phonenumbers

__all__ = ["E164_PATTERN", "MAX_INPUT_LENGTH", "is_e164", "mask_number", "normalize_number", "route_key"]

# ASCII digits only: a bare `\d` would also accept Arabic-Indic and full-width digits.
E164_PATTERN = re.compile(r"\+[1-9][0-9]{6,14}")
MAX_INPUT_LENGTH = 64

# What people paste from web pages and spreadsheets: no-break and thin spaces, Unicode dashes.
_SPACES = "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f"
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"
_SEPARATORS = str.maketrans(_SPACES + _DASHES, " " * len(_SPACES) + "-" * len(_DASHES))
# Digits and the visual separators people type. No letters: that rules out vanity numbers
# ("1-800-FLOWERS") and extensions ("x12"), which must not collapse onto a main number's key.
_DIALLABLE = re.compile(r"\+?[0-9 ().\-/]*[0-9][0-9 ().\-/]*")
# RFC 3966 visual separators only, inside a SIP user part or a tel: URI.
_URI_NUMBER = re.compile(r"\+?[0-9().\-]*[0-9][0-9().\-]*")
_SAFE_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}")
_E164_FORMAT = phonenumbers.PhoneNumberFormat.E164


def normalize_number(raw: object, default_region: str = "US") -> str | None:
    """Return `raw` as an E.164 string (`+14155550100`), or None if it is not a phone number.

    Accepts national and international formats ("(415) 555-0100", "+44 20 7946 0958",
    "00 44 20 7946 0958"), `tel:` URIs, and `sip:`/`sips:` URIs whose user part is a number.
    Never raises. Numbers without a country code are read in `default_region`.
    """
    if not isinstance(raw, str):
        return None
    # Hot path: Vapi sends E.164 on every call, and phonenumbers costs tens of microseconds.
    if E164_PATTERN.fullmatch(raw):
        return raw
    text = raw.strip()
    if not text or len(text) > MAX_INPUT_LENGTH:
        return None
    scheme = text[:5].lower()
    if scheme.startswith(("sip:", "sips:")):
        user = _sip_user(text)
        if user is None:
            return None
        # Trunks often send E.164 without the "+"; "14155550100" must not be read as a local number.
        candidates = [user] if user.startswith("+") else [user, "+" + user]
        return _parse_best(candidates, default_region)
    if scheme.startswith("tel:"):
        number = _tel_number(text)
        return None if number is None else _parse_best([number], default_region)
    text = text.translate(_SEPARATORS).strip()
    if not _DIALLABLE.fullmatch(text):
        return None
    if text.startswith("00"):
        # "00" is the international prefix almost everywhere except NANP (011), where phonenumbers
        # would otherwise read it as part of a national number.
        text = "+" + text[2:]
    return _parse_best([text], default_region)


def mask_number(number: str | None) -> str:
    """Return a form of `number` that is safe to log: "+1415*****00", "sip:***@host", "***", or "-" for None."""
    if number is None:
        return "-"
    if is_e164(number):
        return _mask_e164(number)
    scheme, sep, rest = number.partition(":")
    if sep and scheme.lower() in ("sip", "sips", "tel"):
        user, at, host = rest.partition("@")
        user = unquote(user.split(";", 1)[0].split(":", 1)[0])
        masked = _mask_e164(user) if E164_PATTERN.fullmatch(user) else "***"
        host = host.split(";", 1)[0]
        if at and _SAFE_HOST.fullmatch(host):
            return f"{scheme.lower()}:{masked}@{host}"
        return f"{scheme.lower()}:{masked}"
    return "***"


def is_e164(number: str) -> bool:
    """`E164_PATTERN.fullmatch` without the regex (half the time): every call line masks two numbers."""
    if not 8 <= len(number) <= 16 or number[0] != "+" or number[1] == "0":
        return False
    return number[1:].isdigit() and number.isascii()


def _mask_e164(number: str) -> str:
    digits = number[1:]
    # At least five digits always stay hidden, so even a seven-digit number is not recoverable.
    keep = max(0, min(4, len(digits) - 7))
    hidden = len(digits) - keep - 2
    return f"+{digits[:keep]}{'*' * hidden}{digits[-2:]}"


def _sip_user(uri: str) -> str | None:
    """The number in a SIP URI's user part, or None if the user part is a name like "alice"."""
    rest = uri.split(":", 1)[1]
    user = rest.split("@", 1)[0]
    # User parameters (";isub=", ";phone-context=") and a password (":secret") are not the number.
    user = unquote(user.split(";", 1)[0].split(":", 1)[0])
    return user if _URI_NUMBER.fullmatch(user) else None


def _tel_number(uri: str) -> str | None:
    number, *params = uri[4:].split(";")
    if any(param.lower().startswith("ext=") for param in params):
        return None
    return number if _URI_NUMBER.fullmatch(number) else None


def _parse_best(candidates: list[str], region: str) -> str | None:
    """Parse each reading of the input; prefer one phonenumbers calls valid, else one of a possible length.

    Validity depends on the library's snapshot of numbering plans: a newly opened area code is
    "invalid" until phonenumbers is upgraded, and NANP test numbers (+1 555 555 01xx) never are.
    Refusing those would drop real calls, so a number of possible length is accepted as a fallback;
    a typo then becomes a key that nobody calls, which costs nothing. Validity only breaks ties
    between readings (national vs. international) of a bare SIP user part.
    """
    parsed: list[phonenumbers.PhoneNumber] = []
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        # IS_POSSIBLE_LOCAL_ONLY ("555 0100" in the US) is not a routable number.
        if number.extension or (
            phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE
        ):
            continue
        parsed.append(number)
    if not parsed:
        return None
    best = next((number for number in parsed if phonenumbers.is_valid_number(number)), parsed[0])
    e164 = phonenumbers.format_number(best, _E164_FORMAT)
    # The library allows shapes E.164 does not (e.g. too short); keeping the output inside the
    # pattern is also what makes normalisation idempotent.
    return e164 if E164_PATTERN.fullmatch(e164) else None


def route_key(raw: object) -> str | None:
    """The lookup key of a number as an admin or Vapi writes it: E.164, else a bare lower-case SIP URI."""
    number = normalize_number(raw)
    if number is not None:
        return number
    if isinstance(raw, str) and raw[:4].lower() in ("sip:", "sips") and len(raw) <= 256:
        uri = raw.strip().lower().split(";", 1)[0]
        return "sip:" + uri.split(":", 1)[1] if ":" in uri else None
    return None
