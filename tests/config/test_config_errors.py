"""What an admin sees for a broken file: every error at once, located, in plain words, never a secret."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.config import ConfigError, parse_config
from proxy.config import load as config_load

SECRET = "sk-live-0123456789abcdef"
ENV = {"VAPI_SERVER_SECRET": "vapi-secret-value", "NANGO_SECRET_KEY": SECRET}

BROKEN = """\
version: 1
auth:
  vapi_secrets: ["${VAPI_SERVER_SECRET}"]
  bearer: {tokens: [t0k3n-value], header: ""}
  hmac: {secrets: [k3y-value], algorithm: sha257}
calendar: {mode: nativ, calendar_id: ""}
templates:
  default:
    model: {provider: openai, model: gpt-4o}
fallbacks:
  error: {action: transfer, number: "${NANGO_SECRET_KEY}"}
users:
  - id: usr_doe
    name: Jane Doe
    emial: jane@example.com
    calendar: {mode: Native}
  - {id: usr_lee, name: Sam Lee, timezone: America/NewYork}
routes:
  - to: "+1 415 555 0100"
    user: usr_dow
  - to: "+1 415 555 0101"
    user: ${UNSET_USER}
  - to: "+1 415 555 0102"
    user: usr_lee
"""

EXPECTED = [
    "routing.yaml:4: auth.bearer.header: must not be empty",
    "routing.yaml:5: auth.hmac.algorithm: must be one of sha256, sha512, sha1, got 'sha257' (did you mean sha256?)",
    "routing.yaml:6: calendar.mode: must be one of native, proxy, got 'nativ' (did you mean native?)",
    "routing.yaml:6: calendar.calendar_id: must not be empty",
    "routing.yaml:11: fallbacks.error.number: is not a phone number: ${NANGO_SECRET_KEY}",
    "routing.yaml:15: users[0].emial: unknown key (did you mean email?)",
    "routing.yaml:16: users[0].calendar.mode: must be one of native, proxy, got 'Native' (did you mean native?)",
    "routing.yaml:17: users[1].timezone: unknown IANA timezone 'America/NewYork' (did you mean America/New_York?) "
    "(e.g. America/New_York)",
    "routing.yaml:20: routes[0].user: names no user: 'usr_dow'",
    "routing.yaml:22: routes[1].user: environment variable UNSET_USER is not set",
]


def errors(text: str, env: dict[str, str] = ENV) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "routing.yaml", env)
    return [str(issue) for issue in info.value.issues]


def test_every_error_at_once_located_with_suggestions_and_no_secret() -> None:
    # Enum typos, empty values, unknown keys: each once, none a ValueError; an unset variable hides nothing.
    found = errors(BROKEN)
    assert found == EXPECTED
    assert not any(value in line for line in found for value in (SECRET, "t0k3n-value", "k3y-value"))


def test_a_route_naming_a_misspelt_user_gets_a_suggestion() -> None:
    text = (
        BROKEN.split("fallbacks:")[0]
        + "users:\n  - {id: usr_doe, name: Jane}\nroutes:\n  - {to: '+14155550100', user: usr_dow}\n"
    )
    text = text.replace('mode: nativ, calendar_id: ""', "mode: native").replace('header: ""', "header: x")
    text = text.replace("algorithm: sha257", "algorithm: sha256")
    assert errors(text) == ["routing.yaml:13: routes[0].user: names no user: 'usr_dow' (did you mean usr_doe?)"]


def test_tab_indentation_is_explained_in_plain_words() -> None:
    assert errors("version: 1\nauth:\n\tvapi_secrets: [x]\n") == [
        "routing.yaml:3: (top level): invalid YAML: this line is indented with a tab character; YAML allows only "
        "spaces for indentation (replace the tab with spaces, and set your editor to insert spaces)"
    ]


def test_an_unquoted_reference_in_a_flow_list_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "auth:\n  bearer:\n    tokens: [${MY_BEARER_TOKEN}]\ntemplates: {default: {model: {provider: openai}}}\n"
    expected = (
        "routing.yaml:3: (top level): invalid YAML: expected ',' or ']', but got '{': inside [ ] or { } a { starts "
        'a mapping; quote it: "${MY_BEARER_TOKEN}"'
    )
    assert errors(text) == [expected]
    config = tmp_path / "routing.yaml"  # check reads it with the fast reader first: the same words
    config.write_text(text)
    assert main(["check", "--config", str(config)]) == 1
    assert expected.removeprefix("routing.yaml") in capsys.readouterr().err
    fixed = text.replace("[${MY_BEARER_TOKEN}]", '["${MY_BEARER_TOKEN}"]')
    quoted = parse_config(fixed, "routing.yaml", {"MY_BEARER_TOKEN": "t0k3n"})
    assert quoted.auth.bearer is not None and len(quoted.auth.bearer.tokens) == 1


MINIMAL = """\
auth: {vapi_secrets: ["${VAPI_SECRET:-${LEGACY_SECRET}}"]}
templates: {default: {model: {provider: openai, model: gpt-4o}}}
"""


def test_nested_defaults_work() -> None:
    assert str(parse_config(MINIMAL, "r.yaml", {"LEGACY_SECRET": "old"}).auth.shared_secrets[0]) == "old"
    assert (
        str(parse_config(MINIMAL, "r.yaml", {"VAPI_SECRET": "new", "LEGACY_SECRET": "old"}).auth.shared_secrets[0])
        == "new"
    )
    assert errors(MINIMAL, {}) == [
        "routing.yaml:1: auth.vapi_secrets[0]: environment variable LEGACY_SECRET is not set"
    ]


def test_a_malformed_reference_is_refused_with_its_line() -> None:
    text = MINIMAL.replace("${LEGACY_SECRET}}", "${LEGACY_SECRET}")
    assert errors(text, {"VAPI_SECRET": "x"}) == ["routing.yaml:1: auth.vapi_secrets[0]: a ${ is never closed with }"]


def test_any_failure_while_loading_is_an_invalid_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(config_load, "tag_routing", broken)
    assert errors(MINIMAL, {"VAPI_SECRET": "x"}) == [
        "routing.yaml: (top level): could not be loaded (KeyError); please report this as a bug"
    ]


def test_check_prints_located_errors_and_no_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(BROKEN)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ENV.items():
            patch.setenv(name, value)
        assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and SECRET not in err
    assert err.splitlines() == [f"error: {line.replace('routing.yaml', str(path), 1)}" for line in EXPECTED] + [
        f"{path}: {len(EXPECTED)} error(s); not loaded"
    ]


def test_a_value_yaml_cannot_build_is_an_error_at_its_line() -> None:
    # PyYAML reads `2001-13-45` as a date it cannot build: that raised ValueError ("please report this as a bug").
    text = MINIMAL + "users:\n  - {id: u1, name: One, email: 2001-13-45}\n  - {id: !!int x, name: Two}\n"
    assert errors(text, {"VAPI_SECRET": "x"}) == [
        "routing.yaml:4: users[0].email: is not a valid timestamp: '2001-13-45' (quote it if it is text)",
        "routing.yaml:5: users[1].id: is not a valid int: 'x' (quote it if it is text)",
    ]


@pytest.mark.parametrize("fast", [False, True], ids=["walker", "rapidyaml"])
def test_a_lone_surrogate_escape_is_refused_with_its_line(fast: bool) -> None:
    """YAML reads `\\ud83d\\ude00` as two lone surrogates, not an emoji: no JSON encoder takes them, so every
    answer naming this user would have failed; the file is refused, the emoji written as itself is fine."""
    text = textwrap.dedent(
        """\
        auth: {vapi_secrets: [x]}
        templates: {default: {model: {provider: openai, model: gpt-4o}}}
        users:
          - {id: ann, name: "Ann \\ud83d\\ude00"}
          - {id: bo, name: "Bo \U0001f600 \\U0001F600"}
        routes:
          - {to: "+14155550100", user: ann}
        """
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routing.yaml", ENV, fast=fast)
    assert [str(issue) for issue in info.value.issues] == [
        "routing.yaml:4: users[0].name: holds a lone UTF-16 surrogate (an escape such as \\ud83d): write the "
        "character itself or \\U0001F600"
    ]
    fixed = parse_config(text.replace("\\ud83d\\ude00", "\\U0001F600"), "routing.yaml", ENV, fast=fast)
    assert fixed.users["ann"].name == "Ann \U0001f600"
