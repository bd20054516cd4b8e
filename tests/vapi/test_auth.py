from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from proxy.secret import Secret
from proxy.vapi.auth import AuthResult, AuthSettings, BearerPlan, HmacPlan, authenticate, hmac_signature

NOW = 1_760_000_000.0
URL = "https://proxy.example.com/vapi"
BODY = b'{"message":{"type":"assistant-request","note":"{timestamp} {body} stays literal"}}'
SHARED = "shared-s3cret-Value"
SHARED_NEXT = "shared-s3cret-Next"
TOKEN = "tok_live_Abc123"
TOKEN_NEXT = "tok_live_Next456"
HMAC_KEY = "hmac-Key-789"
HMAC_KEY_NEXT = "hmac-Key-Next"
HMAC_KEY_B64 = base64.b64encode(b"\x00\x01raw key bytes\xff").decode()
ALL_SECRETS = (SHARED, SHARED_NEXT, TOKEN, TOKEN_NEXT, HMAC_KEY, HMAC_KEY_NEXT, HMAC_KEY_B64)


def check(
    settings: AuthSettings,
    headers: Mapping[str, str],
    *,
    body: bytes = BODY,
    now: float = NOW,
    method: str = "POST",
    url: str = URL,
) -> AuthResult:
    """Authenticate, and check that the verdict never carries a secret, whatever it is."""
    result = authenticate(settings, method=method, url=url, headers=headers, body=body, now=now)
    for secret in ALL_SECRETS:
        assert secret not in result.reason
        assert secret not in repr(result)
    return result


def shared(*values: str) -> AuthSettings:
    return AuthSettings(shared_secrets=tuple(Secret(v) for v in values or (SHARED,)))


def bearer(*values: str, **options: Any) -> AuthSettings:
    return AuthSettings(bearer=BearerPlan(tokens=tuple(Secret(v) for v in values or (TOKEN,)), **options))


def hmac_plan(*values: str, **options: Any) -> HmacPlan:
    return HmacPlan(secrets=tuple(Secret(v) for v in values or (HMAC_KEY,)), **options)


def signed(plan: HmacPlan, key: str = HMAC_KEY, *, timestamp: str = str(int(NOW)), **options: Any) -> dict[str, str]:
    signature = hmac_signature(plan, Secret(key), body=options.pop("body", BODY), timestamp=timestamp, **options)
    return {"x-signature": signature, "x-timestamp": timestamp}


# --- X-Vapi-Secret -----------------------------------------------------------------------------------------------


def test_shared_secret_accepted() -> None:
    assert check(shared(), {"x-vapi-secret": SHARED}) == AuthResult(True, "shared_secret", "ok")


def test_shared_secret_header_name_is_case_insensitive() -> None:
    assert check(shared(), {"X-VAPI-SECRET": SHARED}).ok
    assert check(shared(), Headers({"X-Vapi-Secret": SHARED})).ok


@pytest.mark.parametrize(
    "value", [SHARED.upper(), SHARED.lower(), SHARED[:-1], SHARED + "x", "", " ", f"Bearer {SHARED}", TOKEN]
)
def test_shared_secret_mismatch(value: str) -> None:
    assert check(shared(), {"x-vapi-secret": value}) == AuthResult(False, "shared_secret", "mismatch")


def test_shared_secret_missing() -> None:
    assert check(shared(), {"authorization": SHARED}) == AuthResult(False, None, "missing")


def test_shared_secret_rotation_accepts_either() -> None:
    settings = shared(SHARED, SHARED_NEXT)
    assert check(settings, {"x-vapi-secret": SHARED}).ok
    assert check(settings, {"x-vapi-secret": SHARED_NEXT}).ok
    assert not check(settings, {"x-vapi-secret": SHARED + SHARED_NEXT}).ok


def test_shared_secret_repeated_header_rejected() -> None:
    raw = [(b"x-vapi-secret", SHARED.encode()), (b"x-vapi-secret", b"something else")]
    assert check(shared(), Headers(raw=raw)) == AuthResult(False, "shared_secret", "duplicate")
    raw = [(b"x-vapi-secret", SHARED.encode()), (b"x-vapi-secret", SHARED.encode())]
    assert check(shared(), Headers(raw=raw)).reason == "duplicate"
    assert check(shared(), {"x-vapi-secret": SHARED, "X-Vapi-Secret": SHARED}).reason == "duplicate"


def test_shared_secret_from_asgi_scope_headers() -> None:
    scope = {"type": "http", "headers": [(b"x-vapi-secret", f"  {SHARED}\t".encode())]}
    assert check(shared(), Headers(scope=scope)).ok


