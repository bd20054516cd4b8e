"""Start-up: the port opens before the config loads, and one line says what was loaded.

Kubernetes' and Docker's start-up probes then see `/livez` 200 and `/readyz` 503 while a large routing
file is parsed, instead of "connection refused". The listening socket is handed to uvicorn as is: a
connection that arrives during the hand-over waits in the kernel's backlog, none is refused, and the
request path after start-up is uvicorn's alone (nothing here runs once the app serves).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading

import orjson

from proxy.config import Agency, Config

# Bounds for what a probe may send before the real server runs: one short request line, quickly.
MAX_REQUEST_BYTES = 4096
READ_TIMEOUT_SECONDS = 1.0
BACKLOG = 2048  # uvicorn's default


class StartupListener:
    """Listens on the serving address and answers probes from a thread until `handoff()`."""

    def __init__(self, host: str, port: int) -> None:
        # The socket uvicorn would open (IPv6 when the host has a colon, SO_REUSEADDR), without its
        # Config.bind_socket(), which logs before our logging is set up and exits the process on an error.
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(BACKLOG)
        except OSError:
            self.socket.close()
            raise
        self._wake_read, self._wake_write = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="startup-listener", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return host, port

    def handoff(self) -> socket.socket:
        """Stop answering; the still-listening socket (with any waiting connections) is the caller's."""
        self._wake_write.send(b"x")
        self._thread.join()
        self._wake_read.close()
        self._wake_write.close()
        return self.socket

    def close(self) -> None:
        self.handoff().close()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_read in ready:
                    return
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    connection, _ = self.socket.accept()
                    with connection:
                        self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        connection.settimeout(READ_TIMEOUT_SECONDS)
        try:
            head = b""
            while b"\r\n" not in head and len(head) < MAX_REQUEST_BYTES:
                chunk = connection.recv(MAX_REQUEST_BYTES - len(head))
                if not chunk:
                    return
                head += chunk
            connection.sendall(probe_response(head.split(b"\r\n", 1)[0]))
        except OSError:  # a probe that hung up or stalled: the next one will ask again
            return


def probe_response(request_line: bytes) -> bytes:
    """The answer while the config loads: alive, not ready; anything else is told to come back."""
    parts = request_line.split(b" ")
    path = parts[1].split(b"?", 1)[0] if len(parts) == 3 else b""
    if path == b"/livez":
        status, body = "200 OK", {"status": "ok"}
    elif path == b"/readyz":
        status, body = "503 Service Unavailable", {"status": "starting"}
    else:
        status, body = "503 Service Unavailable", {"error": "starting: the config is loading"}
    content = orjson.dumps(body)
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(content)}\r\n"
        "retry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + content


def loaded_summary(config: Config | Agency, *, insecure: bool) -> dict[str, object]:
    """What the start-up log line says was loaded: enough to spot a wrong file or missing secret."""
    if isinstance(config, Agency):
        users = sum(len(tenant.users) for tenant in config.tenants.values())
        return {"config": config.file, "version": config.version, "tenants": len(config.tenants), "users": users}
    auth = config.auth
    methods = [
        name
        for name, configured in (
            ("vapi_secret", bool(auth.shared_secrets)),
            ("bearer", auth.bearer is not None and bool(auth.bearer.tokens)),
            ("hmac", auth.hmac is not None and bool(auth.hmac.secrets)),
        )
        if configured
    ]
    nango = config.nango
    return {
        "config": os.fspath(config.file),
        "version": config.version,
        "users": len(config.users),
        "routes": len(config.routes),
        "auth": ",".join(methods) or ("none (--insecure)" if insecure else "none"),
        "calendar_modes": ",".join(sorted({route.calendar.mode for route in config.routes})) or "-",
        "nango": f"on ({nango.integration_id} at {nango.base_url})" if nango.secret_key else "off",
        "nango_index_refresh_s": nango.index_refresh_interval if nango.secret_key else None,
    }
