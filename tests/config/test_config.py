from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.config import Config, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {"VAPI_SERVER_SECRET": "s3cret-value-123"}

MINIMAL = """\
version: 1
auth:
  vapi_secrets: ["${VAPI_SERVER_SECRET}"]
templates:
  default:
    model: {provider: openai, model: gpt-4o}
users:
  - id: u1
    name: One
    timezone: America/New_York
    connection_id: conn-1
routes:
  - to: "+1 415 555 0100"
    user: u1
"""


def load(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), "routing.yaml", ENV if env is None else env)


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, env)
    return [str(issue) for issue in info.value.issues]


def test_example_config_loads_with_its_three_users() -> None:
    config = load_config(ROOT / "config.example.yaml", environ=ENV)
    assert set(config.users) == {"usr_doe", "usr_lee", "usr_patel"}
    assert config.routing.by_to["+14155550101"].user.id == "usr_lee"
    assert config.fallbacks.error.number == "+14155550199"


def test_minimal_config_normalises_the_called_number() -> None:
    config = load(MINIMAL)
    assert list(config.routing.by_to) == ["+14155550100"]


def test_unknown_key_is_refused_with_line_and_path() -> None:
    text = MINIMAL.replace("    timezone: America/New_York\n", "    timezone: America/New_York\n    colour: red\n")
    assert errors_of(text) == ["routing.yaml:11: users[0].colour: unknown key"]


def test_bad_timezone_is_refused_with_line() -> None:
    errors = errors_of(MINIMAL.replace("America/New_York", "Mars/Olympus"))
    assert errors == [
        "routing.yaml:10: users[0].timezone: unknown IANA timezone 'Mars/Olympus' (e.g. America/New_York)"
    ]


def test_route_naming_an_unknown_user_is_refused() -> None:
    errors = errors_of(MINIMAL.replace("    user: u1", "    user: ghost"))
    assert errors == ["routing.yaml:14: routes[0].user: names no user: 'ghost'"]


def test_same_number_written_two_ways_is_a_duplicate() -> None:
    text = MINIMAL + '  - to: "(415) 555-0100"\n    user: u1\n'
    errors = errors_of(text)
    assert errors == ["routing.yaml:15: routes[1].to: to +14155550100 is already routed by routes[0].to"]


def test_duplicate_yaml_key_is_refused() -> None:
    errors = errors_of(MINIMAL.replace("    name: One\n", "    name: One\n    name: Two\n"))
    assert errors == ["routing.yaml:10: users[0].name: duplicate key"]


def test_unset_environment_variable_is_refused_and_default_is_used() -> None:
    assert errors_of(MINIMAL, env={}) == [
        "routing.yaml:3: auth.vapi_secrets[0]: environment variable VAPI_SERVER_SECRET is not set"
    ]
    config = load(MINIMAL.replace("${VAPI_SERVER_SECRET}", "${VAPI_SERVER_SECRET:-}"), env={})
    assert not config.auth.configured


def test_every_issue_is_reported_at_once() -> None:
    text = MINIMAL.replace("America/New_York", "Nowhere/Zone").replace("    user: u1", "    user: ghost")
    assert len(errors_of(text)) == 2


def test_invalid_yaml_reports_its_line() -> None:
    errors = errors_of(MINIMAL + "  - to: [unclosed\n")
    assert errors[0].startswith("routing.yaml:1") and "invalid YAML" in errors[0]


def test_wrong_type_names_what_was_expected() -> None:
    errors = errors_of(MINIMAL + "server:\n  deadline_seconds: soon\n")
    assert errors == ["routing.yaml:16: server.deadline_seconds: must be a number, got a string"]


def test_deadline_must_stay_under_vapis_limit() -> None:
    errors = errors_of(MINIMAL + "server:\n  deadline_seconds: 9\n")
    assert errors == ["routing.yaml:16: server.deadline_seconds: must be between 0.1 and 7, got 9"]


def test_unparseable_number_is_refused() -> None:
    errors = errors_of(MINIMAL.replace('"+1 415 555 0100"', '"call me maybe"'))
    assert errors == ["routing.yaml:13: routes[0].to: is not a phone number or SIP URI: 'call me maybe'"]


