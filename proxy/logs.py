"""Structured logs: one JSON object per line by default, readable text with `--log-format text`.

Callers pass their fields as `extra={"fields": {...}}`; nothing here ever sees a request body, so a
body (which can carry provider tokens) cannot reach a log by accident. While a call is being answered
(`call_context`), every line logged in it, by any module, carries that call's id.

The one line per call (`CallLog`) skips the logging module when the JSON handler is the only place it
would go: the stdlib's record, filters and formatter cost a warm call more than everything else it
does. The line is the same JSON object, written through the handler's `LineBuffer`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import re
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

import orjson

# Every logger of the proxy hangs from this one: each module logs under its own `__name__` (proxy.reload,
# proxy.nango.client, ...), and the per-call lines under CALL_LOGGER, a name log pipelines can filter on.
LOGGER_NAME = "proxy"
CALL_LOGGER = f"{LOGGER_NAME}.calls"
LogFormat = Literal["json", "text"]

_CALL_ID: ContextVar[str | None] = ContextVar("call_id", default=None)
_TENANT: ContextVar[str | None] = ContextVar("tenant", default=None)


@contextlib.contextmanager
def call_context(call_id: str) -> Iterator[None]:
    """Tag every log line written inside the block (and in tasks it starts) with `call_id`."""
    token = _CALL_ID.set(call_id)
    try:
        yield
    finally:
        _CALL_ID.reset(token)


@contextlib.contextmanager
def tenant_context(tenant: str | None) -> Iterator[None]:
    """Tag every log line written inside the block (and in tasks it starts) with the agency `tenant`."""
    token = _TENANT.set(tenant)
    try:
        yield
    finally:
        _TENANT.reset(token)


class CallIdFilter(logging.Filter):
    """Copies the current call id (and tenant) onto the record when it is created, in the caller's context."""

    def filter(self, record: logging.LogRecord) -> bool:
        call_id = _CALL_ID.get()
        if call_id is not None:
            record.call_id = call_id
        tenant = _TENANT.get()
        if tenant is not None:
            record.tenant = tenant
        return True


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields = getattr(record, "fields", None)
    fields = fields if isinstance(fields, dict) else {}
    call_id = getattr(record, "call_id", None)
    if call_id is not None and "call_id" not in fields:
        fields = {"call_id": call_id, **fields}
    tenant = getattr(record, "tenant", None)
    if tenant is not None and "tenant" not in fields:
        fields = {"tenant": tenant, **fields}
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


# Characters that could end a line or fake one in a terminal or a log viewer: C0 and C1 controls, DEL,
# and Unicode's line and paragraph separators. In a field value, also what would end or fake a field.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_UNSAFE_VALUE = re.compile('[\x00-\x20\x7f-\x9f\u2028\u2029"=\\\\]')
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    escaped = _ESCAPES.get(char)
    if escaped is not None:
        return escaped
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape_text(text: str) -> str:
    """Free text (a message) on one line: control characters written as escapes."""
    return _CONTROL.sub(_escape_char, text) if _CONTROL.search(text) else text


def text_value(value: object) -> str:
    """A field value as logfmt writes it: bare if it is one plain word, else quoted with escapes, so a
    value can neither end the line nor pass for another field."""
    text = str(value)
    if text and not _UNSAFE_VALUE.search(text):
        return text
    return '"' + _UNSAFE_VALUE.sub(lambda m: m.group() if m.group() in " =" else _escape_char(m), text) + '"'


class TextFormatter(logging.Formatter):
    """`HH:MM:SS.mmm LEVEL message key=value ...`; whatever a value holds, one record is one line."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        fields = " ".join(f"{text_value(key)}={text_value(value)}" for key, value in _fields(record).items())
        line = f"{when} {record.levelname:<7} {escape_text(record.getMessage())} {fields}".rstrip()
        if record.exc_info and record.exc_info[0] is not None:
            line += " exc=" + text_value(f"{record.exc_info[0].__name__}: {record.exc_info[1]}")
        return line


# POSIX makes a write of at most PIPE_BUF bytes to a pipe atomic: lines batched into such writes never
# interleave with another worker process's lines on a shared stderr pipe (Docker, systemd).
ATOMIC_WRITE_BYTES = select.PIPE_BUF
FLUSH_BYTES = 65_536
FLUSH_SECONDS = 0.2


class LineBuffer:
    """Whole lines for one file descriptor, written in batches instead of one write per line.

    Lines are written at the latest `max_delay` seconds after the first one waits (a timer on the
    running event loop; with no loop running, at once), as soon as `max_bytes` wait, before any other
    log record (`JsonHandler` flushes first), and at exit. Each write(2) carries whole lines, and
    at most ATOMIC_WRITE_BYTES of them unless one line alone is longer.
    """

    def __init__(self, fd: int, *, max_bytes: int = FLUSH_BYTES, max_delay: float = FLUSH_SECONDS) -> None:
        self._fd = fd
        self._max_bytes = max_bytes
        self._max_delay = max_delay
        self._lines: list[bytes] = []
        self._size = 0
        # Held while writing too: two flushes (the loop's timer, another thread's log record) must not
        # reorder lines.
        self._lock = threading.Lock()

    def write(self, line: bytes) -> None:
        """Queue one line, newline included."""
        with self._lock:
            first = not self._lines
            self._lines.append(line)
            self._size += len(line)
            full = self._size >= self._max_bytes
        if full:
            self.flush()
        elif first:
            try:
                asyncio.get_running_loop().call_later(self._max_delay, self.flush)
            except RuntimeError:  # no event loop in this thread: nothing would flush later
                self.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._lines:
                return
            lines, self._lines, self._size = self._lines, [], 0
            chunk: list[bytes] = []
            size = 0
            for line in lines:
                if chunk and size + len(line) > ATOMIC_WRITE_BYTES:
                    self._write(b"".join(chunk))
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line)
            self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:  # stderr closed or gone: nowhere left to report it
            pass


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The JSON handler on stderr; it owns the `LineBuffer` that call lines are written through, and
    flushes it before each record it writes, so lines keep their order."""

    def __init__(self, lines: LineBuffer) -> None:
        super().__init__(sys.stderr)
        self.lines = lines
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.flush()
        super().emit(record)


