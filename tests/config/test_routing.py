from __future__ import annotations

import textwrap

import pytest

from proxy.config import Config, parse_config
from proxy.config.snapshot import InboundCall
from proxy.numbers import route_key
from proxy.vapi.messages import inbound_call

ROUTING = """\
auth: {vapi_secrets: [x]}
templates:
  default: {model: {provider: openai, model: gpt-4o}}
users:
  - {id: by_to, name: To, connection_id: c1}
  - {id: by_id, name: Id, connection_id: c2}
  - {id: vip, name: Vip, connection_id: c3}
  - {id: vip_on_line, name: VipLine, connection_id: c4}
  - {id: fallback, name: Default, connection_id: c5}
  - {id: sip, name: Sip, connection_id: c6}
routes:
  - {to: "+1 (650) 555-0100", user: by_to}
  - {phone_number_id: pn-1, user: by_id}
  - {from: "+1 415 555 0123", user: vip}
  - {from: "+1 415 555 0199", to: "+1 650 555 0100", user: vip_on_line}
  - {to: "sip:Dr-Doe@sip.vapi.ai;transport=tls", user: sip}
  - {default: true, user: fallback}
"""


@pytest.fixture(scope="module")
def config() -> Config:
    return parse_config(textwrap.dedent(ROUTING), "routing.yaml", {})


def matched(config: Config, **keys: str) -> tuple[str, str]:
    match = config.routing.match(InboundCall(call_id="c", **keys))
    assert match is not None
    return match.route.user.id, match.rule


def test_called_number_matches_in_any_format(config: Config) -> None:
    assert matched(config, to="+16505550100") == ("by_to", "to")


def test_phone_number_id_beats_called_number(config: Config) -> None:
    assert matched(config, to="+16505550100", phone_number_id="pn-1") == ("by_id", "phone_number_id")


def test_vip_caller_beats_line_rules(config: Config) -> None:
    assert matched(config, to="+16505550100", phone_number_id="pn-1", caller="+14155550123") == ("vip", "from")


def test_caller_scoped_to_a_line_beats_everything_on_that_line(config: Config) -> None:
    assert matched(config, to="+16505550100", caller="+14155550199") == ("vip_on_line", "from+to")
    # On another line the scoped caller is nobody special.
    assert matched(config, to="+19995550100", caller="+14155550199") == ("fallback", "default")


def test_unknown_number_falls_to_default(config: Config) -> None:
    assert matched(config, to="+447700900123") == ("fallback", "default")


def test_sip_line_matches_without_parameters_and_case(config: Config) -> None:
    assert matched(config, to=route_key("sip:dr-doe@SIP.VAPI.AI") or "") == ("sip", "to")


def test_no_default_means_no_match() -> None:
    text = ROUTING.replace("  - {default: true, user: fallback}\n", "")
    config = parse_config(textwrap.dedent(text), "routing.yaml", {})
    assert config.routing.match(InboundCall(call_id="c", to="+447700900123")) is None


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            {
                "phoneNumber": {"number": "+16505550100", "id": "pn"},
                "customer": {"number": "+14155550123"},
                "call": {"id": "call-1"},
            },
            InboundCall("call-1", "+16505550100", "pn", "+14155550123"),
        ),
        (
            {"call": {"id": "call-2", "phoneNumberId": "pn", "customer": {"number": "415 555 0123"}}},
            InboundCall("call-2", None, "pn", "+14155550123"),
        ),
        ({"call": {"id": 5, "customer": None}, "phoneNumber": "nope", "customer": ["x"]}, InboundCall("-")),
        ({"customer": {"sipUri": "sip:alice@pbx.example.org"}}, InboundCall("-", caller="sip:alice@pbx.example.org")),
        ({"phoneNumber": {"number": "x" * 10_000}}, InboundCall("-")),
    ],
)
def test_inbound_call_reads_every_shape_without_crashing(message: dict[str, object], expected: InboundCall) -> None:
    assert inbound_call(message) == expected
