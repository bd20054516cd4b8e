"""The admin commands against a fake Nango that follows Nango's rules: connect-link, assign, numbers, resolve."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx

from proxy.cli import main
from tests.contract import assert_assistant_request_response
from tests.nango_fakes import AUTH_ERROR, BASE_URL, SECRET_KEY, FakeNango

CONFIG = f"""\
auth: {{vapi_secrets: [x]}}
nango:
  base_url: {BASE_URL}
  secret_key: {SECRET_KEY}
  tag_routing: {{number_tag: vapi_number, phone_number_id_tag: vapi_phone_number_id, name_tag: end_user_display_name}}
templates:
  default: {{firstMessage: "This is {{{{user_name}}}}'s line.", model: {{provider: openai, model: gpt-4o}}}}
users:
  - {{id: u_yaml, name: Yaml User}}
routes:
  - {{to: "+1 415 555 0100", user: u_yaml}}
"""


@pytest.fixture
def fake() -> Iterator[FakeNango]:
    nango = FakeNango()
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.route(host="nango.test").mock(side_effect=nango.answer)
        yield nango


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "routing.yaml"
    path.write_text(CONFIG)
    return str(path)


def test_a_newcomer_onboards_a_user_with_a_number_and_resolves_a_call_without_yaml(
    fake: FakeNango, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["connect-link", "--config", config, "--user", "usr_ann", "--number", "(415) 555-0177", "--name", "Ann"]
    assert main(args) == 0
    link = capsys.readouterr().out.strip()
    token = link.rsplit("=", 1)[1]
    assert fake.sessions[token] == {
        "end_user_id": "usr_ann",
        "end_user_display_name": "Ann",
        "vapi_number": "+14155550177",
    }
    fake.complete_session(token, "conn-ann")  # the user connects Google through the link
    assert main(["resolve", "--config", config, "--to", "+1 415 555 0177"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["route_source"] == "nango connection conn-ann, tag vapi_number=+14155550177 (nango)"
    assert (report["user"], report["connection_source"], report["outcome"]) == ("usr_ann", "nango", "assistant")
    assert_assistant_request_response(report["response"])
    assert report["response"]["assistant"]["credentials"][0]["authorizationId"] == "conn-ann"
    assert report["response"]["assistant"]["firstMessage"] == "This is Ann's line."


def test_resolve_shows_the_yaml_file_and_line_of_a_yaml_route(
    fake: FakeNango, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.add("conn-yaml", {"end_user_id": "u_yaml"})
    assert main(["resolve", "--config", config, "--to", "+14155550100"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["route_source"] == f"{config}:11 (routes[0].to)"


def test_resolve_and_check_name_the_included_file_and_line_of_a_route_written_there(
    fake: FakeNango, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main_file = Path(config)
    main_file.write_text(CONFIG + "include: [routes/*.yaml]\n")
    included = main_file.parent / "routes" / "more.yaml"
    included.parent.mkdir()
    included.write_text(
        "# more lines\n"
        "routes:\n"
        '  - {to: "+1 415 555 0101", user: u_yaml}\n'
        '  - to: "+1 415 555 0102"\n'
        "    user: u_yaml\n"
    )
    fake.add("conn-yaml", {"end_user_id": "u_yaml"})
    fake.add("conn-c", {"end_user_id": "usr_c", "vapi_number": "+14155550102"})
    assert main(["resolve", "--config", config, "--to", "+14155550102"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["route_source"] == f"{included}:4 (routes[1].to)"
    assert (report["user"], report["outcome"]) == ("u_yaml", "assistant")
    assert main(["resolve", "--config", config, "--to", "+14155550100"]) == 0
    assert json.loads(capsys.readouterr().out)["route_source"] == f"{config}:11 (routes[0].to)"
    assert main(["check", "--config", config, "--nango"]) == 0
    assert f"shadowed: to +14155550102: {included}:4 (routes[1].to) wins over nango connection conn-c" in (
        capsys.readouterr().out
    )
    assert main(["numbers", "--config", config]) == 0
    assert (
        f"to\t+14155550102\tconn-c\tusr_c\tshadowed by YAML routes[1] ({included})\tgoogle" in capsys.readouterr().out
    )


def test_connect_link_without_a_yaml_user_needs_a_number(
    fake: FakeNango, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["connect-link", "--config", config, "--user", "usr_new"]) == 1
    assert "give --number" in capsys.readouterr().err
    assert main(["connect-link", "--config", config, "--user", "usr_new", "--number", "call me"]) == 1
    assert "not a phone number" in capsys.readouterr().err
    assert fake.sessions == {}


def test_assign_moves_a_number_and_keeps_every_other_tag(
    fake: FakeNango, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.add("conn-old", {"end_user_id": "usr_old", "vapi_number": "+14155550177", "crm_id": "c-1"})
    fake.add("conn-new", {"end_user_id": "usr_new", "end_user_email": "new@example.com"})
    assert main(["assign", "--config", config, "--connection", "conn-new", "--number", "+14155550177"]) == 0
    err = capsys.readouterr().err
    assert "removed from conn-old" in err
    assert fake.find("conn-new")["tags"] == {  # type: ignore[index]
        "end_user_id": "usr_new",
        "end_user_email": "new@example.com",
        "vapi_number": "+14155550177",
    }
    assert fake.find("conn-old")["tags"] == {"end_user_id": "usr_old", "crm_id": "c-1"}  # type: ignore[index]
    patches = [r for r in fake.requests if r.method == "PATCH"]
    assert [r.url.params["provider_config_key"] for r in patches] == ["google-calendar"] * 2


def test_assign_writes_an_outlook_connections_tags_in_its_own_integration(
    fake: FakeNango, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two = CONFIG.replace(
        "  tag_routing:",
        "  integrations: [{id: google-calendar, provider: google}, {id: outlook-calendar, provider: microsoft}]\n"
        "  tag_routing:",
    ).replace("templates:", "calendar: {tool_server: {url: https://proxy.example.com/vapi}}\ntemplates:")
    path = tmp_path / "two.yaml"
    path.write_text(two)
    fake.add("conn-g", {"end_user_id": "usr_g", "vapi_number": "+14155550177"})
    fake.add("conn-o", {"end_user_id": "usr_o"}, integration="outlook-calendar", provider="microsoft")
    assert main(["assign", "--config", str(path), "--connection", "conn-o", "--number", "+14155550177"]) == 0
    assert "removed from conn-g" in capsys.readouterr().err
    assert fake.find("conn-o")["tags"] == {"end_user_id": "usr_o", "vapi_number": "+14155550177"}  # type: ignore[index]
    assert fake.find("conn-g")["tags"] == {"end_user_id": "usr_g"}  # type: ignore[index]
    patches = [(r.url.path, r.url.params["provider_config_key"]) for r in fake.requests if r.method == "PATCH"]
    assert patches == [("/connections/conn-o", "outlook-calendar"), ("/connections/conn-g", "google-calendar")]


def test_assign_refuses_to_go_over_nangos_ten_tags(
    fake: FakeNango, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.add("conn-full", {"end_user_id": "usr_full", **{f"t{i}": "x" for i in range(9)}})
    assert main(["assign", "--config", config, "--connection", "conn-full", "--number", "+14155550177"]) == 1
    assert "would carry 11 tags; Nango allows 10" in capsys.readouterr().err
    assert not [r for r in fake.requests if r.method == "PATCH"]


def test_numbers_lists_owners_shadowed_lines_and_conflicts(
    fake: FakeNango, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.add("conn-a", {"end_user_id": "usr_a", "vapi_number": "+14155550177"})
    fake.add("conn-b", {"end_user_id": "usr_b", "vapi_number": "+14155550177"})
    fake.add("conn-c", {"end_user_id": "usr_c", "vapi_number": "+14155550100"}, errors=AUTH_ERROR)
    fake.add("conn-d", {"end_user_id": "usr_d", "vapi_phone_number_id": "4d2e8f1a-3b7c-4e9d-a1f0-5c6b7d8e9f01"})
    assert main(["numbers", "--config", config]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "phone_number_id\t4d2e8f1a-3b7c-4e9d-a1f0-5c6b7d8e9f01\tconn-d\tusr_d\tok\tgoogle",
        f"to\t+14155550100\tconn-c\tusr_c\tshadowed by YAML routes[0] ({config})\tgoogle",
        "to\t+14155550177\tconn-a\tusr_a\tok\tgoogle",  # the first claimant keeps a line
    ]
    assert "conflict: to +14155550177 is claimed by conn-a (routes it) and conn-b" in err
    assert "3 lines routed by tags, 1 conflict(s)" in err
    assert main(["connections", "--config", config]) == 0
    assert "conflict: to +14155550177" in capsys.readouterr().err


def test_check_shows_that_tag_routing_is_on(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", config]) == 0
    assert "tag routing: on (number=vapi_number, phone_number_id=vapi_phone_number_id" in capsys.readouterr().out


def test_check_nango_shows_where_each_route_comes_from(
    fake: FakeNango, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.add("conn-a", {"end_user_id": "usr_a", "vapi_number": "+14155550177"})
    fake.add("conn-c", {"end_user_id": "usr_c", "vapi_number": "+14155550100"})
    assert main(["check", "--config", config, "--nango"]) == 0
    out = capsys.readouterr().out
    assert f"yaml: 1 routes from {config}" in out
    assert (
        f"shadowed: to +14155550100: {config}:11 (routes[0].to) wins over "
        "nango connection conn-c, tag vapi_number=+14155550100"
    ) in out
    assert "tags: 1 line routed by Nango connection tags, 1 shadowed by YAML, 0 conflict(s)" in out
    fake.add("conn-b", {"end_user_id": "usr_b", "vapi_number": "+14155550177"})
    assert main(["check", "--config", config, "--nango"]) == 1  # a conflict fails the check
    assert "conflict: to +14155550177 is claimed by conn-a (routes it) and conn-b" in capsys.readouterr().err


def test_connections_lists_the_users_tags_route_and_counts_them(
    fake: FakeNango, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.add("conn-yaml", {"end_user_id": "u_yaml", "vapi_number": "+14155550101"})
    fake.add("conn-ann", {"end_user_id": "usr_ann", "end_user_display_name": "Ann", "vapi_number": "+14155550177"})
    fake.add("conn-bob", {"end_user_id": "usr_bob", "vapi_number": "+14155550178"}, errors=AUTH_ERROR)
    fake.add("conn-none", {"end_user_id": "usr_none"})  # claims no line: nothing routes to it
    assert main(["connections", "--config", config]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "u_yaml\tYaml User\tconnected\tconn-yaml\tgoogle",
        "usr_ann\tAnn\tconnected\tconn-ann (tags: +14155550177)\tgoogle",
        "usr_bob\tusr_bob\terror\tconn-bob needs reconnecting (tags: +14155550178)\tgoogle",
    ]
    assert "2/3 users can book (2 routed by connection tags)" in err