# --- Bearer ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "Bearer  "])
def test_bearer_accepted_with_any_scheme_case(scheme: str) -> None:
    assert check(bearer(), {"Authorization": f"{scheme} {TOKEN}"}) == AuthResult(True, "bearer", "ok")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (f"Bearer {TOKEN.upper()}", "mismatch"),
        (f"Bearer {TOKEN[:-1]}", "mismatch"),
        (f"Bearer {TOKEN} extra", "mismatch"),
        ("Bearer ", "malformed"),
        (TOKEN, "malformed"),
        (f"Basic {TOKEN}", "malformed"),
        (f"Bearer{TOKEN}", "malformed"),
    ],
)
def test_bearer_rejected(value: str, reason: str) -> None:
    assert check(bearer(), {"authorization": value}) == AuthResult(False, "bearer", reason)


def test_bearer_missing() -> None:
    assert check(bearer(), {"x-vapi-secret": TOKEN}) == AuthResult(False, None, "missing")


def test_bearer_without_prefix() -> None:
    settings = bearer(prefix_enabled=False)
    assert check(settings, {"authorization": TOKEN}).ok
    assert not check(settings, {"authorization": f"Bearer {TOKEN}"}).ok


def test_bearer_custom_header_name_is_case_insensitive() -> None:
    settings = bearer(header="X-Api-Key", prefix_enabled=False)
    assert check(settings, {"x-api-key": TOKEN}).ok
    assert check(settings, Headers({"X-API-KEY": TOKEN})).ok
    assert not check(settings, {"authorization": TOKEN}).ok


def test_bearer_rotation_accepts_either() -> None:
    settings = bearer(TOKEN, TOKEN_NEXT)
    assert check(settings, {"authorization": f"Bearer {TOKEN}"}).ok
    assert check(settings, {"authorization": f"Bearer {TOKEN_NEXT}"}).ok


def test_bearer_repeated_header_rejected() -> None:
    raw = [(b"authorization", f"Bearer {TOKEN}".encode()), (b"Authorization", b"Bearer nope")]
    assert check(bearer(), Headers(raw=raw)) == AuthResult(False, "bearer", "duplicate")


# --- HMAC --------------------------------------------------------------------------------------------------------


