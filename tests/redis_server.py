"""A real redis-server (Debian's package) for the tests: started on a free loopback port in a temp dir,
and killed, paused or restarted empty on demand; optionally TLS-only and with an ACL user."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import free_port

INSTALL_HINT = "redis-server not found on PATH: apt-get install redis-server (CI installs it in .ci/run)"
OPENSSL_HINT = "openssl not found on PATH: apt-get install openssl (CI installs it in .ci/run)"
NO_TLS = "the installed redis-server was built without TLS support (no --tls-port)"


def make_certificates(directory: Path) -> Path:
    """A throwaway CA and a certificate it signs for 127.0.0.1 and localhost (openssl CLI, P-256, one day):
    `ca.pem`, `server.pem`, `server.key` in `directory`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail(OPENSSL_HINT)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    signed = ["-out", "server.pem", "-days", "1", "-extfile", "server.ext"]
    steps = [
        ["req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test CA"],
        ["req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", *signed],
    ]
    for step in steps:
        subprocess.run([openssl, *step], cwd=directory, check=True, capture_output=True, timeout=30)
    return directory


class RedisServer:
    """One redis-server process; `url` stays the same across restarts (same port, password and certificates).

    `tls`: TLS only (no plain-text port), with a certificate from a CA made for the test (`ca_file`).
    `user`: an ACL user with `password`, allowed only the proxy's default key prefix; the default user is off."""

    def __init__(
        self, directory: Path, *, password: str | None = None, user: str | None = None, tls: bool = False
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(INSTALL_HINT)
        self.binary = binary
        self.directory = directory
        self.password = password
        self.user = user
        self.tls = tls
        self.certificates = make_certificates(directory / "tls") if tls else None
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        assert self.certificates is not None
        return self.certificates / "ca.pem"

    @property
    def url(self) -> str:
        return self.url_with(self.password)

    def url_with(self, password: str | None, *, trust: bool = True) -> str:
        """The URL with another password; `trust=False` leaves out the test CA (the system's CAs only)."""
        auth = f"{quote(self.user or '', safe='')}:{quote(password, safe='')}@" if password else ""
        scheme = "rediss" if self.tls else "redis"
        query = f"?ssl_ca_certs={quote(str(self.ca_file))}" if self.tls and trust else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0{query}"

    def start(self) -> None:
        argv = [self.binary, "--bind", "127.0.0.1", "--dir", str(self.directory)]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        if self.tls:
            assert self.certificates is not None
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            argv += ["--tls-cert-file", str(self.certificates / "server.pem")]
            argv += ["--tls-key-file", str(self.certificates / "server.key")]
            argv += ["--tls-ca-cert-file", str(self.ca_file)]
        else:
            argv += ["--port", str(self.port)]
        if self.user:
            # What docs/scaling.md advises: the proxy's keys and channels only, no admin commands.
            rules = ["on", f">{self.password}", "~vapi-proxy:*", "&vapi-proxy:*", "+@all", "-@dangerous", "+info"]
            argv += ["--user", self.user, *rules, "--user", "default", "off"]
        elif self.password:
            argv += ["--requirepass", self.password]
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if self.tls and "tls" in self.log().lower():
                    pytest.skip(NO_TLS)
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"redis-server did not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: connections drop, everything in memory is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections (the kernel does), nothing is answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Killed and started again on the same port, empty."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
        self.kill()
