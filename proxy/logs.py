"""Structured logs: one JSON object per line by default, readable text with `--log-format text`.

Callers pass their fields as `extra={"fields": {...}}`; nothing here ever sees a request body, so a
body (which can carry provider tokens) cannot reach a log by accident. While a call is being answered
(`call_context`), every line logged in it, by any module, carries that call's id.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

import orjson

LOGGER_NAME = "vapi_calendar_proxy"
LogFormat = Literal["json", "text"]

_CALL_ID: ContextVar[str | None] = ContextVar("call_id", default=None)


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


@contextlib.contextmanager
def call_context(call_id: str) -> Iterator[None]:
    """Tag every log line written inside the block (and in tasks it starts) with `call_id`."""
    token = _CALL_ID.set(call_id)
    try:
        yield
    finally:
        _CALL_ID.reset(token)


class CallIdFilter(logging.Filter):
    """Copies the current call id onto the record when it is created, in the caller's context."""

    def filter(self, record: logging.LogRecord) -> bool:
        call_id = _CALL_ID.get()
        if call_id is not None:
            record.call_id = call_id
        return True


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields = getattr(record, "fields", None)
    fields = fields if isinstance(fields, dict) else {}
    call_id = getattr(record, "call_id", None)
    if call_id is not None and "call_id" not in fields:
        return {"call_id": call_id, **fields}
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info and record.exc_info[0] is not None:
            # The type and message only: a traceback's locals can hold secrets in other renderers.
            entry["exc"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        fields = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        line = f"{when} {record.levelname:<7} {record.getMessage()} {fields}".rstrip()
        if record.exc_info and record.exc_info[0] is not None:
            line += f" exc={record.exc_info[0].__name__}: {record.exc_info[1]}"
        return line


def configure_logging(log_format: LogFormat = "json", level: str = "INFO") -> None:
    """Route the proxy's and uvicorn's logs through one handler on stderr."""
    # The logging HOWTO's "Optimization" switches: a record then skips the caller's frame lookup and
    # the thread/process names, which cost a call's log line more than formatting it.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(CallIdFilter())
    # "proxy" covers the modules that log under their own __name__ (nango, directory, tools, ...).
    for name in (LOGGER_NAME, "proxy", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    # Access logs would print every request path twice over; the proxy logs each call itself.
    logging.getLogger("uvicorn.access").disabled = True