def test_secrets_never_appear_in_repr_or_errors() -> None:
    config = load(MINIMAL)
    assert "s3cret-value-123" not in repr(config)
    assert "s3cret-value-123" not in repr(config.auth)
    errors = errors_of(MINIMAL + "nango:\n  secret_key: s3cret-value-123\n  colour: x\n")
    assert all("s3cret-value-123" not in error for error in errors)


def test_fallback_rules_are_checked() -> None:
    text = MINIMAL + "fallbacks:\n  error:\n    action: transfer\n  unknown_number:\n    action: reject\n"
    assert errors_of(text) == [
        "routing.yaml:16: fallbacks.error.number: is required for action transfer",
        "routing.yaml:18: fallbacks.unknown_number.message: is required for action reject: "
        "Vapi speaks it before hanging up",
    ]


def test_legacy_vapi_keys_are_warnings() -> None:
    config = load(MINIMAL.replace("    model:", "    serverUrl: https://x\n    model:"))
    assert [str(w) for w in config.warnings] == [
        "routing.yaml:6: templates.default.serverUrl: legacy key Vapi rejects; use server.url"
    ]


# Proxy mode's tools reach Google Calendar through Nango: every proxy-mode config needs the key.
WITH_NANGO = MINIMAL + "nango:\n  secret_key: nango-key-1\n"


def test_proxy_mode_needs_a_url_for_the_tools() -> None:
    errors = errors_of(WITH_NANGO + "calendar:\n  mode: proxy\n")
    assert len(errors) == 1 and "server.public_url" in errors[0]
    config = load(WITH_NANGO + "calendar:\n  mode: proxy\nserver:\n  public_url: https://proxy.example.com/\n")
    assert config.routes[0].calendar.tool_server == {"url": "https://proxy.example.com/vapi"}


def test_the_tool_server_url_defaults_to_the_public_url_when_only_a_credential_is_set() -> None:
    public = "server:\n  public_url: https://proxy.example.com\n"
    config = load(WITH_NANGO + public + "calendar:\n  mode: proxy\n  tool_server: {credentialId: cred-1}\n")
    assert config.routes[0].calendar.tool_server == {"url": "https://proxy.example.com/vapi", "credentialId": "cred-1"}
    assert config.warnings == ()
    written = load(
        WITH_NANGO + public + "calendar:\n  mode: proxy\n  tool_server: {url: https://tools.example.com/t}\n"
    )
    assert written.routes[0].calendar.tool_server == {"url": "https://tools.example.com/t"}
    assert errors_of(WITH_NANGO + "calendar:\n  mode: proxy\n  tool_server: {credentialId: cred-1}\n") == [
        "routing.yaml:19: calendar.tool_server.url: is required unless server.public_url is set: the URL Vapi "
        "sends tool-calls to"
    ]
    assert errors_of(WITH_NANGO + public + "calendar:\n  mode: proxy\n  tool_server: {url: ftp://x}\n") == [
        "routing.yaml:21: calendar.tool_server.url: must be an http(s) URL, got 'ftp://x'"
    ]


def test_proxy_mode_without_a_nango_key_is_refused_even_with_fixed_connection_ids() -> None:
    text = MINIMAL + "server:\n  public_url: https://proxy.example.com\ncalendar:\n  mode: proxy\n"
    assert errors_of(text) == [
        "routing.yaml:1: nango.secret_key: is empty, but routes[0] uses calendar mode proxy, whose tools reach "
        "Google Calendar through Nango (a fixed connection_id too): set it (NANGO_SECRET_KEY), or use calendar "
        "mode native"
    ]
    keyed = text + "nango:\n  secret_key: ${NANGO_SECRET_KEY}\n"
    # `check` and `resolve` (secrets optional): the unset variable's warning, and why it matters here.
    config = parse_config(keyed, "routing.yaml", ENV, secrets_optional=True)
    assert [w.message for w in config.warnings if w.path == ("nango", "secret_key")] == [
        "environment variable NANGO_SECRET_KEY is not set (serve needs it)",
        "is empty, but routes[0] uses calendar mode proxy, whose tools reach Google Calendar through Nango "
        "(a fixed connection_id too): set it (NANGO_SECRET_KEY), or use calendar mode native",
    ]
    with pytest.raises(ConfigError) as served:  # serve: the unset variable is the error
        parse_config(keyed, "routing.yaml", ENV)
    assert [issue.message for issue in served.value.issues] == ["environment variable NANGO_SECRET_KEY is not set"]