def test_hmac_accepted_with_default_plan() -> None:
    plan = hmac_plan()
    headers = signed(plan)
    expected = hmac.new(HMAC_KEY.encode(), f"{int(NOW)}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers["x-signature"] == expected
    assert check(AuthSettings(hmac=plan), headers) == AuthResult(True, "hmac", "ok")


@pytest.mark.parametrize("timestamp", [str(int(NOW)), str(int(NOW * 1000)), f"{NOW:.3f}", str(int(NOW) - 299)])
def test_hmac_accepts_seconds_and_milliseconds(timestamp: str) -> None:
    plan = hmac_plan()
    assert check(AuthSettings(hmac=plan), signed(plan, timestamp=timestamp)).ok


@pytest.mark.parametrize(
    "timestamp",
    [str(int(NOW) - 301), str(int((NOW - 301) * 1000)), str(int(NOW) + 301), str(int((NOW + 301) * 1000)), "0"],
)
def test_hmac_rejects_timestamps_outside_the_window(timestamp: str) -> None:
    plan = hmac_plan()
    assert check(AuthSettings(hmac=plan), signed(plan, timestamp=timestamp)) == AuthResult(False, "hmac", "expired")


@pytest.mark.parametrize("now", [float("nan"), float("inf"), float("-inf")])
def test_hmac_fails_closed_on_a_broken_clock(now: float) -> None:
    plan = hmac_plan()
    assert check(AuthSettings(hmac=plan), signed(plan), now=now) == AuthResult(False, "hmac", "expired")


def test_hmac_tolerance_is_configurable() -> None:
    plan = hmac_plan(tolerance_seconds=10)
    assert check(AuthSettings(hmac=plan), signed(plan, timestamp=str(int(NOW) - 10))).ok
    assert not check(AuthSettings(hmac=plan), signed(plan, timestamp=str(int(NOW) - 11))).ok


@pytest.mark.parametrize(
    "timestamp", ["abc", "", "1.76e9", "-1760000000", "nan", "inf", "0x68E0", "1760000000.", "١٧٦"]
)
def test_hmac_rejects_non_numeric_timestamps(timestamp: str) -> None:
    plan = hmac_plan()
    assert check(AuthSettings(hmac=plan), signed(plan, timestamp=timestamp)) == AuthResult(False, "hmac", "malformed")


def test_hmac_missing_headers() -> None:
    plan = hmac_plan()
    settings = AuthSettings(hmac=plan)
    headers = signed(plan)
    assert check(settings, {"x-timestamp": headers["x-timestamp"]}) == AuthResult(False, None, "missing")
    assert check(settings, {"x-signature": headers["x-signature"]}) == AuthResult(False, "hmac", "malformed")
    assert check(settings, {}) == AuthResult(False, None, "missing")


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_hmac_algorithms(algorithm: str) -> None:
    plan = hmac_plan(algorithm=algorithm)
    headers = signed(plan)
    assert len(bytes.fromhex(headers["x-signature"])) == hashlib.new(algorithm).digest_size
    assert check(AuthSettings(hmac=plan), headers).ok
    other = hmac_plan(algorithm="sha256" if algorithm != "sha256" else "sha512")
    assert not check(AuthSettings(hmac=other), headers).ok


def test_hmac_hex_is_case_insensitive() -> None:
    plan = hmac_plan()
    headers = signed(plan)
    headers["x-signature"] = headers["x-signature"].upper()
    assert check(AuthSettings(hmac=plan), headers).ok


def test_hmac_base64_encoding() -> None:
    plan = hmac_plan(encoding="base64")
    headers = signed(plan)
    assert len(base64.b64decode(headers["x-signature"], validate=True)) == 32
    assert check(AuthSettings(hmac=plan), headers).ok
    hex_plan = hmac_plan()
    assert check(AuthSettings(hmac=plan), signed(hex_plan)).reason in {"malformed", "mismatch"}


def test_hmac_signature_prefix() -> None:
    plan = hmac_plan(signature_prefix="sha256=")
    headers = signed(plan)
    assert headers["x-signature"].startswith("sha256=")
    assert check(AuthSettings(hmac=plan), headers).ok
    bare = {**headers, "x-signature": headers["x-signature"].removeprefix("sha256=")}
    assert check(AuthSettings(hmac=plan), bare) == AuthResult(False, "hmac", "malformed")


def test_hmac_secret_is_base64() -> None:
    plan = hmac_plan(HMAC_KEY_B64, secret_is_base64=True)
    headers = signed(plan, HMAC_KEY_B64)
    raw_key = base64.b64decode(HMAC_KEY_B64)
    expected = hmac.new(raw_key, f"{int(NOW)}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers["x-signature"] == expected
    assert check(AuthSettings(hmac=plan), headers).ok
    # The same text used as the key itself is a different key.
    assert not check(AuthSettings(hmac=hmac_plan(HMAC_KEY_B64)), headers).ok


def test_hmac_payload_format_with_method_and_url() -> None:
    plan = hmac_plan(payload_format="{method}\n{url}\n{timestamp}\n{body}")
    headers = signed(plan, method="post", url=URL)
    expected_payload = f"POST\n{URL}\n{int(NOW)}\n".encode() + BODY
    assert headers["x-signature"] == hmac.new(HMAC_KEY.encode(), expected_payload, hashlib.sha256).hexdigest()
    settings = AuthSettings(hmac=plan)
    assert check(settings, headers, method="post").ok
    assert check(settings, headers, method="PUT").reason == "mismatch"
    assert check(settings, headers, url=URL + "/other").reason == "mismatch"


def test_hmac_without_timestamp() -> None:
    plan = hmac_plan(include_timestamp=False, timestamp_header=None, payload_format="{body}")
    headers = {"x-signature": hmac.new(HMAC_KEY.encode(), BODY, hashlib.sha256).hexdigest()}
    assert hmac_signature(plan, Secret(HMAC_KEY), body=BODY, timestamp="") == headers["x-signature"]
    assert check(AuthSettings(hmac=plan), headers, now=0.0).ok


def test_hmac_include_timestamp_off_skips_the_freshness_check() -> None:
    plan = hmac_plan(include_timestamp=False)
    stale = str(int(NOW) - 86_400)
    assert check(AuthSettings(hmac=plan), signed(plan, timestamp=stale)).ok
    absent = {"x-signature": hmac_signature(plan, Secret(HMAC_KEY), body=BODY, timestamp="")}
    assert check(AuthSettings(hmac=plan), absent).ok


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-2],
        lambda s: s[:32],
        lambda s: s[:-1],
        lambda s: s + "00",
        lambda s: "",
        lambda s: s[:-1] + ("0" if s[-1] != "0" else "1"),
        lambda s: s.replace(s[0], "z", 1),
        lambda s: " ".join([s[:2], s[2:]]),
        lambda s: "\u00e9" + s,
    ],
)
def test_hmac_rejects_tampered_signatures(mangle: Any) -> None:
    plan = hmac_plan()
    headers = signed(plan)
    headers["x-signature"] = mangle(headers["x-signature"])
    result = check(AuthSettings(hmac=plan), headers)
    assert not result.ok
    assert result.reason in {"mismatch", "malformed"}


