"""Agency mode's app: many businesses from one deployment, each tenant addressed by its own paths.

A tenant's Vapi server URL is `<server.path>/<tenant>` and its Nango webhook URL
`<server.webhook_path>/<tenant>`; the path selects the tenant's `Runtime` (proxy.runtime), and from there
on a request is handled exactly as in a deployment of one business, with that tenant's snapshot,
credentials, caches, budgets and shared state. Nothing is looked up across tenants: a request at one
tenant's path is authenticated with that tenant's credentials only, and an unknown tenant is a 404 that
names none of the others.
"""

from __future__ import annotations

import contextlib
import logging
import os

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.app import (
    answer_vapi,
    answer_webhook,
    config_error_summary,
    json_response,
    livez,
    readiness,
    serving_lifespan,
)
from proxy.config import Agency
from proxy.http.fastpath import FastPathApp
from proxy.logs import CALL_LOGGER, CallLog, tenant_context
from proxy.metrics import CONTENT_TYPE_LATEST, Metrics, render_tenants
from proxy.runtime import Runtime, Tenants
from proxy.shared import RedisSettings

__all__ = ["create_agency_app"]

NOT_FOUND = {"error": "not found"}


def create_agency_app(
    agency: Agency,
    *,
    insecure: bool = False,
    metrics: Metrics | None = None,
    http_client: httpx.AsyncClient | None = None,
    config_path: str | None = None,
    fast_path: bool = True,
    redis: RedisSettings | None = None,
) -> Starlette:
    """`create_app` for an agency file: the same options, per tenant. `redis`: by default the agency
    file's `redis` section, then `REDIS_URL`; each tenant's keys under its own prefix."""
    if redis is None:
        redis = RedisSettings.from_config(agency.redis, os.environ)
    tenants = Tenants(config=agency, metrics=metrics or Metrics(), insecure=insecure)
    calls = logging.getLogger(CALL_LOGGER)

    def selected(request: Request) -> Runtime | None:
        runtime = tenants.runtimes.get(request.path_params["tenant"])
        return runtime if runtime is not None and runtime.service is not None else None

    async def vapi(request: Request) -> Response:
        runtime = selected(request)
        if runtime is None:
            return json_response(NOT_FOUND, 404, close=True)
        with tenant_context(runtime.config.tenant):
            return await answer_vapi(runtime, request, tenants)

    async def nango_webhook(request: Request) -> Response:
        runtime = selected(request)
        if runtime is None:
            return json_response(NOT_FOUND, 404, close=True)
        with tenant_context(runtime.config.tenant):
            return await answer_webhook(runtime, request, tenants)

    async def readyz(request: Request) -> Response:
        started = all(runtime.service is not None for runtime in tenants.runtimes.values())
        ready = not tenants.draining and started
        body: dict[str, object] = {
            "status": "ready" if ready else ("draining" if tenants.draining else "starting"),
            "config": {"file": tenants.config.file, "version": tenants.config.version},
            "config_error": config_error_summary(tenants.config_error),
            # Per tenant, as for one business: locations of errors, never their text.
            "tenants": {tenant: readiness(runtime) for tenant, runtime in sorted(tenants.runtimes.items())},
            "not_started": {tenant: config_error_summary(error) for tenant, error in sorted(tenants.errors.items())},
        }
        return json_response(body, 200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        by_tenant = {tenant: runtime.metrics for tenant, runtime in tenants.runtimes.items()}
        return Response(render_tenants(tenants.metrics, by_tenant), media_type=CONTENT_TYPE_LATEST)

    def call_log(tenant: str) -> CallLog:
        return CallLog.for_logger(calls, tenant)

    def start(http: httpx.AsyncClient) -> None:
        tenants.start(http, call_log, redis)

    def closed() -> None:
        for runtime in tenants.runtimes.values():
            runtime.metrics.close()
        tenants.metrics.close()

    def lifespan(app: Starlette) -> contextlib.AbstractAsyncContextManager[dict[str, object]]:
        nango = [config.nango for config in agency.tenants.values()]
        return serving_lifespan(app, tenants, http_client, nango, start, closed, config_path)

    server = agency.server
    app = FastPathApp(
        routes=[
            Route(f"{server.path.rstrip('/')}/{{tenant}}", vapi, methods=["POST"]),
            Route(f"{server.webhook_path}/{{tenant}}", nango_webhook, methods=["POST"]),
            Route("/livez", livez, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = tenants
    if fast_path:

        def serve_fast(runtime: Runtime) -> None:
            assert runtime.service is not None and runtime.service.call_log is not None
            app.add_fast_path(runtime, runtime.service.call_log, path=runtime.config.server.path)

        def stop_fast(runtime: Runtime) -> None:
            if app.fast_path is not None:
                app.fast_path.stop_serving(runtime.config.server.path)

        tenants.on_start.append(serve_fast)
        tenants.on_stop.append(stop_fast)
    return app
