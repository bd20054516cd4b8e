"""Run the app under uvicorn with a graceful drain (one `Drain`): not ready first, then stop, then exit."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from proxy.agency import create_agency_app
from proxy.app import create_app
from proxy.config import Agency, Config, ConfigError, load_deployment
from proxy.http.connections import ConnectionLimits, LimitedConfig, connection_cap
from proxy.http.uvicorn_hooks import lane_status, missing, run_workers
from proxy.logs import LogFormat, configure_logging
from proxy.runtime import Runtime, Tenants
from proxy.startup import StartupListener, loaded_summary

CONFIG_ENV = "VAPI_CALENDAR_PROXY_CONFIG"
INSECURE_ENV = "VAPI_CALENDAR_PROXY_INSECURE"
LOG_FORMAT_ENV = "VAPI_CALENDAR_PROXY_LOG_FORMAT"
LOG_LEVEL_ENV = "VAPI_CALENDAR_PROXY_LOG_LEVEL"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

logger = logging.getLogger(__name__)


class Drain:
    """The one drain, for a server we construct (`DrainingServer`) and for uvicorn's worker processes
    (`drain_on_signals`): on the first SIGTERM/SIGINT /readyz turns 503 while requests are still served for
    `shutdown_delay_seconds` (so load balancers stop sending new calls), then `stop(signal, False)` lets
    uvicorn's own shutdown close the listener and wait for in-flight requests. A second signal calls
    `stop(signal, True)` at once."""

    def __init__(
        self, runtime: Runtime | Tenants, loop: asyncio.AbstractEventLoop, stop: Callable[[int, bool], object]
    ) -> None:
        self.runtime = runtime
        self.loop = loop
        self.stop = stop

    def signal(self, sig: int) -> None:
        """From a signal handler: the first signal drains, a second one stops at once."""
        if self.runtime.draining:
            self.stop(sig, True)
            return
        self.runtime.draining = True
        self.loop.call_soon_threadsafe(self._drain, sig)

    def _drain(self, sig: int) -> None:
        delay = self.runtime.config.server.shutdown_delay_seconds
        logger.info("draining", extra={"fields": {"signal": signal.Signals(sig).name, "delay_s": delay}})
        self.loop.call_later(delay, self._stop, sig)

    def _stop(self, sig: int) -> None:
        logger.info("shutting down", extra={"fields": {"signal": signal.Signals(sig).name}})
        self.stop(sig, False)


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, its signals routed to the `Drain`. The process exits 0 after a clean drain."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime | Tenants) -> None:
        super().__init__(config)
        self.runtime = runtime
        self._drain: Drain | None = None

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._drain = Drain(self.runtime, asyncio.get_running_loop(), self._stop)
        await super().startup(sockets)  # type: ignore[arg-type]
        freeze_startup_objects()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not super().handle_exit: uvicorn would re-raise the signal once shut down, so a clean drain
        # would end in death by SIGTERM instead of exit status 0.
        if self._drain is None:
            self.should_exit = True  # before start-up: nothing to drain
            return
        self._drain.signal(sig)

    def _stop(self, sig: int, at_once: bool) -> None:
        self.force_exit = at_once
        self.should_exit = True


def drain_timeout(config: Config | Agency) -> int:
    """uvicorn's graceful-shutdown budget (whole seconds): 0 cancels in-flight requests at once."""
    return math.ceil(config.server.drain_seconds)


def uvicorn_config(config: Config | Agency, app: object, **kwargs: Any) -> LimitedConfig:
    """uvicorn's settings from the `server:` section: connection limits, keep-alive, forwarded headers."""
    server = config.server
    cap = connection_cap(server.max_connections)
    if cap < server.max_connections:
        logger.warning(
            "connection cap lowered to fit the open-file limit",
            extra={"fields": {"max_connections": server.max_connections, "cap": cap}},
        )
    absent = missing()
    if absent:
        # pyproject's floor keeps such a uvicorn out; installed anyway, it serves, without the lane.
        logger.warning(
            "uvicorn lacks hooks the lane needs",
            extra={"fields": {"missing": ",".join(absent), "lane": lane_status()}},
        )
    limits = ConnectionLimits(
        max_header_bytes=server.max_header_bytes,
        header_timeout=server.header_timeout_seconds,
        body_timeout=server.body_timeout_seconds,
        send_timeout=server.send_timeout_seconds,
        max_connections=cap,
        max_connections_per_address=server.max_connections_per_address,
        trusted_peers=tuple(server.forwarded_allow_ips),
    )
    return LimitedConfig(
        app,
        limits=limits,
        log_config=None,
        timeout_graceful_shutdown=drain_timeout(config),
        # The proxy logs each call itself; uvicorn would build an access-log line's arguments per request.
        access_log=False,
        timeout_keep_alive=server.keepalive_timeout_seconds,  # typed int in uvicorn; it only reaches call_later
        # Forwarded headers rewrite the client address and scheme: believed only from the listed peers.
        proxy_headers=bool(server.forwarded_allow_ips),
        forwarded_allow_ips=list(server.forwarded_allow_ips),
        **kwargs,
    )