def test_hmac_rejects_a_tampered_body_or_timestamp() -> None:
    plan = hmac_plan()
    headers = signed(plan)
    assert check(AuthSettings(hmac=plan), headers, body=BODY + b" ").reason == "mismatch"
    moved = {**headers, "x-timestamp": str(int(NOW) + 1)}
    assert check(AuthSettings(hmac=plan), moved).reason == "mismatch"


def test_hmac_rotation_accepts_either() -> None:
    plan = hmac_plan(HMAC_KEY, HMAC_KEY_NEXT)
    assert check(AuthSettings(hmac=plan), signed(plan, HMAC_KEY)).ok
    assert check(AuthSettings(hmac=plan), signed(plan, HMAC_KEY_NEXT)).ok
    assert not check(AuthSettings(hmac=plan), signed(plan, "another-key")).ok


def test_hmac_custom_header_names_are_case_insensitive() -> None:
    plan = hmac_plan(signature_header="X-Vapi-Signature", timestamp_header="X-Vapi-Timestamp")
    headers = signed(plan)
    renamed = {"x-vapi-signature": headers["x-signature"], "X-VAPI-TIMESTAMP": headers["x-timestamp"]}
    assert check(AuthSettings(hmac=plan), renamed).ok
    assert check(AuthSettings(hmac=plan), Headers(renamed)).ok


def test_hmac_repeated_headers_rejected() -> None:
    plan = hmac_plan()
    headers = signed(plan)
    for name in ("x-signature", "x-timestamp"):
        raw = [(k.encode(), v.encode()) for k, v in headers.items()] + [(name.upper().encode(), headers[name].encode())]
        assert check(AuthSettings(hmac=plan), Headers(raw=raw)) == AuthResult(False, "hmac", "duplicate")


def test_hmac_from_starlette_headers_uses_the_raw_bytes() -> None:
    plan = hmac_plan()
    headers = signed(plan)
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    assert check(AuthSettings(hmac=plan), Headers(raw=raw)).ok
    raw.append((b"x-unrelated", b"\xff\xfe non-ascii"))
    assert check(AuthSettings(hmac=plan), Headers(raw=raw)).ok


# --- Several methods, none, insecure ----------------------------------------------------------------------------


def test_nothing_configured_is_rejected() -> None:
    assert check(AuthSettings(), {"x-vapi-secret": SHARED}) == AuthResult(False, None, "unconfigured")
    assert check(AuthSettings(bearer=BearerPlan(tokens=())), {}) == AuthResult(False, None, "unconfigured")
    assert not AuthSettings(bearer=BearerPlan(tokens=()), hmac=HmacPlan(secrets=())).configured


def test_insecure_accepts_everything_only_when_nothing_is_configured() -> None:
    assert check(AuthSettings(insecure=True), {}) == AuthResult(True, "insecure", "insecure")
    assert check(AuthSettings(shared_secrets=(Secret(SHARED),), insecure=True), {}) == AuthResult(
        False, None, "missing"
    )


def test_any_configured_method_is_enough() -> None:
    plan = hmac_plan()
    settings = AuthSettings(shared_secrets=(Secret(SHARED),), bearer=BearerPlan(tokens=(Secret(TOKEN),)), hmac=plan)
    assert settings.configured
    assert check(settings, {"x-vapi-secret": SHARED}).method == "shared_secret"
    assert check(settings, {"authorization": f"Bearer {TOKEN}"}).method == "bearer"
    assert check(settings, signed(plan)).method == "hmac"
    assert check(settings, {"x-vapi-secret": "wrong", **signed(plan)}).method == "hmac"
    # A bearer token sent as the legacy secret is still the wrong credential for that header.
    assert not check(settings, {"x-vapi-secret": TOKEN}).ok


def test_failure_reports_the_failure_that_got_furthest() -> None:
    plan = hmac_plan()
    settings = AuthSettings(shared_secrets=(Secret(SHARED),), hmac=plan)
    stale = signed(plan, timestamp=str(int(NOW) - 3600))
    assert check(settings, stale) == AuthResult(False, "hmac", "expired")
    assert check(settings, {"x-vapi-secret": "nope"}) == AuthResult(False, "shared_secret", "mismatch")


