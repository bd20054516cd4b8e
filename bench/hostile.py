"""Hostile peers against the real server: a 64 MB header, 1,000 idle or half-sent connections, unfinished bodies.

    python bench/hostile.py                   # every case against `serve` (the proxy's connection limits)
    python bench/hostile.py --stock           # the same cases against uvicorn's stock httptools protocol
    python bench/hostile.py --cases header --header-mb 64 --json out.json

Starts `python -m proxy serve` on a free loopback port with a generated config (users with fixed
connection ids, so no Nango is needed), then for each case measures what a real caller sees meanwhile:

- header: one peer at a time tries to send a `--header-mb` MB header, reconnecting when it is cut off, for
  `--duration` s; meanwhile `/livez` is timed on a kept-alive connection every 10 ms (p50/p99/max), and
  the server's RSS is sampled every 20 ms (growth = peak - before).
- idle: `--connections` connections from eight addresses (127.0.0.2-9), half idle and half with half a
  request head, are opened at once
  (with `--nofile 1024`, the server gets the open-file limit of a default Debian shell or container);
  reported: when the server has closed them (the last one, seconds after opening), and the latency of an
  authenticated assistant-request on a fresh connection every 50 ms meanwhile, with any errors.
- tools: one authenticated tool-calls message with `--tool-calls` check_availability calls (proxy mode,
  a fake Google answering freeBusy in `--google-ms`); reported: the time to answer, the results by kind,
  and `/livez` every 10 ms meanwhile (its worst latency bounds the longest event-loop stall).
- bodies: `--bodies` unauthenticated requests each declare a 1 MB body and send all but its last byte, with
  a wrong X-Vapi-Secret and with an HMAC signature header (which needs the body), from one address
  (127.0.0.2); reported: answers by status, the server's RSS growth, and a genuine HMAC-signed call from
  another address (127.0.0.1) while the signed bodies are held.
- pipeline: one authenticated peer (127.0.0.2) pipelines warm calls, `--pipeline-depth` per write, and never
  reads an answer, reconnecting when it is cut off, for `--pipeline-seconds` s; reported: the server's RSS
  growth, what the peer got to send, and a warm call from 127.0.0.1 on a fresh connection every 50 ms meanwhile.
- answered: `--connections` connections from eight addresses (127.0.0.2-9) each POST to an unknown path
  declaring a 10-byte body they never send, and read the 404; then 3 warm calls from 127.0.0.1: their
  statuses and latencies (the answered connections are owed nothing, so they make room).

With --stock the server is the same app under uvicorn's own httptools protocol with its defaults (no
header limit, no head/body timeouts, no connection cap): the figures the limits are compared against.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import multiprocessing
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SECRET = "hostile-bench-secret-3e9"
HMAC_KEY = "hostile-bench-hmac-key-51"
NUMBER = "+16505550100"

CONFIG = f"""\
version: 1
server:
  reload_poll_seconds: 0
  public_url: https://proxy.example.com
auth:
  vapi_secrets: ["{SECRET}"]
  hmac: {{secrets: ["{HMAC_KEY}"]}}
templates:
  default:
    firstMessage: "You reached {{{{user_name}}}}."
    model:
      provider: openai
      model: gpt-4o
      messages: [{{role: system, content: "You answer for {{{{user_name}}}}."}}]
users:
  - {{id: doe, name: Dr. Jane Doe, timezone: UTC, connection_id: conn-doe}}
routes:
  - {{to: "{NUMBER}", user: doe}}
"""

# For the tool-calls case: the proxy serves the calendar tools itself, against the fake Google below.
PROXY_MODE = """\
nango: {{base_url: "{url}", secret_key: hostile-bench-nango-key, index_refresh_seconds: 0}}
calendar: {{mode: proxy}}
"""

# Google Calendar's freeBusy behind Nango's proxy, answering after `--google-ms` like a real round trip.
FAKE_GOOGLE = """\
import asyncio, sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
delay = float(sys.argv[2]) / 1000
async def free_busy(request):
    body = await request.json()
    await asyncio.sleep(delay)
    return JSONResponse({"kind": "calendar#freeBusy", "timeMin": body["timeMin"], "timeMax": body["timeMax"],
                         "calendars": {"primary": {"busy": []}}})
