"""Authentication of Vapi's requests: shared secret, bearer token or HMAC signature; fails closed.

`authenticate` is pure (no I/O, no clock): the caller passes the headers, the raw body and the time,
so the same function serves the ASGI app, the tests and the benchmark.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from starlette.datastructures import Headers

from proxy.config.models import HMAC_PLACEHOLDERS as PLACEHOLDERS
from proxy.config.models import AuthSettings, BearerPlan, HmacPlan
from proxy.secret import Secret

# The settings types live with the config models (one home for their defaults); imported from here too.
__all__ = [
    "PLACEHOLDERS",
    "AuthResult",
    "AuthSettings",
    "BearerPlan",
    "HmacPlan",
    "authenticate",
    "authenticate_headers",
    "hmac_signature",
    "shared_secret_verdict",
]

SHARED_SECRET_HEADER = "x-vapi-secret"

_ALGORITHMS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512, "sha1": hashlib.sha1}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TIMESTAMP = re.compile(rb"[0-9]{1,16}(?:\.[0-9]{1,9})?")
_BEARER = re.compile(rb"bearer[ \t]+", re.IGNORECASE)
# Epoch seconds pass 1e11 in the year 5138; epoch milliseconds passed it in 1973.
_MILLISECONDS_ABOVE = 1e11
_OWS = b" \t"
# When every configured method fails, the log names the failure that got furthest.
_SEVERITY = {"missing": 0, "mismatch": 1, "malformed": 2, "expired": 3, "duplicate": 4}


@dataclass(frozen=True)
class AuthResult:
    """The verdict. `reason` is a fixed word for logs and metrics and never depends on a secret.

    On failure `method` names the method whose failure `reason` describes, or None if no credential
    was presented at all.
    """

    ok: bool
    method: str | None
    reason: str


def authenticate(
    settings: AuthSettings, *, method: str, url: str, headers: Mapping[str, str], body: bytes, now: float
) -> AuthResult:
    """Decide whether a request comes from Vapi. Never raises on anything the client controls.

    `headers` may be a starlette `Headers` (read raw, so repeated headers are seen) or a plain dict;
    names are compared case-insensitively. `body` must be the raw bytes as received. `now` is epoch seconds.
    """
    if not settings.configured:
        if settings.insecure:
            return AuthResult(True, "insecure", "insecure")
        return AuthResult(False, None, "unconfigured")
    fields = _index_headers(headers)
    results: list[AuthResult] = []
    if settings.shared_secrets:
        results.append(_check_shared_secret(settings.shared_secrets, fields))
    if settings.bearer is not None and settings.bearer.tokens:
        results.append(_check_bearer(settings.bearer, fields))
    if settings.hmac is not None and settings.hmac.secrets:
        results.append(_check_hmac(settings.hmac, fields, method=method, url=url, body=body, now=now))
    for result in results:
        if result.ok:
            return result
    worst = max(results, key=lambda failure: _SEVERITY[failure.reason])
    return worst if worst.reason != "missing" else AuthResult(False, None, "missing")


def authenticate_headers(settings: AuthSettings, *, headers: Mapping[str, str]) -> AuthResult | None:
    """Decide from the headers alone where the scheme allows, so that a body is read only when it must be.

    Returns the verdict when a shared secret or bearer token decides it (success), or when nothing is left
    that the body could change (failure: no HMAC configured, or no signature header sent). Returns None when
    only an HMAC signature over the body can decide: then call `authenticate` with the body.
    """
    if not settings.configured:
        return authenticate(settings, method="", url="", headers=headers, body=b"", now=0.0)
    fields = _index_headers(headers)
    results: list[AuthResult] = []
    if settings.shared_secrets:
        results.append(_check_shared_secret(settings.shared_secrets, fields))
    if settings.bearer is not None and settings.bearer.tokens:
        results.append(_check_bearer(settings.bearer, fields))
    for result in results:
        if result.ok:
            return result
    if settings.hmac is not None and settings.hmac.secrets:
        signature = _single(fields, settings.hmac.signature_header)
        if not isinstance(signature, str):
            return None
        results.append(AuthResult(False, "hmac", signature))
    worst = max(results, key=lambda failure: _SEVERITY[failure.reason])
    return worst if worst.reason != "missing" else AuthResult(False, None, "missing")


def hmac_signature(
    plan: HmacPlan, secret: Secret, *, body: bytes, timestamp: str, method: str = "POST", url: str = ""
) -> str:
    """The signature header value (prefix included) that Vapi would send for this request."""
    payload = _payload(plan.payload_format, body, _utf8(timestamp), method, url)
    digest = _digest(plan, _key(plan, secret), payload)
    encoded = digest.hex() if plan.encoding == "hex" else base64.b64encode(digest).decode("ascii")
    return plan.signature_prefix + encoded


def _index_headers(headers: Mapping[str, str]) -> dict[str, list[bytes]]:
    """Lower-cased name -> every value sent under it, as bytes with surrounding whitespace removed."""
    fields: dict[str, list[bytes]] = {}
    if isinstance(headers, Headers):
        # The raw list keeps repeated headers and the bytes as they came off the wire.
        for raw_name, raw_value in headers.raw:
            fields.setdefault(raw_name.decode("latin-1").lower(), []).append(raw_value.strip(_OWS))
        return fields
    for name, value in headers.items():
        if not isinstance(name, str):
            continue
        if isinstance(value, str):
            encoded = _utf8(value)
        elif isinstance(value, bytes):
            encoded = value
        else:
            continue
        fields.setdefault(name.lower(), []).append(encoded.strip(_OWS))
    return fields


def _single(fields: dict[str, list[bytes]], name: str) -> bytes | Literal["missing", "duplicate"]:
    # Two copies of an auth header mean a proxy or client we do not understand; picking one could
    # let an attacker's copy be the one that is checked by some other component.
    values = fields.get(name.lower(), [])
    if not values:
        return "missing"
    if len(values) > 1:
        return "duplicate"
    return values[0]


def _matches_any(secrets: tuple[Secret, ...], candidate: bytes) -> bool:
    matched = False
    for secret in secrets:
        # Compare with every secret so the time taken does not say which one matched.
        matched |= secret.matches(candidate)
    return matched


def shared_secret_verdict(secrets: tuple[Secret, ...], presented: list[bytes]) -> str:
    """ "ok", "missing", "duplicate" or "mismatch" for the X-Vapi-Secret values a request sent (as received:
    optional whitespace around each is not part of it). Every answer path decides with this one function;
    each only collects the values from its own view of the headers."""
    if not presented:
        return "missing"
    if len(presented) > 1:
        return "duplicate"
    return "ok" if _matches_any(secrets, presented[0].strip(_OWS)) else "mismatch"


def _check_shared_secret(secrets: tuple[Secret, ...], fields: dict[str, list[bytes]]) -> AuthResult:
    verdict = shared_secret_verdict(secrets, fields.get(SHARED_SECRET_HEADER, []))
    return AuthResult(verdict == "ok", "shared_secret", verdict)


def _check_bearer(plan: BearerPlan, fields: dict[str, list[bytes]]) -> AuthResult:
    value = _single(fields, plan.header)
    if isinstance(value, str):
        return AuthResult(False, "bearer", value)
    if plan.prefix_enabled:
        scheme = _BEARER.match(value)
        if scheme is None:
            return AuthResult(False, "bearer", "malformed")
        value = value[scheme.end() :]
    if _matches_any(plan.tokens, value):
        return AuthResult(True, "bearer", "ok")
    return AuthResult(False, "bearer", "mismatch")


def _check_hmac(
    plan: HmacPlan, fields: dict[str, list[bytes]], *, method: str, url: str, body: bytes, now: float
) -> AuthResult:
    signature = _single(fields, plan.signature_header)
    if isinstance(signature, str):
        return AuthResult(False, "hmac", signature)
    timestamp = _single(fields, plan.timestamp_header) if plan.timestamp_header else b""
    if isinstance(timestamp, str):
        if timestamp == "duplicate":
            return AuthResult(False, "hmac", "duplicate")
        if plan.include_timestamp:
            # A signature without its timestamp is a credential presented, just not a usable one.
            return AuthResult(False, "hmac", "malformed")
        # Without include_timestamp an absent header signs as "" wherever the format says {timestamp}.
        timestamp = b""
    if plan.include_timestamp and not _TIMESTAMP.fullmatch(timestamp):
        return AuthResult(False, "hmac", "malformed")
    prefix = _utf8(plan.signature_prefix)
    if not signature.startswith(prefix):
        return AuthResult(False, "hmac", "malformed")
    given = _decode_signature(plan, signature[len(prefix) :])
    if given is None:
        return AuthResult(False, "hmac", "malformed")
    payload = _payload(plan.payload_format, body, timestamp, method, url)
    matched = False
    for secret in plan.secrets:
        matched |= hmac.compare_digest(_digest(plan, _key(plan, secret), payload), given)
    if not matched:
        return AuthResult(False, "hmac", "mismatch")
    # Checked after the signature, so "expired" in the logs means a genuine request that came too
    # late (a replay or a skewed clock), not someone's random guess.
    if plan.include_timestamp:
        sent = float(timestamp)
        if sent > _MILLISECONDS_ABOVE:
            sent /= 1000
        # Written as "not within" so that a NaN clock fails closed.
        if not abs(now - sent) <= plan.tolerance_seconds:
            return AuthResult(False, "hmac", "expired")
    return AuthResult(True, "hmac", "ok")


def _payload(payload_format: str, body: bytes, timestamp: bytes, method: str, url: str) -> bytes:
    # One pass over the format, never chained str.replace: a body containing "{timestamp}" must stay as sent.
    values = {
        "body": body,
        "timestamp": timestamp,
        "method": _utf8(method.upper()),
        "url": _utf8(url),
    }
    parts: list[bytes] = []
    position = 0
    for match in _PLACEHOLDER.finditer(payload_format):
        parts.append(_utf8(payload_format[position : match.start()]))
        parts.append(values.get(match.group(1), _utf8(match.group(0))))
        position = match.end()
    parts.append(_utf8(payload_format[position:]))
    return b"".join(parts)


def _key(plan: HmacPlan, secret: Secret) -> bytes:
    raw = _utf8(str(secret))
    if not plan.secret_is_base64:
        return raw
    key = _b64decode(raw)
    if key is None:
        raise ValueError("secret is not valid base64")
    return key


def _digest(plan: HmacPlan, key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, _ALGORITHMS[plan.algorithm]).digest()


def _decode_signature(plan: HmacPlan, value: bytes) -> bytes | None:
    if plan.encoding == "base64":
        return _b64decode(value)
    try:
        return binascii.a2b_hex(value)
    except (binascii.Error, ValueError):
        return None


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate from a hostile dict header must not raise.
    return text.encode("utf-8", "surrogatepass")


def _b64decode(value: bytes) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
