from __future__ import annotations

import json
from pathlib import Path

import pytest
import respx

from proxy.cli import main
from tests.contract import assert_assistant_request_response

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "config.example.yaml")


@pytest.fixture(autouse=True)
def vapi_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAPI_SERVER_SECRET", "cli-secret")
    monkeypatch.delenv("NANGO_SECRET_KEY", raising=False)


def test_check_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", EXAMPLE]) == 0
    assert "ok (version" in capsys.readouterr().out


def test_check_lists_every_error_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "routing.yaml"
    text = (ROOT / "config.example.yaml").read_text()
    broken.write_text(
        text.replace("timezone: Europe/London", "timezone: Europe/Lundon").replace(
            "    user: usr_lee\n", "    user: usr_nobody\n"
        )
    )
    assert main(["check", "--config", str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"{broken}:" in err and "users[2].timezone: unknown IANA timezone 'Europe/Lundon'" in err
    assert "routes[1].user: names no user: 'usr_nobody'" in err
    assert "2 error(s)" in err


def test_check_and_resolve_need_no_runtime_secret_but_serve_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VAPI_SERVER_SECRET")
    assert main(["check", "--config", EXAMPLE]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "environment variable VAPI_SERVER_SECRET is not set (serve needs it)" in err
    assert main(["resolve", "--config", EXAMPLE, "--to", "(415) 555-0101"]) == 0
    assert json.loads(capsys.readouterr().out)["user"] == "usr_lee"
    assert main(["serve", "--config", EXAMPLE, "--port", "0"]) == 1
    assert "error: " in (err := capsys.readouterr().err) and "environment variable VAPI_SERVER_SECRET is not set" in err


def test_check_prints_its_warnings_with_its_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VAPI_SERVER_SECRET")
    broken = tmp_path / "routing.yaml"
    text = (ROOT / "config.example.yaml").read_text()
    broken.write_text(text.replace("    user: usr_lee\n", "    user: usr_nobody\n"))
    assert main(["check", "--config", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "error: " in err and "routes[1].user: names no user: 'usr_nobody'" in err
    assert "warning: " in err and "environment variable VAPI_SERVER_SECRET is not set (serve needs it)" in err
    assert "1 error(s), 1 warning(s); not loaded" in err


def test_check_on_a_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", "/nonexistent/routing.yaml"]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_resolve_prints_the_answer_and_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "--config", EXAMPLE, "--to", "(415) 555-0101"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rule"] == "routes[1] (to)" and report["user"] == "usr_lee"
    assert report["calendar_mode"] == "native" and report["connection_source"] == "fixed"
    assert_assistant_request_response(report["response"])
    assert report["response"]["assistant"]["voice"]["voiceId"] == "Hana"


def test_resolve_vip_caller_and_unknown_number(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "--config", EXAMPLE, "--to", "+1 415 555 0101", "--from", "+14155550123"]) == 0
    assert json.loads(capsys.readouterr().out)["rule"] == "vip-caller (from)"
    assert main(["resolve", "--config", EXAMPLE, "--to", "+44 20 7946 0958", "--response-only"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "error": "Sorry, this number isn't set up to take calls yet. Goodbye."
    }


def test_serve_refuses_to_start_without_authentication(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "routing.yaml"
    config.write_text((ROOT / "config.example.yaml").read_text().replace("${VAPI_SERVER_SECRET}", "${UNSET_VAR:-}"))
    assert main(["serve", "--config", str(config), "--port", "0"]) == 1
    assert "refusing to start" in capsys.readouterr().err


def test_nango_commands_need_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["connections", "--config", EXAMPLE]) == 1
    assert "NANGO_SECRET_KEY" in capsys.readouterr().err


NANGO_CONFIG = """\
auth: {vapi_secrets: [x]}
nango: {base_url: "https://nango.test", secret_key: cli-nango-key}
templates:
  default: {model: {provider: openai, model: gpt-4o}}
users:
  - {id: u_connected, name: Connected, email: c@example.com}
  - {id: u_missing, name: Missing}
  - {id: u_broken, name: Broken}
  - {id: u_fixed, name: Fixed, connection_id: conn-fixed}
routes:
  - {to: "+1 415 555 0100", user: u_connected}
"""


def nango_connection(connection_id: str, user_id: str, errors: list[object] | None = None) -> dict[str, object]:
    return {
        "id": 1,
        "connection_id": connection_id,
        "provider_config_key": "google-calendar",
        "provider": "google-calendar",
        "created": "2026-10-02T09:12:44.120Z",
        "metadata": None,
        "errors": errors or [],
        "tags": {"end_user_id": user_id},
    }


@respx.mock(base_url="https://nango.test")
def test_connections_lists_who_can_book(
    respx_mock: respx.MockRouter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    respx_mock.get("/connections").respond(
        200,
        json={
            "connections": [
                nango_connection("conn-1", "u_connected"),
                nango_connection("conn-2", "u_broken", errors=[{"type": "auth", "log_id": "x"}]),
            ]
        },
    )
    config = tmp_path / "routing.yaml"
    config.write_text(NANGO_CONFIG)
    assert main(["connections", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    rows = {line.split("\t")[0]: line.split("\t")[2] for line in out.splitlines()}
    assert rows == {"u_connected": "connected", "u_missing": "missing", "u_broken": "error", "u_fixed": "fixed"}
    assert "2/4 users can book" in err
    assert "cli-nango-key" not in out + err


@respx.mock(base_url="https://nango.test")
def test_connect_link_creates_a_tagged_session(
    respx_mock: respx.MockRouter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    route = respx_mock.post("/connect/sessions").respond(
        201,
        json={
            "data": {
                "token": "session-token",
                "connect_link": "https://connect.nango.dev?session_token=abc",
                "expires_at": "2026-11-26T12:30:00.000Z",
            }
        },
    )
    config = tmp_path / "routing.yaml"
    config.write_text(NANGO_CONFIG)
    assert main(["connect-link", "--config", str(config), "--user", "u_connected"]) == 0
    assert capsys.readouterr().out.strip() == "https://connect.nango.dev?session_token=abc"
    sent = json.loads(route.calls.last.request.content)
    assert sent["tags"]["end_user_id"] == "u_connected"
    assert sent["allowed_integrations"] == ["google-calendar"]
    assert main(["connect-link", "--config", str(config), "--user", "nobody"]) == 1


def test_check_loads_neither_the_server_nor_the_nango_client() -> None:
    # `check` of a large file has a CPU budget (issue 12): httpx, asyncio and the server are a tenth of it.
    import subprocess
    import sys

    script = (
        "import sys; from proxy.cli import main; code = main(['check', '--config', sys.argv[1]]); "
        "heavy = {'httpx', 'asyncio', 'starlette', 'uvicorn', 'proxy.nango.client', 'proxy.vapi.service',"
        " 'proxy.app'}; "
        "print(sorted(heavy & set(sys.modules)), code)"
    )
    done = subprocess.run([sys.executable, "-c", script, EXAMPLE], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.splitlines()[-1] == "[] 0"


def test_check_says_tag_routing_is_off_without_a_nango_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--config", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert "tag routing: off: nango.secret_key is empty, so no line is routed by connection tags" in out
    assert "tag routing: on" not in out
    monkeypatch.setenv("NANGO_SECRET_KEY", "cli-nango-key")
    assert main(["check", "--config", EXAMPLE]) == 0
    assert "tag routing: on (number=vapi_number" in capsys.readouterr().out


PROXY_MODE = """\
auth: {vapi_secrets: ["${VAPI_SERVER_SECRET}"]}
server: {public_url: "https://proxy.example.com"}
nango: {secret_key: "${NANGO_SECRET_KEY}"}
calendar: {mode: proxy, tool_server: {credentialId: cred-1}}
templates:
  default: {model: {provider: openai, model: gpt-4o}}
users:
  - {id: u_fixed, name: Fixed, connection_id: conn-fixed}
routes:
  - {to: "+1 415 555 0100", user: u_fixed}
"""


def test_check_and_resolve_say_proxy_mode_cannot_work_without_a_nango_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "routing.yaml"
    config.write_text(PROXY_MODE)
    assert main(["check", "--config", str(config)]) == 0  # the key is an unset secret: serve needs it anyway
    err = capsys.readouterr().err
    assert "environment variable NANGO_SECRET_KEY is not set (serve needs it)" in err
    assert "nango.secret_key: is empty, but routes[0] uses calendar mode proxy" in err
    assert main(["resolve", "--config", str(config), "--to", "+14155550100"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["outcome"] == "assistant" and report["connection_source"] == "fixed"
    assert report["warnings"] == [
        "calendar mode proxy without nango.secret_key: the tools reach Google Calendar through Nango, so every "
        "tool call of this call would answer that the calendar is not connected"
    ]
    assert "uses calendar mode proxy" in err
    config.write_text(PROXY_MODE.replace('"${NANGO_SECRET_KEY}"', '"${NANGO_SECRET_KEY:-}"'))
    assert main(["check", "--config", str(config)]) == 1  # empty on purpose: refused
    assert "error: " in (err := capsys.readouterr().err) and "uses calendar mode proxy" in err