app = Starlette(routes=[Route("/proxy/calendar/v3/freeBusy", free_busy, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

# The app exactly as `serve` builds it, under uvicorn's stock protocol and defaults (what main ran before).
STOCK = """\
import sys, uvicorn
from proxy.app import create_app
from proxy.config import load_config
from proxy.logs import configure_logging
configure_logging("json", "WARNING")
app = create_app(load_config(sys.argv[1]), config_path=sys.argv[1])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), http="httptools", log_config=None, lifespan="on")
"""


def call_body() -> bytes:
    body = json.loads((ROOT / "tests" / "fixtures" / "vapi" / "assistant-request.pstn.json").read_text())
    body["message"]["phoneNumber"]["number"] = NUMBER
    return json.dumps(body).encode()


CALL = call_body()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    popen: subprocess.Popen[bytes]
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def rss_mb(self) -> float:
        with open(f"/proc/{self.popen.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.popen.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(stock: bool, workdir: Path, nofile: int | None = None, calendar_url: str | None = None) -> Iterator[Server]:
    config = workdir / "config.yaml"
    config.write_text(CONFIG + (PROXY_MODE.format(url=calendar_url) if calendar_url else ""))
    port = free_port()
    if stock:
        argv = [PYTHON, "-c", STOCK, str(config), str(port)]
    else:
        argv = [PYTHON, "-m", "proxy", "serve", "--config", str(config), "--port", str(port)]
        argv += ["--log-level", "warning"]
    log = (workdir / ("stock.log" if stock else "serve.log")).open("ab")

    def limit_files() -> None:
        if nofile is not None:  # soft and hard: as a container started with --ulimit nofile=N:N
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    popen = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_files)
    running = Server(popen, port)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert popen.poll() is None, f"the server exited; see {log.name}"
            with contextlib.suppress(OSError):
                if request(running.address, b"GET /readyz HTTP/1.1\r\nHost: bench\r\n\r\n")[0] == 200:
                    break
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield running
    finally:
        popen.send_signal(signal.SIGINT)
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a content-length (all the proxy sends); returns (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return int(head.split(b" ", 2)[1]), body


def request(address: tuple[str, int], raw: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(raw)
        return read_response(sock)


def connect_from(source: str, address: tuple[str, int], timeout: float) -> socket.socket:
    """A connection from `source`, another loopback address (Linux routes all of 127.0.0.0/8 to lo)."""
    return socket.create_connection(address, timeout=timeout, source_address=(source, 0))


def authenticated_call() -> bytes:
    head = f"POST /vapi HTTP/1.1\r\nHost: bench\r\nX-Vapi-Secret: {SECRET}\r\nContent-Type: application/json\r\n"
    return head.encode() + f"Content-Length: {len(CALL)}\r\n\r\n".encode() + CALL


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


@dataclass
class RssSampler:
    """The server's RSS every 20 ms in a thread: `growth_mb` is the peak over the value at start."""

    target: Server
    before: float = 0.0
    peak: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> RssSampler:
        self.before = self.peak = self.target.rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, self.target.rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return round(self.peak - self.before, 1)


def probe(every: float, stop: threading.Event, once: Callable[[], None]) -> tuple[list[float], Counter[str]]:
    """Run `once` every `every` s until `stop`; latencies of those that worked, and the errors of the others."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            once()
        except Exception as exc:
            errors[type(exc).__name__ + ": " + str(exc)[:60]] += 1
        else:
            latencies.append(time.perf_counter() - started)
        stop.wait(max(0.0, every - (time.perf_counter() - started)))
    return latencies, errors


def case_header(target: Server, megabytes: int, duration: float) -> dict[str, object]:
    stop = threading.Event()
    attempts: list[dict[str, float]] = []

    def attacker() -> None:
        chunk = b"a" * 65536
        total = megabytes * 1024 * 1024
        while not stop.is_set():
            sent = 0
            started = time.perf_counter()
            answer = b""
            try:
                with socket.create_connection(target.address, timeout=30) as sock:
                    sock.sendall(b"GET /livez HTTP/1.1\r\nHost: bench\r\nX-Big: ")
                    while sent < total and not stop.is_set():
                        sock.sendall(chunk)
                        sent += len(chunk)
                    if sent >= total:
                        sock.sendall(b"\r\n\r\n")
                    with contextlib.suppress(OSError):
                        answer = sock.recv(64)
            except OSError:
                with contextlib.suppress(Exception):
                    answer = answer or b"(reset)"
            attempts.append(
                {
                    "sent_mb": round(sent / 1048576, 2),
                    "seconds": round(time.perf_counter() - started, 3),
                    "status": float(answer.split(b" ")[1]) if answer.startswith(b"HTTP/") else 0.0,
                }
            )

    livez = socket.create_connection(target.address, timeout=30)

    def get_livez() -> None:
        livez.sendall(b"GET /livez HTTP/1.1\r\nHost: bench\r\n\r\n")
        status, _ = read_response(livez)
        assert status == 200, status

    cpu_before = target.cpu_seconds()
    with RssSampler(target) as rss:
        thread = threading.Thread(target=attacker, daemon=True)
        started = time.monotonic()
        thread.start()
        result: dict[str, tuple[list[float], Counter[str]]] = {}
        prober = threading.Thread(target=lambda: result.update(livez=probe(0.01, stop, get_livez)), daemon=True)
        prober.start()
        time.sleep(duration)
        stop.set()
        thread.join(120)
        prober.join(30)
        elapsed = time.monotonic() - started
    livez.close()
    latencies, errors = result["livez"]
    first = attempts[0] if attempts else {}
    return {
        "header_mb": megabytes,
        "seconds": round(elapsed, 1),
        "attempts": len(attempts),
        "first_attempt": first,
        "mb_accepted_per_attempt_median": statistics.median(a["sent_mb"] for a in attempts) if attempts else 0,
        "livez": percentiles(latencies),
        "livez_errors": dict(errors),
        "rss_growth_mb": rss.growth_mb,
        "server_cpu_s": round(target.cpu_seconds() - cpu_before, 2),
    }


def case_idle(target: Server, connections: int, wait: float) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, connections + 200), hard))
    stop = threading.Event()
    result: dict[str, tuple[list[float], Counter[str]]] = {}

    def call() -> None:
        status, body = request(target.address, authenticated_call())
        assert status == 200 and b"You reached Dr. Jane Doe." in body, status

    with RssSampler(target) as rss:
        opened_at = time.monotonic()
        socks = []
        selector = selectors.DefaultSelector()
        for index in range(connections):
            # From eight addresses, as many peers would come: one address holds at most
            # server.max_connections_per_address (250), a bound of its own.
            source = (f"127.0.0.{2 + index % 8}", 0)
            sock = socket.create_connection(target.address, timeout=10, source_address=source)
            if index % 2:
                sock.sendall(b"POST /vapi HTTP/1.1\r\nHost: bench\r\nContent-Type: appl")  # half a head
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            socks.append(sock)
        opened = time.monotonic() - opened_at
        prober = threading.Thread(target=lambda: result.update(call=probe(0.05, stop, call)), daemon=True)
        prober.start()
        closed: list[float] = []
        answers: Counter[str] = Counter()
        deadline = time.monotonic() + wait
        while len(closed) < connections and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(4096)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                answers[data.split(b"\r\n", 1)[0].decode() or "(closed without an answer)"] += 1
                selector.unregister(sock)
                closed.append(time.monotonic() - opened_at)
        stop.set()
        prober.join(30)
    for sock in socks:
        sock.close()
    latencies, errors = result["call"]
    return {
        "connections": connections,
        "opened_in_s": round(opened, 2),
        "closed_by_server": len(closed),
        "last_closed_after_s": round(max(closed), 2) if len(closed) == connections else None,
        "still_open_after_s": None if len(closed) == connections else wait,
        "answers": dict(answers),
        "authenticated_call": percentiles(latencies),
        "call_errors": dict(errors),
        "rss_growth_mb": rss.growth_mb,
    }


def unfinished_bodies(target: Server, count: int, auth_header: str, size: int = 1_000_000) -> dict[str, object]:
    """`count` requests that declare a `size` body and send all but its last byte; the answers they get."""
    head = f"POST /vapi HTTP/1.1\r\nHost: bench\r\n{auth_header}\r\nContent-Length: {size}\r\n\r\n".encode()
    statuses: Counter[str] = Counter()
    lock = threading.Lock()

    def send_all_but_one(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(head + b"{" * (size - 1))

    def answer(sock: socket.socket) -> None:
        try:
            status = str(read_response(sock)[0])
        except (OSError, ValueError) as exc:
            status = type(exc).__name__
        with lock:
            statuses[status] += 1

    with RssSampler(target) as rss:
        socks = [connect_from("127.0.0.2", target.address, timeout=15) for _ in range(count)]
        for work in (send_all_but_one, answer):
            threads = [threading.Thread(target=work, args=(sock,), daemon=True) for sock in socks]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
    for sock in socks:
        sock.close()
    return {"requests": count, "answers": dict(statuses), "rss_growth_mb": rss.growth_mb}


def signed_call() -> bytes:
    """A genuine HMAC-signed assistant-request (the config's default HMAC plan: hex sha256 of "{timestamp}.{body}")."""
    timestamp = str(int(time.time()))
    signature = hmac.new(HMAC_KEY.encode(), timestamp.encode() + b"." + CALL, hashlib.sha256).hexdigest()
    head = f"POST /vapi HTTP/1.1\r\nHost: bench\r\nX-Signature: {signature}\r\nX-Timestamp: {timestamp}\r\n"
    return head.encode() + f"Content-Length: {len(CALL)}\r\n\r\n".encode() + CALL


def case_bodies(target: Server, count: int) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 200), hard))
    genuine: dict[str, object] = {}

    def genuine_call_meanwhile() -> None:
        time.sleep(1.0)  # the signed bodies are held by then (their senders wait for the answers)
        started = time.perf_counter()
        try:
            status, _ = request(target.address, signed_call())
        except OSError as exc:
            genuine.update(status=type(exc).__name__)
        else:
            genuine.update(status=status, latency_ms=round((time.perf_counter() - started) * 1000, 1))

    caller = threading.Thread(target=genuine_call_meanwhile, daemon=True)
    wrong_secret = unfinished_bodies(target, count, "X-Vapi-Secret: wrong")
    caller.start()
    # A signature header: only the body can prove it wrong, so the body must be read.
    hmac_signed = unfinished_bodies(target, count, "X-Signature: 00\r\nX-Timestamp: 1")
    caller.join(30)
    return {"wrong_secret": wrong_secret, "hmac_signed": hmac_signed, "genuine_hmac_call_meanwhile": genuine}


def case_pipeline(target: Server, duration: float, depth: int) -> dict[str, object]:
    stop = threading.Event()
    # sent_mb: what the kernel took (socket buffers included); blocked_s: time the sends were taken by no one.
    attack = {"connections": 0, "sent_mb": 0.0, "blocked_s": 0.0, "cut_off": 0}
    calls = authenticated_call() * depth

    def attacker() -> None:
        while not stop.is_set():
            try:
                with connect_from("127.0.0.2", target.address, timeout=0.5) as sock:
                    attack["connections"] += 1
                    while not stop.is_set():
                        try:
                            sock.sendall(calls)
                            attack["sent_mb"] += len(calls) / 1048576
                        except TimeoutError:
                            attack["blocked_s"] += 0.5  # the server reads none of it: nothing is taken
            except OSError:
                attack["cut_off"] += 1

    def call() -> None:
        status, body = request(target.address, authenticated_call())
        assert status == 200 and b"You reached Dr. Jane Doe." in body, status

    result: dict[str, tuple[list[float], Counter[str]]] = {}
    with RssSampler(target) as rss:
        threads = [
            threading.Thread(target=attacker, daemon=True),
            threading.Thread(target=lambda: result.update(call=probe(0.05, stop, call)), daemon=True),
        ]
        for thread in threads:
            thread.start()
        time.sleep(duration)
        stop.set()
        for thread in threads:
            thread.join(30)
    latencies, errors = result["call"]
    return {
        "seconds": duration,
        "attacker": {key: round(value, 1) for key, value in attack.items()},
        "rss_growth_mb": rss.growth_mb,
        "warm_call_meanwhile": percentiles(latencies),
        "call_errors": dict(errors),
    }


def case_answered(target: Server, connections: int) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, connections + 200), hard))
    socks = []
    answers: Counter[str] = Counter()
    for index in range(connections):
        sock = connect_from(f"127.0.0.{2 + index % 8}", target.address, timeout=10)
        sock.sendall(b"POST /nope HTTP/1.1\r\nHost: bench\r\nContent-Length: 10\r\n\r\n")
        answers[sock.recv(64).split(b"\r\n", 1)[0].decode() or "(closed)"] += 1
        socks.append(sock)
    calls: list[dict[str, object]] = []
    for _ in range(3):
        started = time.perf_counter()
        try:
            status, _ = request(target.address, authenticated_call())
        except OSError as exc:
            calls.append({"status": type(exc).__name__})
        else:
            calls.append({"status": status, "latency_ms": round((time.perf_counter() - started) * 1000, 1)})
    for sock in socks:
        sock.close()
    return {"connections": connections, "answers": dict(answers), "warm_calls": calls}


