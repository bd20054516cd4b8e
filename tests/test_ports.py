"""No test needs a fixed port free: the suite runs with the quick start's port 8080 taken (tests/conftest.py)."""

from __future__ import annotations

import errno
import socket

import pytest

from tests.conftest import QUICK_START_PORT


def test_the_quick_start_port_is_taken_while_the_suite_runs() -> None:
    with socket.socket() as sock, pytest.raises(OSError) as raised:
        sock.bind(("127.0.0.1", QUICK_START_PORT))
    assert raised.value.errno == errno.EADDRINUSE
