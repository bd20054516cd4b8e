"""No test needs a fixed port free. The README's quick start leaves its proxy on 127.0.0.1:8080 while a
reader runs the tests, so CI (.ci/run) runs the whole suite with another process listening there and says so
in VAPI_PROXY_TESTS_BUSY_PORT; this test checks that the listener is really there."""

from __future__ import annotations

import os
import socket

import pytest

BUSY_PORT = os.environ.get("VAPI_PROXY_TESTS_BUSY_PORT")


@pytest.mark.skipif(BUSY_PORT is None, reason="set by .ci/run, which holds the port while the suite runs")
def test_the_quick_start_port_is_taken_while_the_suite_runs() -> None:
    assert BUSY_PORT is not None
    with socket.create_connection(("127.0.0.1", int(BUSY_PORT)), timeout=5):
        pass  # something listens: every other test ran beside it