# --- Settings ----------------------------------------------------------------------------------------------------


def test_repr_never_shows_a_secret() -> None:
    settings = AuthSettings(
        shared_secrets=(Secret(SHARED), Secret(SHARED_NEXT)),
        bearer=BearerPlan(tokens=(Secret(TOKEN), Secret(TOKEN_NEXT))),
        hmac=HmacPlan(secrets=(Secret(HMAC_KEY), Secret(HMAC_KEY_B64)), secret_is_base64=False),
    )
    for text in (repr(settings), str(settings), repr(settings.bearer), repr(settings.hmac)):
        for secret in ALL_SECRETS:
            assert secret not in text
    assert "**********" in repr(settings)


def test_settings_are_immutable_and_comparable() -> None:
    settings = shared()
    with pytest.raises(AttributeError):
        settings.insecure = True  # type: ignore[misc]
    assert settings == shared()
    assert AuthSettings(shared_secrets=[Secret(SHARED)]).shared_secrets == (Secret(SHARED),)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: AuthSettings(shared_secrets=(SHARED,)), TypeError),  # type: ignore[arg-type]
        (lambda: AuthSettings(shared_secrets=Secret(SHARED)), TypeError),  # type: ignore[arg-type]
        (lambda: AuthSettings(shared_secrets=(Secret(""),)), ValueError),
        (lambda: AuthSettings(shared_secrets=(Secret("\ud800" + SHARED),)), ValueError),
        (lambda: BearerPlan(tokens=(Secret(""),)), ValueError),
        (lambda: BearerPlan(tokens=(Secret(TOKEN),), header=""), ValueError),
        (lambda: hmac_plan(algorithm="md5"), ValueError),
        (lambda: hmac_plan(encoding="base32"), ValueError),
        (lambda: hmac_plan(payload_format="{timestmp}.{body}"), ValueError),
        (lambda: hmac_plan(payload_format="{svix-id}.{body}"), ValueError),
        (lambda: hmac_plan(timestamp_header=None), ValueError),
        (lambda: hmac_plan(tolerance_seconds=0), ValueError),
        (lambda: hmac_plan(tolerance_seconds=float("nan")), ValueError),
        (lambda: hmac_plan(HMAC_KEY + "!", secret_is_base64=True), ValueError),
        (lambda: hmac_plan(signature_header=""), ValueError),
    ],
)
def test_invalid_settings_fail_at_construction_without_showing_secrets(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        build()
    for secret in ALL_SECRETS:
        assert secret not in str(caught.value)


# --- Fuzz --------------------------------------------------------------------------------------------------------

_FUZZ_SETTINGS = AuthSettings(
    shared_secrets=(Secret(SHARED),),
    bearer=BearerPlan(tokens=(Secret(TOKEN),)),
    hmac=hmac_plan(HMAC_KEY, HMAC_KEY_B64),
)
_NAMES = st.one_of(
    st.sampled_from(["x-vapi-secret", "Authorization", "X-Signature", "x-timestamp", "content-type"]), st.text()
)
_VALUES = st.one_of(
    st.text(),
    st.sampled_from(["Bearer ", "sha256=", str(int(NOW)), "", "Bearer tok_live_", "abc123" * 11]),
    st.from_regex(r"[0-9a-fA-F]{0,130}", fullmatch=True),
    st.from_regex(r"[0-9]{1,14}(\.[0-9]{1,4})?", fullmatch=True),
)


@given(
    headers=st.dictionaries(_NAMES, _VALUES, max_size=6),
    body=st.binary(max_size=200),
    method=st.text(max_size=8),
    url=st.text(max_size=30),
    now=st.floats(),
)
def test_fuzzed_dict_requests_never_authenticate(
    headers: dict[str, str], body: bytes, method: str, url: str, now: float
) -> None:
    result = check(_FUZZ_SETTINGS, headers, body=body, method=method, url=url, now=now)
    assert not result.ok


@given(
    raw=st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from([b"x-vapi-secret", b"authorization", b"x-signature", b"x-timestamp"]), st.binary()
            ),
            st.binary(max_size=140),
        ),
        max_size=6,
    ),
    body=st.binary(max_size=200),
)
def test_fuzzed_raw_headers_never_authenticate(raw: list[tuple[bytes, bytes]], body: bytes) -> None:
    assert not check(_FUZZ_SETTINGS, Headers(raw=raw), body=body).ok
