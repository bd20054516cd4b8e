from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def test_check_refuses_an_unset_secret(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("VAPI_SERVER_SECRET")
    assert main(["check", "--config", EXAMPLE]) == 1
    assert "environment variable VAPI_SERVER_SECRET is not set" in capsys.readouterr().err


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
