"""docs/agency.md's walk-through, run as written: its files are checked and resolved by the commands it shows,
and every other command it shows parses."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from proxy.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "agency.md"
NUMBER = "+1 415 555 0100"


def fenced(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", PAGE.read_text(), re.MULTILINE | re.DOTALL)


def write_files(directory: Path) -> Path:
    """Each YAML block starts with a comment naming its file; returns the agency file's path."""
    for block in fenced("yaml"):
        name = block.splitlines()[0].removeprefix("# ").strip()
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(block)
    return directory / "agency.yaml"


def commands() -> list[list[str]]:
    return [shlex.split(line) for block in fenced("shell") for line in block.splitlines() if line.strip()]


def test_the_walk_through_has_two_tenants_and_the_operators_commands() -> None:
    names = [block.splitlines()[0] for block in fenced("yaml")]
    assert names == ["# agency.yaml", "# tenants/acme-dental.yaml"]
    used = {argv[1] for argv in commands() if argv[0] == "vapi-calendar-proxy"}
    assert used >= {"check", "resolve", "connect-link", "connections", "numbers", "serve"}


def test_the_walk_through_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    agency = write_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    answers: dict[str, str] = {}
    for argv in commands():
        if argv[0] == "export":
            for assignment in argv[1:]:
                name, _, value = assignment.partition("=")
                monkeypatch.setenv(name, value)
            continue
        assert argv[0] == "vapi-calendar-proxy" and argv[argv.index("--config") + 1] == agency.name
        if argv[1] == "check":
            assert main(argv[1:]) == 0, capsys.readouterr().err
            assert "2/2 tenants ok" in capsys.readouterr().out
        elif argv[1] == "resolve":
            assert main(argv[1:]) == 0, capsys.readouterr().err
            report = json.loads(capsys.readouterr().out)
            answers[argv[argv.index("--tenant") + 1]] = report["response"]["assistant"]["firstMessage"]
            assert argv[argv.index("--to") + 1] == NUMBER and report["user"] == "u1"
        else:  # talks to Nango or serves: the command and its options exist as shown
            build_parser().parse_args(argv[1:])
    assert answers == {
        "acme-dental": "Acme Dental, this is Dr. Jane Doe's assistant.",
        "bayview-plumbing": "Bayview Plumbing, Dana Reyes's line. How can I help?",
    }
