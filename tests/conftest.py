from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer

# The port the README's quick start serves on. A reader runs `scripts/test` with the proxy still up, so no test
# may need it free: the suite holds it for its whole run (or finds it held already), and tests/test_ports.py
# checks that it is taken.
QUICK_START_PORT = 8080


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def quick_start_port_taken() -> Iterator[None]:
    """A listener on 127.0.0.1:8080 while the suite runs, as when the quick start's proxy is running."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        try:
            listener.bind(("127.0.0.1", QUICK_START_PORT))
            listener.listen(1)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        yield


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real, empty redis-server on a free port, stopped after the test (fails, never skips, if absent)."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