class CallLog:
    """Writes the one line per call: `{"ts", "level", "logger", "msg", **fields}` at INFO.

    With `lines` (the JSON handler's buffer) it is one `orjson.dumps` of the fields behind a prefix
    whose timestamp is formatted once per second; otherwise (text format, tests, other handlers) it
    is an ordinary log record with the same fields.
    """

    def __init__(
        self,
        logger: logging.Logger,
        lines: LineBuffer | None,
        *,
        clock: Callable[[], float] = time.time,
        tenant: str | None = None,
    ) -> None:
        self._logger = logger
        self.tenant = tenant
        self.lines = lines
        self._clock = clock
        self._second = -1
        self._stamp = b""
        self._middles: dict[str, bytes] = {}

    @classmethod
    def for_logger(cls, logger: logging.Logger, tenant: str | None = None) -> CallLog:
        """Direct lines when `configure_logging(json)` left the JSON handler as the logger's only way out.
        `tenant`: every line names this agency tenant."""
        return cls(logger, _only_json_handler(logger), tenant=tenant)

    def info(self, message: str, fields: dict[str, object]) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        if self.lines is None:
            if self.tenant is not None:
                fields = {"tenant": self.tenant, **fields}
            self._logger.info(message, extra={"fields": fields})
            return
        now = self._clock()
        second = int(now)
        if second != self._second:
            when = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._stamp = f'{{"ts":"{when}.'.encode()
            self._second = second
        middle = self._middles.get(message)
        if middle is None:
            head: dict[str, object] = {"level": "info", "logger": self._logger.name, "msg": message}
            if self.tenant is not None:
                head["tenant"] = self.tenant  # in the line's fixed part: a tenant costs a call nothing
            tail = orjson.dumps(head)
            middle = self._middles[message] = b'+00:00",' + tail[1:-1] + b","
        body = orjson.dumps(fields, default=str, option=orjson.OPT_APPEND_NEWLINE)
        self.lines.write(b"%s%03d%s%s" % (self._stamp, int((now - second) * 1000), middle, body[1:]))

    def flush(self) -> None:
        if self.lines is not None:
            self.lines.flush()


def _only_json_handler(logger: logging.Logger) -> LineBuffer | None:
    found: LineBuffer | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            # CallIdFilter is the handler's own and adds nothing a call line lacks (its fields carry call_id).
            other_filters = any(not isinstance(f, CallIdFilter) for f in handler.filters)
            if not isinstance(handler, JsonHandler) or found is not None or other_filters:
                return None
            found = handler.lines
        current = current.parent if current.propagate else None
    return found


def configure_logging(log_format: LogFormat = "json", level: str = "INFO") -> None:
    """Route the proxy's and uvicorn's logs through one handler on stderr."""
    # The logging HOWTO's "Optimization" switches: a record then skips the caller's frame lookup and
    # the thread/process names, which cost a call's log line more than formatting it.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for old in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(old, JsonHandler):
            old.lines.flush()
            atexit.unregister(old.lines.flush)
    handler: logging.Handler
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced stderr (test capture): plain records
        fd = -1
    if log_format == "json" and fd >= 0:
        lines = LineBuffer(fd)
        atexit.register(lines.flush)  # a SIGTERM ends in a normal exit (uvicorn's and the drain's handlers)
        handler = JsonHandler(lines)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(CallIdFilter())
    for name in (LOGGER_NAME, "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    # Access logs would print every request path twice over; the proxy logs each call itself.
    logging.getLogger("uvicorn.access").disabled = True
