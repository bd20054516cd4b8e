"""The README's quick start stays true: its offline commands run as written, its curl gets the answer it shows.

Commands that start a server or install packages (`scripts/serve-example`, `scripts/test`) are run by CI
itself (`.ci/run`) or need the network; every other command in the README must be one this module runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.app import create_app
from proxy.config import load_config
from tests.helpers import serving

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Run elsewhere: serve-example starts a server (its curl is checked in-process below), scripts/test is CI.
NOT_OFFLINE = ("scripts/serve-example", "scripts/test")


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def shell_commands(text: str) -> list[str]:
    """Each command of the README's ```sh blocks: backslash continuations and multi-line quotes joined."""
    commands = []
    for block in fenced_blocks(text, "sh"):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            if not pending and (not line.strip() or line.startswith("#")):
                continue
            pending = f"{pending}\n{line}" if pending else line.strip()
            try:
                shlex.split(pending)
            except ValueError:  # an open quote: the command goes on on the next line
                continue
            commands.append(pending)
            pending = ""
        assert not pending, f"unterminated command in the README: {pending}"
    return commands


def without_environment(command: str) -> str:
    """`A=1 B=2 cmd ...` -> `cmd ...`."""
    return re.sub(r"^(\w+=\S*\s+)+", "", command)


def offline_commands() -> list[str]:
    return [c for c in shell_commands(README) if " check " in c or " resolve " in c]


def run(command: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: the command must carry every variable it needs, as a reader's shell would not.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_every_readme_command_is_run_somewhere() -> None:
    commands = shell_commands(README)
    unclassified = [
        c
        for c in commands
        if not without_environment(c).startswith((*NOT_OFFLINE, "curl ")) and c not in offline_commands()
    ]
    assert unclassified == []
    assert any(c.startswith("VAPI_SERVER_SECRET=dev-secret scripts/serve-example") for c in commands)
    assert "scripts/test" in commands


def test_readme_commands_use_the_venv_they_create() -> None:
    """A fresh clone has no `vapi-calendar-proxy` on PATH: only `.venv/bin/` (made by the first command)."""
    for command in offline_commands():
        assert ".venv/bin/vapi-calendar-proxy " in command, command
    assert (ROOT / ".venv" / "bin" / "vapi-calendar-proxy").exists(), "run scripts/test first: it creates .venv"


@pytest.mark.parametrize("command", offline_commands())
def test_readme_offline_command_runs_as_written(command: str) -> None:
    result = run(command)
    assert result.returncode == 0, result.stderr
    if " resolve " in command:
        report = json.loads(result.stdout)
        assert report["user"] == "usr_doe"
        credential = report["response"]["assistant"]["credentials"][0]
        assert credential["provider"] == "google.calendar.oauth2-authorization"
    else:
        assert "config.example.yaml: ok" in result.stdout


def test_readme_offline_commands_are_found() -> None:
    assert len(offline_commands()) == 2


def curl_request() -> tuple[str, dict[str, str], bytes]:
    (command,) = [c for c in shell_commands(README) if c.startswith("curl ")]
    words = shlex.split(command)
    headers: dict[str, str] = {}
    url = body = None
    i = 1
    while i < len(words):
        word = words[i]
        if word == "-H":
            name, _, value = words[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 2
        elif word == "-d":
            body = words[i + 1]
            i += 2
        elif word.startswith("http"):
            url = word
            i += 1
        else:
            assert word == "-s", f"curl option the test does not model: {word}"
            i += 1
    assert url is not None and body is not None
    return url, headers, body.encode()


def assert_shown(shown: Any, actual: Any, path: str = "") -> None:
    """Everything the README shows is in the real answer; "..." marks what it abridged."""
    if isinstance(shown, dict):
        assert isinstance(actual, dict), path
        for key, value in shown.items():
            if key != "...":
                assert key in actual, f"{path}.{key} is not in the answer"
                assert_shown(value, actual[key], f"{path}.{key}")
    elif isinstance(shown, list):
        assert isinstance(actual, list) and len(actual) == len(shown), path
        for index, (s, a) in enumerate(zip(shown, actual, strict=True)):
            assert_shown(s, a, f"{path}[{index}]")
    elif isinstance(shown, str) and shown.endswith(" ..."):
        assert isinstance(actual, str) and actual.startswith(shown[:-4]), path
    elif path.endswith(".today"):
        assert isinstance(actual, str), path  # the date of the call, not of the README
    else:
        assert shown == actual, path


@pytest.mark.anyio
async def test_readme_curl_gets_the_answer_the_readme_shows() -> None:
    url, headers, body = curl_request()
    config = load_config(ROOT / "config.example.yaml", {"VAPI_SERVER_SECRET": "dev-secret"})
    async with serving(create_app(config)) as client:
        response = await client.post(httpx.URL(url).path, headers=headers, content=body)
    assert response.status_code == 200
    (shown,) = fenced_blocks(README, "json")
    assert_shown(json.loads(shown), response.json())


def test_relative_links_in_readme_and_docs_exist() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
