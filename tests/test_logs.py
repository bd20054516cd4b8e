from __future__ import annotations

import ast
import asyncio
import importlib
import io
import json
import logging
import os
import pkgutil
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import proxy
from proxy.app import create_app
from proxy.logs import (
    CALL_LOGGER,
    LOGGER_NAME,
    CallIdFilter,
    CallLog,
    JsonFormatter,
    JsonHandler,
    LineBuffer,
    TextFormatter,
    call_context,
    configure_logging,
)
from tests.helpers import VAPI_SECRET, config_from, serving, vapi_sample

ROOT = Path(__file__).resolve().parent.parent


def module_loggers() -> dict[str, logging.Logger]:
    """Every logger a module of the package holds, by "module.attribute", every module imported."""
    for info in pkgutil.walk_packages(proxy.__path__, "proxy."):
        if not info.name.endswith("__main__"):  # importing it would run the command line
            importlib.import_module(info.name)
    return {
        f"{name}.{attribute}": value
        for name, module in list(sys.modules.items())
        if name == "proxy" or name.startswith("proxy.")
        for attribute, value in vars(module).items()
        if isinstance(value, logging.Logger)
    }


def test_every_logger_of_the_package_hangs_from_one_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    """One namespace, `proxy`: configure_logging's one handler gets every line of every module, in the
    chosen format and level (there was a `vapi_calendar_proxy.*` beside `proxy.*`, each configured apart)."""
    loggers = module_loggers()
    assert len(loggers) >= 15, sorted(loggers)  # the walk sees the package's loggers
    outside = {where: logger.name for where, logger in loggers.items() if logger.name.split(".")[0] != LOGGER_NAME}
    assert outside == {}
    assert not [name for name in logging.root.manager.loggerDict if name.startswith("vapi_calendar_proxy")]
    root = logging.getLogger(LOGGER_NAME)
    saved = (root.handlers[:], root.level, root.propagate)
    try:
        configure_logging("json", "WARNING")
        for logger in loggers.values():
            logger.warning("hello from %s", logger.name)
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        root.handlers[:], root.level, root.propagate = saved
    assert {line["logger"] for line in lines} == {logger.name for logger in loggers.values()}


def test_modules_name_their_loggers_after_themselves() -> None:
    """`logging.getLogger(__name__)` (or the call lines' CALL_LOGGER): a logger named by hand drifts out of
    the namespace when its module moves, as `vapi_calendar_proxy.connections` did."""
    named = []
    for path in sorted((ROOT / "proxy").rglob("*.py")):
        if path.name == "logs.py":  # configures uvicorn's loggers too
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "getLogger":
                argument = ast.unparse(node.args[0]) if node.args else ""
                if argument not in ("__name__", "CALL_LOGGER"):
                    named.append(f"{path.relative_to(ROOT)}: getLogger({argument})")
    assert named == []


def log_line(formatter: logging.Formatter, message: str, call_id: str | None, **fields: object) -> str:
    """A record as the configured handler sees it: `CallIdFilter` runs where the line is logged."""
    record = logging.LogRecord("proxy.nango.directory", logging.WARNING, __file__, 1, message, (), None)
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
    loggers = [logging.getLogger(LOGGER_NAME)]
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
    assert {line["logger"] for line in lines} >= {"proxy.nango.client", "proxy.nango.directory", CALL_LOGGER}
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


