"""Run the app under uvicorn with a graceful drain: not ready first, then stop, then exit."""

from __future__ import annotations

import asyncio
import os
import signal
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from proxy.app import Runtime, create_app
from proxy.config import Config, load_config
from proxy.logs import LogFormat, configure_logging, get_logger

CONFIG_ENV = "VAPI_CALENDAR_PROXY_CONFIG"
INSECURE_ENV = "VAPI_CALENDAR_PROXY_INSECURE"
LOG_FORMAT_ENV = "VAPI_CALENDAR_PROXY_LOG_FORMAT"

logger = get_logger("server")


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT: /readyz turns 503 while requests are still served for
    `shutdown_delay` seconds (so load balancers stop sending new calls), then uvicorn's own shutdown
    waits for in-flight requests. A second signal exits at once."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime, shutdown_delay: float) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.shutdown_delay = shutdown_delay
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.runtime.draining or self._loop is None:
            super().handle_exit(sig, frame)
            return
        self.runtime.draining = True
        logger.info("draining", extra={"fields": {"signal": signal.Signals(sig).name, "delay_s": self.shutdown_delay}})
        self._loop.call_soon_threadsafe(self._loop.call_later, self.shutdown_delay, self._exit, sig, frame)

    def _exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)


def serve(config: Config, *, host: str, port: int, workers: int, insecure: bool, log_format: LogFormat) -> int:
    if workers > 1:
        # Each worker process builds its own app from the file: uvicorn forks before the app exists.
        os.environ[CONFIG_ENV] = config.file
        os.environ[INSECURE_ENV] = "1" if insecure else ""
        os.environ[LOG_FORMAT_ENV] = log_format
        uvicorn.run(
            "proxy.server:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            timeout_graceful_shutdown=int(config.server.drain_seconds) or None,
        )
        return 0
    app = create_app(config, insecure=insecure, config_path=config.file)
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=int(config.server.drain_seconds) or None,
    )
    runtime: Runtime = app.state.runtime
    server = DrainingServer(uv_config, runtime, config.server.shutdown_delay_seconds)
    server.run()
    return 0


def app_from_environment() -> Starlette:
    configure_logging(os.environ.get(LOG_FORMAT_ENV, "json"))  # type: ignore[arg-type]
    path = os.environ[CONFIG_ENV]
    return create_app(load_config(path), insecure=bool(os.environ.get(INSECURE_ENV)), config_path=path)
