"""The command line as an admin meets it: --version, help with defaults, clear usage errors."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from proxy import __version__
from proxy.cli import build_parser, main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"vapi-calendar-proxy {__version__} (Python 3.")
    assert __version__ == version("vapi-calendar-proxy")


def test_top_level_help_is_plain_text() -> None:
    text = build_parser().format_help()
    assert "`" not in text and "**" not in text
    for command in ("serve", "check", "resolve", "connect-link", "connections"):
        assert command in text


def test_every_option_has_help_and_shows_its_default() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    assert isinstance(subparsers.choices, dict)
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            if action.default not in (None, False):
                assert "(default: %(default)s)" in action.help, f"{name} {action.option_strings} hides its default"
    serve_help = " ".join(subparsers.choices["serve"].format_help().split())
    for shown in ("(default: 127.0.0.1)", "(default: 8080)", "(default: 1)", "(default: json)", "(default: info)"):
        assert shown in serve_help


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log-level", "bogus"], "argument --log-level: invalid choice: 'bogus'"),
        (["--log-format", "xml"], "argument --log-format: invalid choice: 'xml'"),
        (["--port", "http"], "argument --port: 'http' is not an integer"),
        (["--port", "70000"], "argument --port: '70000' is not a TCP port (0-65535)"),
        (["--workers", "0"], "argument --workers: '0' is not a positive integer"),
    ],
)
def test_bad_option_values_get_a_usage_error_not_a_traceback(args: list[str], message: str) -> None:
    result = run_cli("serve", "--config", "config.example.yaml", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: vapi-calendar-proxy serve")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_log_level_is_case_insensitive() -> None:
    args = build_parser().parse_args(["serve", "--config", "c.yaml", "--log-level", "WARNING"])
    assert args.log_level == "warning"


def test_operations_doc_lists_every_command() -> None:
    """docs/operations.md's command-line block stays in step with the parser."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    block = doc.split("## Command line", 1)[1].split("```", 2)[1]
    documented = set(re.findall(r"^vapi-calendar-proxy ([a-z-]+)", block, flags=re.MULTILINE)) - {"--version"}
    subparsers = next(a for a in build_parser()._actions if isinstance(a.choices, dict))
    assert isinstance(subparsers.choices, dict)
    assert documented == set(subparsers.choices)


def test_the_command_line_synopsis_in_the_docs_lists_every_option() -> None:
    """docs/operations.md's synopsis: every command, each with every option it takes."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    block = docs.split("## Command line", 1)[1].split("```", 2)[1]
    synopsis: dict[str, str] = {}
    command = ""
    for line in block.splitlines():
        if line.startswith("vapi-calendar-proxy "):
            command = line.split()[1]
        synopsis[command] = synopsis.get(command, "") + " " + line
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    assert isinstance(subparsers.choices, dict)
    assert set(subparsers.choices) <= set(synopsis)
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert re.search(rf"{option}\b(?!-)", synopsis[name]), f"{name} {option}"