def serve(
    config: Config | Agency,
    *,
    host: str,
    port: int,
    workers: int,
    insecure: bool,
    log_format: LogFormat,
    log_level: str = "INFO",
    listener: StartupListener | None = None,
) -> int:
    """`listener`: the socket opened before the config loaded (one worker); uvicorn takes it over."""
    listen = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    logger.info("config loaded", extra={"fields": {"listen": listen, **loaded_summary(config, insecure=insecure)}})
    if workers > 1:
        # Each worker process builds its own app from the file: uvicorn forks before the app exists.
        os.environ[CONFIG_ENV] = config.file
        os.environ[INSECURE_ENV] = "1" if insecure else ""
        os.environ[LOG_FORMAT_ENV] = log_format
        os.environ[LOG_LEVEL_ENV] = log_level
        # What uvicorn.run does for workers, with our config (uvicorn.run cannot take a Config).
        multi = uvicorn_config(
            config, "proxy.server:app_from_environment", factory=True, host=host, port=port, workers=workers
        )
        with shared_metrics_directory():
            run_workers(multi)
        return 0
    if isinstance(config, Agency):
        app = create_agency_app(config, insecure=insecure, config_path=config.file)
    else:
        app = create_app(config, insecure=insecure, config_path=config.file)
    uv_config = uvicorn_config(config, app, host=host, port=port, lifespan="on")
    runtime: Runtime | Tenants = app.state.runtime
    server = DrainingServer(uv_config, runtime)
    server.run(sockets=None if listener is None else [listener.handoff()])
    return 0


@contextlib.contextmanager
def shared_metrics_directory() -> Iterator[None]:
    """Workers count into one directory (prometheus-client's multiprocess mode), so /metrics shows the
    whole server's totals whichever worker answers the scrape. A directory set by the operator is kept."""
    if os.environ.get(MULTIPROCESS_ENV):
        yield
        return
    directory = tempfile.mkdtemp(prefix="vapi-calendar-proxy-metrics-")
    os.environ[MULTIPROCESS_ENV] = directory  # read by prometheus_client when a worker imports it
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_ENV]
        shutil.rmtree(directory, ignore_errors=True)


def app_from_environment() -> Starlette:
    """The app of one worker process (`serve --workers N`, or uvicorn run directly, as bench/run.py does)."""
    configure_logging(os.environ.get(LOG_FORMAT_ENV, "json"), os.environ.get(LOG_LEVEL_ENV, "INFO"))  # type: ignore[arg-type]
    path = os.environ[CONFIG_ENV]
    insecure = bool(os.environ.get(INSECURE_ENV))
    loaded = load_deployment(path)
    if isinstance(loaded, Agency):
        if loaded.errors:  # as `serve`: an agency starts with every tenant valid
            raise ConfigError(loaded.issues)
        app = create_agency_app(loaded, insecure=insecure, config_path=path)
    else:
        app = create_app(loaded, insecure=insecure, config_path=path)
    drain_on_signals(app)
    freeze_startup_objects()
    return app


def freeze_startup_objects() -> None:
    """Exclude what exists after start-up (modules, the config snapshot with up to 100k users) from garbage
    collection: it lives as long as the process, and a full collection walking it held the event loop for
    30-100 ms while a large tool-calls message was answered (bench/tool_flood.py; the bound is 50 ms)."""
    gc.freeze()


def drain_on_signals(app: Starlette) -> None:
    """The `Drain` for a server we do not construct (uvicorn's workers run its plain Server): while the app
    runs, a handler in front of uvicorn's own drains on the first SIGTERM/SIGINT and passes the signal on to
    uvicorn when the drain ends (a second one passes at once)."""
    runtime: Runtime | Tenants = app.state.runtime
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
        # The app's lifespan state is passed on: uvicorn's protocols read the refusal counter and the fast lane in it.
        async with inner(app) as state:
            passed_on: dict[int, Callable[[int, FrameType | None], object]] = {}
            drain = Drain(runtime, asyncio.get_running_loop(), lambda sig, at_once: passed_on[sig](sig, None))

            def on_signal(sig: int, frame: FrameType | None) -> None:
                drain.signal(sig)

            # Only the main thread may set handlers; uvicorn restores its own when it stops capturing signals.
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    handler = signal.getsignal(sig)
                    if callable(handler):
                        passed_on[sig] = handler
                        signal.signal(sig, on_signal)
            yield state or {}

    app.router.lifespan_context = lifespan
