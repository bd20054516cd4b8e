from __future__ import annotations

from datetime import UTC, datetime

import orjson

from proxy.vapi.assistant import calendar_assistant, deep_merge, fallback_answer
from tests.contract import assert_assistant_request_response
from tests.helpers import config_from

NOW = datetime(2026, 3, 8, 6, 30, tzinfo=UTC)  # 01:30 in New York, the night clocks spring forward

CONFIG = """\
auth: {vapi_secrets: [x]}
variables: {business_name: 'Acme "Dental" \\ Co'}
templates:
  default:
    firstMessage: "Hi, {{user_name}} at {{business_name}}. {{ customer.number }} {{\\"now\\" | date: \\"%A\\"}}"
    model:
      provider: openai
      model: gpt-4o
      messages: [{role: system, content: "Zone {{timezone}}, today {{today}}, unknown {{nope}}."}]
users:
  - {id: u1, name: "Zoë \\"{{timezone}}\\"\\nO'Neil", timezone: America/New_York, connection_id: c-1}
  - id: u2
    name: Two
    connection_id: c-2
    assistant: {firstMessage: "Two speaking", voice: {provider: vapi, voiceId: Hana}}
routes:
  - {to: "+1 415 555 0100", user: u1}
  - {to: "+1 415 555 0101", user: u1, name: second-line}
  - {to: "+1 415 555 0102", user: u2}
"""


def answer_for(index: int) -> dict[str, object]:
    config = config_from(CONFIG)
    data: dict[str, object] = orjson.loads(calendar_assistant(config, config.routes[index], 'conn-"x"', NOW))
    return data


def test_variables_are_filled_escaped_and_not_expanded_twice() -> None:
    answer = answer_for(0)
    assert_assistant_request_response(answer)
    assistant = answer["assistant"]
    assert isinstance(assistant, dict)
    # The user's name holds quotes, a newline and a {{...}} of its own: it arrives verbatim.
    name = 'Zoë "{{timezone}}"\nO\'Neil'
    assert assistant["firstMessage"] == (
        f'Hi, {name} at Acme "Dental" \\ Co. {{{{ customer.number }}}} {{{{"now" | date: "%A"}}}}'
    )
    system = assistant["model"]["messages"][0]["content"]  # type: ignore[index]
    assert system.startswith("Zone America/New_York, today Sunday, March 8, 2026, unknown {{nope}}.")
    assert assistant["credentials"][0]["authorizationId"] == 'conn-"x"'  # type: ignore[index]
    assert answer["assistantOverrides"] == {
        "variableValues": {
            "business_name": 'Acme "Dental" \\ Co',
            "user_id": "u1",
            "user_name": name,
            "timezone": "America/New_York",
            "today": "Sunday, March 8, 2026",
            "now": "2026-03-08T01:30-05:00",
            "utc_offset": "-05:00",
            "example_datetime": "2026-03-08T15:00:00-04:00",
        }
    }


def test_routes_of_one_user_share_the_prepared_assistant_but_keep_their_names() -> None:
    config = config_from(CONFIG)
    first = orjson.loads(calendar_assistant(config, config.routes[0], "c", NOW))
    second = orjson.loads(calendar_assistant(config, config.routes[1], "c", NOW))
    assert first["assistant"]["metadata"]["route"] == "routes[0]"
    assert second["assistant"]["metadata"]["route"] == "second-line"
    assert len(config.prepared) == 1


def test_user_overrides_merge_over_the_template() -> None:
    answer = answer_for(2)
    assistant = answer["assistant"]
    assert isinstance(assistant, dict)
    assert assistant["firstMessage"] == "Two speaking"
    assert assistant["voice"] == {"provider": "vapi", "voiceId": "Hana"}
    assert assistant["model"]["model"] == "gpt-4o"  # type: ignore[index]


def test_take_message_fallback_has_no_calendar_and_is_valid() -> None:
    config = config_from(CONFIG)
    route = config.routes[0]
    answer = orjson.loads(fallback_answer(config, route.fallbacks.no_calendar, route, NOW))
    assert_assistant_request_response(answer)
    assert "credentials" not in answer["assistant"] and "tools" not in answer["assistant"]["model"]
    assert "Take a message" in answer["assistant"]["model"]["messages"][0]["content"]


def test_deep_merge_merges_mappings_and_replaces_lists() -> None:
    base = {"model": {"provider": "openai", "tools": [1, 2]}, "name": "a"}
    merged = deep_merge(base, {"model": {"tools": [3]}, "voice": {"voiceId": "x"}})
    assert merged == {"model": {"provider": "openai", "tools": [3]}, "name": "a", "voice": {"voiceId": "x"}}
    assert base == {"model": {"provider": "openai", "tools": [1, 2]}, "name": "a"}