def test_users_without_overrides_share_one_calendar_plan() -> None:
    text = MINIMAL + "".join(f"  - to: '+1 415 555 01{n:02d}'\n    user: u1\n" for n in range(1, 5))
    config = load(text)
    assert len({id(route.calendar) for route in config.routes}) == 1


def test_caller_rule_scoped_to_a_line_and_a_second_default() -> None:
    text = MINIMAL + "  - default: true\n    user: u1\n  - default: true\n    user: u1\n"
    assert errors_of(text) == ["routing.yaml:17: routes[2].default: a second default route (routes[1] is one)"]


def test_the_kubernetes_routing_file_has_the_examples_settings_and_none_of_its_demo_users() -> None:
    import yaml

    env = {**ENV, "NANGO_SECRET_KEY": "nango-key-1"}
    example = load_config(ROOT / "config.example.yaml", environ=env)
    deployed = load_config(ROOT / "deploy/kubernetes/config.yaml", environ=env)
    assert (deployed.users, deployed.routes) == ({}, ())
    assert deployed.templates == example.templates and deployed.fallbacks == example.fallbacks
    assert deployed.nango.tag_routing == example.nango.tag_routing and deployed.auth == example.auth
    with pytest.raises(ConfigError, match="NANGO_SECRET_KEY is not set"):  # production: the key is required
        load_config(ROOT / "deploy/kubernetes/config.yaml", environ=ENV)
    # kubectl apply -k makes the mounted ConfigMap from this very file, under a name that never changes.
    kustomization = yaml.safe_load((ROOT / "deploy/kubernetes/kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["config.yaml"] and generator["options"]["disableNameSuffixHash"] is True
    deployment = yaml.safe_load((ROOT / "deploy/kubernetes/deployment.yaml").read_text())
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == generator["name"]


MIXED = """\
auth: {vapi_secrets: [x]}
timezone: Europe/London
templates:
  default: {model: {provider: openai, model: gpt-4o}}
  other: {model: {provider: openai, model: gpt-4o-mini}}
users:
  - {id: flat, name: Flat, timezone: America/New_York, connection_id: c1, email: f@example.com}
  - {id: no_zone, name: No Zone, nango_user_id: nz-tag, template: other}
  - {id: merged, name: Merged, assistant: {voice: {provider: vapi, voiceId: Hana}}, variables: {x: "1"}}
  - {id: own_fallback, name: Own, fallbacks: {no_calendar: {action: reject, message: Bye}}}
  - {id: numeric, name: 42}
routes:
  - {to: "+1 415 555 0100", user: flat}
  - {to: ["+1 415 555 0101", "+1 415 555 0102"], user: no_zone}
  - {phone_number_id: " pn-1 ", user: merged, name: merged-line}
  - {from: "+1 415 555 0123", to: "+1 415 555 0100", user: own_fallback}
  - {from: "415-555-0124", user: numeric}
  - {to: "sip:desk@pbx.example.org", user: flat}
  - {default: true, user: flat}
  - {to: "+1 415 555 0109", user: merged, calendar: {buffer_minutes: 10}}
"""


def test_mixed_entries_build_the_snapshot_an_admin_expects() -> None:
    config = parse_config(MIXED, "routing.yaml", {})
    assert config.users["numeric"].name == "42"  # an unquoted number is read as the text written
    assert config.users["no_zone"].timezone.key == "Europe/London"
    assert config.users["no_zone"].nango_user_id == "nz-tag"
    assert config.users["flat"].nango_user_id == "flat"
    assert config.routing.by_phone_number_id["pn-1"].name == "merged-line"
    assert config.routing.by_phone_number_id["pn-1"].variables == {"x": "1"}
    assert config.routing.by_caller_on_line[("+14155550123", "+14155550100")].fallbacks.no_calendar.action == "reject"
    assert config.routing.by_to["+14155550101"].template == "other"
    assert config.routing.by_to["sip:desk@pbx.example.org"].user.id == "flat"
    assert config.routing.by_to["+14155550109"].calendar.settings.buffer_minutes == 10
    assert config.routing.default is not None and config.routing.default.user.id == "flat"


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        (
            MIXED.replace("timezone: America/New_York", "timezone: Mars/Base"),
            ["routing.yaml:7: users[0].timezone: unknown IANA timezone 'Mars/Base' (e.g. America/New_York)"],
        ),
        (
            MIXED.replace("{id: numeric, name: 42}", "{id: flat, name: Again}"),
            [
                "routing.yaml:11: users[4].id: duplicate user id 'flat'",
                "routing.yaml:17: routes[4].user: names no user: 'numeric'",
            ],
        ),
        (
            MIXED.replace('{to: "+1 415 555 0100", user: flat}', '{to: "not a number", user: flat}'),
            ["routing.yaml:13: routes[0].to: is not a phone number or SIP URI: 'not a number'"],
        ),
        (
            MIXED.replace("{default: true, user: flat}", "{to: '+1 415 555 0199', user: ghost}"),
            ["routing.yaml:19: routes[6].user: names no user: 'ghost'"],
        ),
        (
            MIXED.replace('{to: "sip:desk@pbx.example.org", user: flat}', '{to: "+1 415 555 0100", user: numeric}'),
            ["routing.yaml:18: routes[5].to: to +14155550100 is already routed by routes[0].to"],
        ),
        (
            MIXED.replace("{id: no_zone, name: No Zone,", "{id: no_zone, name: No Zone, template: nope,"),
            [
                "routing.yaml:8: users[1].template: duplicate key",
                "routing.yaml:8: users[1].template: names no template: 'nope'",
            ],
        ),
    ],
)
def test_errors_in_entries_are_located(broken: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(broken, "routing.yaml", {})
    assert [str(issue) for issue in info.value.issues] == expected


def test_proxy_mode_warns_when_vapi_could_not_authenticate_tool_calls() -> None:
    base = WITH_NANGO + "server:\n  public_url: https://proxy.example.com\n"
    warned = load(base + "calendar:\n  mode: proxy\n")
    assert [str(w) for w in warned.warnings] == [
        "routing.yaml:19: calendar.tool_server: has no credentialId or headers: Vapi's tool calls will carry no "
        "authentication and be refused (401); set credentialId to your Vapi custom credential"
    ]
    quiet = load(
        base + "calendar:\n  mode: proxy\n  tool_server: {url: https://p.example.com/vapi, credentialId: c-1}\n"
    )
    assert quiet.warnings == ()


def test_the_version_a_reload_checks_first_is_the_version_the_files_load_as(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxy.config.files import current_version

    monkeypatch.setenv("VAPI_SERVER_SECRET", "s")
    main = tmp_path / "routing.yaml"
    example = (Path(__file__).resolve().parents[2] / "config.example.yaml").read_text()
    users = "users:\r\n  - {id: usr_more, name: More \u00e9}\r\n"
    main.write_bytes((example.replace("\n", "\r\n") + "include: [more.yaml]\r\n").encode())  # CRLF, as on Windows
    (tmp_path / "more.yaml").write_bytes(users.encode())
    config = load_config(main)
    assert "usr_more" in config.users
    assert current_version(config) == config.version
    (tmp_path / "more.yaml").write_bytes(users.replace("More", "Less").encode())
    assert current_version(config) not in (None, config.version)
    assert current_version(config) == load_config(main).version


def test_the_version_is_the_hash_of_the_files_text_however_large() -> None:
    import hashlib

    from proxy.config import config_version

    big, included = "x: \u00e9\n" * 600_000, "users: []\n"  # over a chunk of the hash, with multi-byte text
    whole = hashlib.sha256(big.encode() + b"\0" + included.encode()).hexdigest()[:12]
    assert config_version(big, included) == whole
