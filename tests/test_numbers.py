from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from proxy.numbers import E164_PATTERN, MAX_INPUT_LENGTH, is_e164, mask_number, normalize_number


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155550100", "+14155550100"),
        ("+1 415 555 0100", "+14155550100"),
        ("(415) 555-0100", "+14155550100"),
        ("415.555.0100", "+14155550100"),
        ("1-415-555-0100", "+14155550100"),
        ("  +1 (415) 555-0100\t", "+14155550100"),
        ("415\u2011555\u20110100", "+14155550100"),
        ("+1\u00a0415\u00a0555\u00a00100", "+14155550100"),
        ("+44 20 7946 0958", "+442079460958"),
        ("00 44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
        ("011 44 20 7946 0958", "+442079460958"),
        ("+14155550100\n", "+14155550100"),
        ("tel:+14155550100", "+14155550100"),
        ("tel:+1-415-555-0100", "+14155550100"),
        ("TEL:+1-415-555-0100;phone-context=example.com", "+14155550100"),
        ("sip:+14155550100@sip.example.com", "+14155550100"),
        ("SIP:+14155550100@sip.example.com", "+14155550100"),
        ("sips:14155550100@host;user=phone", "+14155550100"),
        ("sip:+1-415-555-0100@gw.example.com;user=phone", "+14155550100"),
        ("sip:%2B14155550100@sip.example.com", "+14155550100"),
        ("sip:+14155550100:password@host", "+14155550100"),
        ("sip:4155550100@host", "+14155550100"),
        ("sip:442079460958@host", "+442079460958"),
        # Area code 555 is not in service, so phonenumbers calls it invalid; it is still a possible number.
        ("+1 555 555 0100", "+15555550100"),
    ],
)
def test_normalize_number_accepts(raw: str, expected: str) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        None,
        14155550100,
        b"+14155550100",
        ["+14155550100"],
        "",
        "   ",
        "hello",
        "+",
        "++14155550100",
        "555 0100",
        "+1 23",
        "1-800-FLOWERS",
        "415 555 0100 x12",
        "415 555 0100 ext. 12",
        "tel:+1-415-555-0100;ext=12",
        "call me on 415 555 0100",
        "sip:alice@pbx.example.org",
        "sip:@pbx.example.org",
        "sips:+1415alice@host",
        "sip:",
        "tel:",
        "tel:abc",
        "+\u0661\u0664\u0661\u0665\u0665\u0665\u0665\u0660\u0661\u0660\u0660",
        "\uff0b\uff11\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff10\uff10",
        "1" * (MAX_INPUT_LENGTH + 1),
        "+1" + " " * MAX_INPUT_LENGTH + "415 555 0100",
    ],
)
def test_normalize_number_rejects(raw: object) -> None:
    assert normalize_number(raw) is None


def test_normalize_number_reads_national_numbers_in_the_default_region() -> None:
    assert normalize_number("020 7946 0958", default_region="GB") == "+442079460958"
    assert normalize_number("020 7946 0958") is None
    # A national number means nothing without a known region to read it in.
    assert normalize_number("4155550100", default_region="ZZ") is None


def test_normalize_number_hot_path_does_not_call_phonenumbers(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> phonenumbers.PhoneNumber:
        raise AssertionError("phonenumbers.parse called for an E.164 input")

    monkeypatch.setattr(phonenumbers, "parse", forbidden)
    assert normalize_number("+14155550100") == "+14155550100"
    assert normalize_number("+442079460958") == "+442079460958"


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (None, "-"),
        ("+14155550100", "+1415*****00"),
        ("+442079460958", "+4420******58"),
        ("+2901234", "+*****34"),
        ("+4915123456789", "+4915*******89"),
        ("sip:+14155550100@sip.example.com", "sip:+1415*****00@sip.example.com"),
        ("sips:14155550100@host;user=phone", "sips:***@host"),
        ("sip:alice@pbx.example.org", "sip:***@pbx.example.org"),
        ("sip:alice@evil\nhost", "sip:***"),
        ("tel:+14155550100", "tel:+1415*****00"),
        ("(415) 555-0100", "***"),
        ("", "***"),
    ],
)
def test_mask_number(number: str | None, expected: str) -> None:
    assert mask_number(number) == expected


_PHONE_ALPHABET = st.sampled_from("0123456789+ ()-./\u00a0\u2011:;@abcsipte%2B")
_PHONE_LIKE = st.text(_PHONE_ALPHABET, max_size=30)
_ANYTHING = st.one_of(
    st.text(),
    _PHONE_LIKE,
    st.from_regex(r"(sips?|tel):\+?[0-9 ()-.]{0,16}(@[a-z.]{0,12})?", fullmatch=True),
    st.none(),
    st.integers(),
    st.floats(),
    st.binary(),
    st.lists(st.text(), max_size=3),
)
_E164_STRATEGY = st.from_regex(E164_PATTERN, fullmatch=True)


@given(_ANYTHING)
def test_normalize_number_never_raises_and_returns_e164_or_none(raw: object) -> None:
    result = normalize_number(raw)
    assert result is None or E164_PATTERN.fullmatch(result)


@given(st.one_of(st.text(), _PHONE_LIKE))
def test_normalize_number_is_idempotent(raw: str) -> None:
    once = normalize_number(raw)
    if once is not None:
        assert normalize_number(once) == once


@given(_E164_STRATEGY)
def test_normalize_number_keeps_e164_as_is(number: str) -> None:
    assert normalize_number(number) == number


@given(_E164_STRATEGY)
def test_mask_number_hides_at_least_five_digits(number: str) -> None:
    masked = mask_number(number)
    assert number not in masked
    assert number[1:] not in masked
    assert masked.count("*") >= 5
    assert masked.endswith(number[-2:])


@given(_E164_STRATEGY, st.from_regex(r"[a-z]{1,10}(\.[a-z]{1,10}){0,2}", fullmatch=True))
def test_mask_number_hides_sip_user_parts(number: str, host: str) -> None:
    for uri in (f"sip:{number}@{host}", f"sips:{number[1:]}@{host};user=phone"):
        masked = mask_number(uri)
        assert number[1:] not in masked
        assert re.search(r"[0-9]{5}", masked) is None


@given(
    st.text(alphabet="+0123456789²٣x ", max_size=20)
    | st.from_regex(r"\+[0-9²٣]{5,16}", fullmatch=True)
    | st.from_regex(E164_PATTERN, fullmatch=True)
)
@example("+01234567")
@example("+1234567")
@example("+123456")
@example("+123456789012345")
@example("+1234567890123456")
@example("+1²345678")
@example("+1٣345678")
def test_the_quick_e164_check_is_the_pattern(text: str) -> None:
    assert is_e164(text) == (E164_PATTERN.fullmatch(text) is not None)
