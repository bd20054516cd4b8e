"""docs/onboarding.md's walk-through runs as written against bench/fake_nango.py and a real `serve`.

Its ```sh block is run command by command in one shell, in a clean environment, as a reader would paste it;
only the two ports change (to free ones: a reader's quick-start proxy, or another test, may hold them).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.contract import assert_assistant_request_response
from tests.helpers import free_port
from tests.test_readme import fenced_blocks, shell_commands

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "onboarding.md").read_text(encoding="utf-8")
PROXY_PORT, NANGO_PORT = "8081", "8900"  # as the walk-through writes them
STATUS = r"""printf '\n@@rc %s\n' "$?" """  # a newline first: curl's answer does not end with one


def walkthrough() -> list[str]:
    section = GUIDE.split("## Try it without a Nango account", 1)[1].split("\n## ", 1)[0]
    (block,) = fenced_blocks(section, "sh")
    return shell_commands(f"```sh\n{block}```\n")


def run_walkthrough(commands: list[str]) -> dict[int, tuple[int, str]]:
    """Each command's exit status and standard output, by its index."""
    proxy_port, nango_port = str(free_port()), str(free_port())
    script = ["set -u"]
    for index, command in enumerate(commands):
        command = command.replace(PROXY_PORT, proxy_port).replace(NANGO_PORT, nango_port)
        script += [f"echo '@@{index}'", command, STATUS]
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    process = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the proxy and the fake too: stopped with the group if the walk-through fails
    )
    try:
        out, err = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    found = {
        int(index): (int(status), text)
        for index, text, status in re.findall(r"^@@(\d+)\n(.*?)\n@@rc (\d+)$", out, flags=re.MULTILINE | re.DOTALL)
    }
    assert sorted(found) == list(range(len(commands))), err
    return found


def test_the_onboarding_walkthrough_runs_as_written() -> None:
    commands = walkthrough()
    results = run_walkthrough(commands)

    def output(fragment: str, which: int = 0) -> str:
        indexes = [i for i, command in enumerate(commands) if fragment in command]
        status, text = results[indexes[which]]
        assert status == 0, f"{commands[indexes[which]]}\n{text}"
        return text

    def report(fragment: str) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(output(fragment))
        return decoded

    failed = [(commands[i], text) for i, (status, text) in results.items() if status != 0]
    assert failed == []
    connected = re.fullmatch(
        r'connected (conn-1-\d+); webhook: 200 \{"ok":true,"result":"applied"\}\n', output("$LINK")
    )
    assert connected is not None, output("$LINK")
    connection = connected.group(1)

    answer = report("X-Vapi-Secret")
    assert_assistant_request_response(answer)
    assert answer["assistant"]["credentials"][0]["authorizationId"] == connection
    assert answer["assistant"]["metadata"]["userId"] == "usr_ann"
    resolved = report('resolve --config config.example.yaml --to "+1 415 555 0177"')
    assert resolved["route_source"] == f"nango connection {connection}, tag vapi_number=+14155550177 (nango)"
    assert resolved["user"] == "usr_ann"

    listed = output("connections --config").splitlines()
    assert [row.split("\t")[:3] for row in listed] == [
        ["usr_doe", "Dr. Jane Doe", "fixed"],
        ["usr_lee", "Sam Lee", "fixed"],
        ["usr_patel", "Priya Patel", "fixed"],
        ["usr_ann", "Ann Example", "connected"],
    ]
    assert listed[-1].endswith(f"\t{connection} (tags: +14155550177)\tgoogle")
    assert output("numbers --config") == f"to\t+14155550177\t{connection}\tusr_ann\tok\tgoogle\n"

    assert output("assign --config").startswith(f"{connection}: ")
    moved = report('resolve --config config.example.yaml --to "+1 415 555 0178"')
    assert moved["user"] == "usr_ann"
    assert moved["route_source"] == f"nango connection {connection}, tag vapi_number=+14155550178 (nango)"