def tool_calls_message(count: int) -> bytes:
    """A tool-calls message as small as Vapi's type allows, so that 5,000 calls fit in max_body_bytes (1 MiB)."""
    arguments = json.dumps({"start": "2030-03-04T09:00:00-05:00", "end": "2030-03-04T17:00:00-05:00"})
    message = {
        "type": "tool-calls",
        "call": {"id": "call-flood"},
        "phoneNumber": {"number": NUMBER},
        "customer": {"number": "+14155550123"},
        "toolCallList": [
            {"id": f"t{i}", "type": "function", "function": {"name": "check_availability", "arguments": arguments}}
            for i in range(count)
        ],
    }
    return json.dumps({"message": message}, separators=(",", ":")).encode()


@contextlib.contextmanager
def fake_google(delay_ms: float) -> Iterator[str]:
    port = free_port()
    popen = subprocess.Popen([PYTHON, "-c", FAKE_GOOGLE, str(port), str(delay_ms)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert popen.poll() is None and time.monotonic() < deadline, "the fake Google did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        popen.send_signal(signal.SIGINT)
        popen.wait(10)


def livez_prober(address: tuple[str, int], seconds: float, out: multiprocessing.Queue[list[float]]) -> None:
    """/livez every 10 ms on a kept-alive connection for `seconds`, in its own process (no shared GIL)."""
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    with socket.create_connection(address, timeout=60) as livez:

        def get_livez() -> None:
            livez.sendall(b"GET /livez HTTP/1.1\r\nHost: bench\r\n\r\n")
            assert read_response(livez)[0] == 200

        out.put(probe(0.01, stop, get_livez)[0])


def case_tools(target: Server, count: int) -> dict[str, object]:
    """One authenticated tool-calls message with `count` calls; /livez every 10 ms meanwhile from another
    process, whose worst latency bounds the longest event-loop stall from outside."""
    body = tool_calls_message(count)
    head = f"POST /vapi HTTP/1.1\r\nHost: bench\r\nX-Vapi-Secret: {SECRET}\r\nContent-Type: application/json\r\n"
    raw = head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    found: multiprocessing.Queue[list[float]] = multiprocessing.Queue()
    prober = multiprocessing.Process(target=livez_prober, args=(target.address, 2.0, found), daemon=True)
    cpu_before = target.cpu_seconds()
    prober.start()
    time.sleep(0.5)
    started = time.perf_counter()
    status, answer = request(target.address, raw, timeout=600)
    elapsed = time.perf_counter() - started
    latencies = found.get(timeout=660)
    prober.join(10)
    results = json.loads(answer)["results"] if status == 200 else []
    kinds: Counter[str] = Counter("result" if "result" in r else r.get("error", "")[:50] for r in results)
    return {
        "tool_calls": count,
        "bytes": len(body),
        "status": status,
        "answer_s": round(elapsed, 3),
        "results": dict(kinds),
        "livez_meanwhile": percentiles(latencies),
        "server_cpu_s": round(target.cpu_seconds() - cpu_before, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stock", action="store_true", help="uvicorn's stock protocol instead of `serve`")
    parser.add_argument("--cases", default="header,idle,bodies,tools,pipeline,answered")
    parser.add_argument("--header-mb", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of header attack")
    parser.add_argument("--pipeline-seconds", type=float, default=10.0, help="seconds of the pipelining peer")
    parser.add_argument("--pipeline-depth", type=int, default=8, help="warm calls per write of the pipelining peer")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--wait", type=float, default=20.0, help="how long to wait for the server to close them")
    parser.add_argument("--bodies", type=int, default=300)
    parser.add_argument("--tool-calls", type=int, default=5000, help="calls in the one tool-calls message")
    parser.add_argument("--google-ms", type=float, default=20.0, help="the fake Google's answer time")
    parser.add_argument("--nofile", type=int, help="the server's open-file limit (soft and hard), e.g. 1024")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    cases = args.cases.split(",")
    results: dict[str, object] = {"server": "stock uvicorn httptools" if args.stock else "serve", "nofile": args.nofile}
    with tempfile.TemporaryDirectory() as workdir:
        for case in cases:
            # A fresh server per case: one case's leftovers (or its damage) do not colour the next.
            with contextlib.ExitStack() as stack:
                url = stack.enter_context(fake_google(args.google_ms)) if case == "tools" else None
                target = stack.enter_context(server(args.stock, Path(workdir), args.nofile, url))
                results["rss_at_start_mb"] = round(target.rss_mb(), 1)
                if case == "header":
                    results["header"] = case_header(target, args.header_mb, args.duration)
                elif case == "idle":
                    results["idle"] = case_idle(target, args.connections, args.wait)
                elif case == "bodies":
                    results["bodies"] = case_bodies(target, args.bodies)
                elif case == "tools":
                    results["tools"] = case_tools(target, args.tool_calls)
                elif case == "pipeline":
                    results["pipeline"] = case_pipeline(target, args.pipeline_seconds, args.pipeline_depth)
                elif case == "answered":
                    results["answered"] = case_answered(target, args.connections)
                else:
                    raise SystemExit(f"unknown case {case!r}")
                print(json.dumps({case: results[case]}, indent=2), flush=True)
    results["load_average"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
