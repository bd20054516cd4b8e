"""The proxy with proxy.http.fastpath left out, for A/B runs: `python bench/run.py --general-path ...`.

The same as `proxy.server:app_from_environment`, with `create_app(..., fast_path=False)`.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from proxy.app import create_app as create_proxy_app
from proxy.config import load_config
from proxy.logs import configure_logging
from proxy.server import CONFIG_ENV, INSECURE_ENV, LOG_FORMAT_ENV, LOG_LEVEL_ENV, drain_on_signals


def create_app() -> Starlette:
    configure_logging(os.environ.get(LOG_FORMAT_ENV, "json"), os.environ.get(LOG_LEVEL_ENV, "INFO"))  # type: ignore[arg-type]
    path = os.environ[CONFIG_ENV]
    insecure = bool(os.environ.get(INSECURE_ENV))
    app = create_proxy_app(load_config(path), insecure=insecure, config_path=path, fast_path=False)
    drain_on_signals(app)
    return app
