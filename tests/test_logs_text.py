"""`--log-format text` cannot be forged: every value is escaped, and forwarded headers are believed only
from configured peers."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.logs import CallIdFilter, TextFormatter, call_context
from tests.helpers import VAPI_SECRET, running_proxy, vapi_sample

FORGED = "12:00:00.000 WARNING unauthorised request reason=mismatch client=10.9.9.9"
LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def text_line(message: str, call_id: str | None = None, **fields: object) -> str:
    record = logging.LogRecord("proxy.app", logging.WARNING, __file__, 1, message, (), None)
    record.fields = fields
    with call_context(call_id or "call-1"):
        CallIdFilter().filter(record)
    return TextFormatter().format(record)


def test_a_crlf_in_a_value_cannot_start_a_new_line() -> None:
    line = text_line("call answered", f"abc\r\n{FORGED}", user="u1")
    assert line.splitlines() == [line]
    assert f'call_id="abc\\r\\n{FORGED}"' in line


def test_a_value_cannot_pass_for_another_field() -> None:
    line = text_line("call answered", user="u1 outcome=assistant", note='say "hi"', empty="")
    assert 'user="u1 outcome=assistant"' in line
    assert 'note="say \\"hi\\""' in line
    assert 'empty=""' in line
    assert " outcome=assistant " not in line


def test_plain_values_stay_bare_and_messages_keep_their_spaces() -> None:
    assert text_line("nango lookup failed", "call-42", user="u1").endswith(
        "nango lookup failed call_id=call-42 user=u1"
    )


def test_control_characters_in_the_message_are_escaped() -> None:
    line = text_line("tool \x1b[31mred\x1b[0m\nnext\u2028line\x85")
    assert "\\x1b[31mred\\x1b[0m\\nnext\\u2028line\\x85" in line


@given(st.text(), st.text(), st.text())
def test_whatever_the_values_one_record_is_one_line(message: str, key: str, value: str) -> None:
    line = text_line(message, value, **{key or "k": value})
    assert line.splitlines() == [line]
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", line)


def call_with_id(call_id: str) -> bytes:
    body: dict[str, Any] = vapi_sample("assistant-request.pstn")
    body["message"]["call"]["id"] = call_id
    return json.dumps(body).encode()


def routing(tmp_path: Path, forwarded: str = "[]") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""\
version: 1
server: {{reload_poll_seconds: 0, forwarded_allow_ips: {forwarded}}}
auth: {{vapi_secrets: ["${{VAPI_SERVER_SECRET}}"]}}
templates:
  default: {{firstMessage: "Hello.", model: {{provider: openai, model: gpt-4o}}}}
users: [{{id: doe, name: Dr. Jane Doe, connection_id: conn-doe}}]
routes: [{{default: true, user: doe}}]
"""
    )
    return path


@pytest.mark.anyio
async def test_the_real_server_in_text_format_writes_no_forged_line_and_ignores_forwarded_for(
    tmp_path: Path,
) -> None:
    async with running_proxy(routing(tmp_path), tmp_path, log_format="text") as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            forged = call_with_id(f"call-9\r\n{FORGED}\n")
            answered = await client.post("/vapi", content=forged, headers={"X-Vapi-Secret": VAPI_SECRET})
            assert answered.status_code == 200
            refused = await client.post("/vapi", content=b"{}", headers={"X-Forwarded-For": "10.9.9.9"})
            assert refused.status_code == 401
        proxy.process.terminate()
        proxy.process.wait(10)
    lines = proxy.log.read_text().splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert not any(line.startswith(FORGED) for line in lines)
    assert any(f'call_id="call-9\\r\\n{FORGED}\\n"' in line for line in lines)
    unauthorised = [line for line in lines if line[13:].startswith("WARNING unauthorised request")]
    assert len(unauthorised) == 1
    assert unauthorised[0].endswith("client=127.0.0.1")


@pytest.mark.anyio
async def test_forwarded_for_is_believed_from_a_configured_peer(tmp_path: Path) -> None:
    async with running_proxy(routing(tmp_path, "[127.0.0.1]"), tmp_path, log_format="text") as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            refused = await client.post("/vapi", content=b"{}", headers={"X-Forwarded-For": "203.0.113.7"})
            assert refused.status_code == 401
        proxy.process.terminate()
        proxy.process.wait(10)
    assert any(line.endswith("client=203.0.113.7") for line in proxy.log.read_text().splitlines())