def test_a_direct_call_line_is_the_json_formatters_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The call line skips the logging module but not its shape: the same keys, values and timestamp format."""
    read, write = os.pipe()
    lines = LineBuffer(write)
    logger = logging.getLogger(CALL_LOGGER)
    monkeypatch.setattr(logger, "isEnabledFor", lambda level: level >= logging.INFO)
    fields: dict[str, object] = {"call_id": "c-1", "to": "+1650*****00", "user": None, "latency_ms": 0.12}
    CallLog(logger, lines, clock=lambda: 1_764_000_000.4567).info("assistant-request", fields)
    lines.flush()
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        direct = pipe.read()
    record = logging.LogRecord(logger.name, logging.INFO, __file__, 1, "assistant-request", (), None)
    record.created = 1_764_000_000.4567
    record.fields = fields
    assert direct == JsonFormatter().format(record).encode() + b"\n"
    assert json.loads(direct)["ts"] == "2025-11-24T16:00:00.456+00:00"


def test_call_lines_go_through_the_stdlib_unless_the_json_handler_is_their_only_way_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    call_log = CallLog.for_logger(logging.getLogger(CALL_LOGGER))
    assert call_log.lines is None  # caplog's handler is on the root logger
    call_log.info("assistant-request", {"call_id": "c-2"})
    assert [r.fields for r in caplog.records] == [{"call_id": "c-2"}]  # type: ignore[attr-defined]


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def test_buffered_lines_are_written_whole_in_atomic_writes_and_before_any_other_record() -> None:
    read, write = os.pipe()
    writes: list[bytes] = []
    lines = LineBuffer(write, max_bytes=10_000)
    real_write = os.write

    def recording_write(fd: int, data: Any) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "write", recording_write)
        for n in range(30):
            lines.write(b'{"n":%d,"pad":"%s"}\n' % (n, b"x" * 900))  # no loop running: written at once
        held = LineBuffer(write, max_bytes=10_000, max_delay=60)

        async def queue_two() -> None:
            held.write(b'{"call":1}\n')
            held.write(b'{"call":2}\n')

        asyncio.run(queue_two())
        assert writes[-1].startswith(b'{"n":29')  # the two call lines wait for their timer
        handler = JsonHandler(held)
        handler.setStream(os.fdopen(os.dup(write), "w"))
        handler.emit(logging.LogRecord("proxy.nango.client", logging.WARNING, __file__, 1, "later", (), None))
        handler.stream.close()
        for n in range(12):  # 12 x 1 kB queued, then flushed at once: several writes, each whole lines
            held.write(b'{"n":%d,"pad":"%s"}\n' % (n, b"y" * 1000))
        held.flush()
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        out = pipe.read()
    assert all(len(w) <= select.PIPE_BUF and w.endswith(b"\n") for w in writes)
    assert len(writes) >= 30 + 1 + 3
    parsed = [json.loads(line) for line in out.splitlines()]
    assert [p.get("call") for p in parsed[30:32]] == [1, 2]
    assert parsed[32]["msg"] == "later"  # the record came after the call lines queued before it
    assert len(parsed) == 30 + 2 + 1 + 12


@pytest.mark.anyio
async def test_queued_lines_are_flushed_within_200_ms_by_the_event_loop() -> None:
    read, write = os.pipe()
    os.set_blocking(read, False)
    lines = LineBuffer(write)
    lines.write(b"one\n")
    lines.write(b"two\n")
    with pytest.raises(BlockingIOError):
        os.read(read, 100)
    await asyncio.sleep(0.25)
    assert os.read(read, 100) == b"one\ntwo\n"
    os.close(read)
    os.close(write)


def test_workers_sharing_one_pipe_never_interleave_their_lines() -> None:
    """Four processes, each writing 2,000 buffered lines of about 300 bytes into one pipe at once."""
    script = (
        "import os, sys\n"
        "from proxy.logs import LineBuffer\n"
        "lines = LineBuffer(1, max_bytes=65536)\n"
        "for n in range(2000):\n"
        '    lines.write(b\'{"worker":%s,"n":%d,"pad":"%s"}\\n\' % (sys.argv[1].encode(), n, b\'z\' * 260))\n'
        "lines.flush()\n"
    )
    read, write = os.pipe()
    workers = [subprocess.Popen([sys.executable, "-c", script, str(w)], stdout=write, cwd=ROOT) for w in range(4)]
    os.close(write)
    out = read_all(read)
    os.close(read)
    assert [w.wait(timeout=30) for w in workers] == [0, 0, 0, 0]
    seen: dict[int, list[int]] = {w: [] for w in range(4)}
    for line in out.splitlines():
        entry = json.loads(line)  # a torn or interleaved line would not parse
        seen[entry["worker"]].append(entry["n"])
    assert all(numbers == list(range(2000)) for numbers in seen.values())
