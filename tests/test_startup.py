"""Start-up: probes get answers while the config loads, and one log line says what was loaded."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from proxy.startup import StartupListener, loaded_summary, probe_response
from tests.helpers import VAPI_SECRET, config_from, eventually, free_port
from tests.test_server import assistant_request

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = (ROOT / "config.example.yaml").read_text()


def raw_request(address: tuple[str, int], data: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as connection:
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(4096):
            received += chunk
        return received


def feed_once(fifo: Path, text: str) -> None:
    """Give `text` to the proxy's first read of the FIFO, and leave a regular file with it for later reads."""
    with fifo.open("w") as pipe:  # blocks until the proxy opens the file to load it
        regular = fifo.with_name("regular.yaml")
        regular.write_text(text)
        os.replace(regular, fifo)  # the reload watcher's catch-up read finds the same text
        pipe.write(text)


@pytest.fixture
def listener() -> StartupListener:
    return StartupListener("127.0.0.1", 0)


def test_probes_are_answered_before_the_config_is_loaded(listener: StartupListener) -> None:
    try:
        live = raw_request(listener.address, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        ready = raw_request(listener.address, b"GET /readyz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        call = raw_request(listener.address, b"POST /vapi HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
    finally:
        listener.close()
    assert live.startswith(b"HTTP/1.1 200 OK\r\n") and live.endswith(b'{"status":"ok"}')
    assert ready.startswith(b"HTTP/1.1 503 ") and ready.endswith(b'{"status":"starting"}')
    assert call.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1\r\n" in call


def test_a_silent_client_holds_up_probes_for_at_most_a_second(listener: StartupListener) -> None:
    try:
        with socket.create_connection(listener.address):  # connects, never sends
            started = time.monotonic()
            live = raw_request(listener.address, b"GET /livez HTTP/1.1\r\n\r\n")
            waited = time.monotonic() - started
    finally:
        listener.close()
    assert live.startswith(b"HTTP/1.1 200 ")
    assert waited < 2.0


def test_handoff_keeps_waiting_connections_for_the_real_server(listener: StartupListener) -> None:
    """A probe that connects while the listener hands over is accepted by whoever takes the socket."""
    sock = listener.handoff()
    with sock, socket.create_connection(listener.address, timeout=5) as client:
        client.sendall(b"GET /livez HTTP/1.1\r\n\r\n")
        sock.settimeout(5)
        accepted, _ = sock.accept()
        with accepted:
            assert accepted.recv(100).startswith(b"GET /livez")


def test_port_in_use_is_an_error_not_a_hang() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            StartupListener("127.0.0.1", taken.getsockname()[1])


@pytest.mark.parametrize("line", [b"", b"garbage", b"GET /livez", b"GET  HTTP/1.1"])
def test_malformed_request_lines_get_503(line: bytes) -> None:
    assert probe_response(line).startswith(b"HTTP/1.1 503 ")


def test_loaded_summary_names_what_an_admin_checks() -> None:
    config = config_from(EXAMPLE)
    assert loaded_summary(config, insecure=False) | {"version": "-"} == {
        "config": "routing.yaml",
        "version": "-",
        "users": 3,
        "routes": 4,
        "auth": "vapi_secret",
        "calendar_modes": "native",
        "nango": "off",
        "nango_index_refresh_s": None,
    }
    with_nango = config_from(EXAMPLE, {"NANGO_SECRET_KEY": "nango-secret-value"})
    summary = loaded_summary(with_nango, insecure=False)
    assert summary["nango"] == "on (google-calendar at https://api.nango.dev)"
    assert summary["nango_index_refresh_s"] == 300.0
    assert "nango-secret-value" not in json.dumps(summary)


@pytest.mark.anyio
async def test_serve_answers_probes_while_the_config_loads_then_serves_calls(tmp_path: Path) -> None:
    """The config is a FIFO that the test fills when it chooses: until then the file has not loaded."""
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    text = EXAMPLE.replace("server:\n", "server:\n  reload_poll_seconds: 0\n  shutdown_delay_seconds: 0\n", 1)
    port = free_port()
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(fifo), "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "VAPI_SERVER_SECRET": VAPI_SECRET},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def alive() -> bool:
                assert process.poll() is None, log.read_text()
                try:
                    return (await client.get("/livez")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(alive)
            readyz = await client.get("/readyz")
            assert readyz.status_code == 503 and readyz.json() == {"status": "starting"}
            call = await client.post("/vapi", content=assistant_request(), headers={"X-Vapi-Secret": VAPI_SECRET})
            assert call.status_code == 503

            feeder = threading.Thread(target=feed_once, args=(fifo, text), daemon=True)
            feeder.start()

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready)
            feeder.join()
            call = await client.post(
                "/vapi", content=assistant_request("+14155550100"), headers={"X-Vapi-Secret": VAPI_SECRET}
            )
            assert call.status_code == 200
            assert call.json()["assistant"]["metadata"]["userId"] == "usr_doe"
    finally:
        process.terminate()
        process.wait(timeout=20)
    loaded = [json.loads(line) for line in log.read_text().splitlines() if '"config loaded"' in line]
    assert len(loaded) == 1
    assert loaded[0] | {"ts": "-", "version": "-"} == {
        "ts": "-",
        "level": "info",
        "logger": "proxy.server",
        "msg": "config loaded",
        "listen": f"http://127.0.0.1:{port}",
        "config": str(fifo),
        "version": "-",
        "users": 3,
        "routes": 4,
        "auth": "vapi_secret",
        "calendar_modes": "native",
        "nango": "off",
        "nango_index_refresh_s": None,
    }
    assert VAPI_SECRET not in log.read_text()
