from __future__ import annotations

import io
import json
import logging
from typing import Any

import httpx
import pytest

from proxy.app import create_app
from proxy.logs import LOGGER_NAME, CallIdFilter, JsonFormatter, TextFormatter, call_context
from tests.helpers import VAPI_SECRET, config_from, serving, vapi_sample


def log_line(formatter: logging.Formatter, message: str, call_id: str | None, **fields: object) -> str:
    """A record as the configured handler sees it: `CallIdFilter` runs where the line is logged."""
    record = logging.LogRecord("proxy.directory", logging.WARNING, __file__, 1, message, (), None)
    record.fields = fields
    if call_id is None:
        CallIdFilter().filter(record)
    else:
        with call_context(call_id):
            CallIdFilter().filter(record)
    return formatter.format(record)


def test_lines_logged_during_a_call_carry_its_id_in_both_formats() -> None:
    line: dict[str, Any] = json.loads(log_line(JsonFormatter(), "nango lookup failed", "call-42", user="u1"))
    assert (line["call_id"], line["user"], line["msg"]) == ("call-42", "u1", "nango lookup failed")
    assert "call_id=call-42 user=u1" in log_line(TextFormatter(), "nango lookup failed", "call-42", user="u1")
    assert "call_id" not in json.loads(log_line(JsonFormatter(), "index refreshed", None))


@pytest.mark.anyio
async def test_every_line_about_a_call_carries_its_id_and_no_number() -> None:
    """Nango failing during a call: the client's and the directory's lines (logged under `proxy.*`) carry
    the call id like the call's own line; with --log-format json they are one JSON object each."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(CallIdFilter())
    loggers = [logging.getLogger(name) for name in ("proxy", LOGGER_NAME)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(503)))
    try:
        async with http, serving(create_app(config_from(CONFIG), http_client=http)) as client:
            body = vapi_sample("assistant-request.pstn")
            response = await client.post("/vapi", json=body, headers={"X-Vapi-Secret": VAPI_SECRET})
            assert response.status_code == 200
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {line["logger"] for line in lines} >= {"proxy.nango", "proxy.directory", f"{LOGGER_NAME}.calls"}
    assert {line["call_id"] for line in lines} == {body["message"]["call"]["id"]}
    assert "+16505550100" not in stream.getvalue() and "+14155550123" not in stream.getvalue()


CONFIG = """\
auth:
  vapi_secrets: ["${VAPI_SERVER_SECRET}"]
nango:
  base_url: https://nango.test
  secret_key: nango-secret-key-value
  index_refresh_seconds: 0
templates:
  default:
    model: {provider: openai, model: gpt-4o}
users:
  - {id: lee, name: Sam Lee, timezone: UTC}
routes:
  - {to: "+1 650 555 0100", user: lee}
"""
