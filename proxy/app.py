"""App wiring: HTTP in (Vapi, Nango webhooks, probes, metrics), one shared httpx client out.

All mutable state lives on one `Runtime` per app instance (in agency mode, one per tenant: proxy.agency);
a config reload replaces `runtime.config` in a single assignment, and each request keeps the snapshot it
started with.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.config import Config, ConfigError, NangoSettings
from proxy.http.bodies import read_body
from proxy.http.connections import CONNECTION_REFUSALS
from proxy.http.fastpath import FastPathApp
from proxy.http.lane import FAST_LANE
from proxy.http.uvicorn_hooks import lane_status
from proxy.logs import CALL_LOGGER, CallLog, call_context
from proxy.metrics import CONTENT_TYPE_LATEST, Metrics
from proxy.nango.webhooks import handle_nango_webhook
from proxy.reload import ConfigWatcher
from proxy.runtime import Runtime, Tenants
from proxy.shared import RedisSettings
from proxy.vapi.auth import authenticate, authenticate_headers
from proxy.vapi.messages import BadRequest, call_id_of, message_type_label, parse_message

logger = logging.getLogger(__name__)

# Message types Vapi expects an answer to; everything else is a notification acknowledged with {}.
ASSISTANT_REQUEST = "assistant-request"
TOOL_CALLS = "tool-calls"
READYZ_ERROR_LOCATIONS = 20


def json_response(content: object, status_code: int = 200, *, close: bool = False) -> Response:
    """`close`: the connection is closed after the answer (a refusal that left the body unread)."""
    headers = {"connection": "close"} if close else None
    return Response(orjson.dumps(content), status_code=status_code, headers=headers, media_type="application/json")


async def read_request_body(request: Request, config: Config) -> bytes:
    return await read_body(request.receive, config.server.max_body_bytes, request.headers.get("content-length"))


async def read_unauthenticated(request: Request, config: Config, holder: Runtime | Tenants) -> bytes:
    """A body that must be read before it can be authenticated: at most
    `server.max_unauthenticated_body_reads` at once (in agency mode, across all tenants), so
    unauthenticated peers hold at most that many times `max_body_bytes` of memory, however many of them
    there are, and an eighth of them for one client address, so that unfinished bodies from a few cannot
    starve signed requests from others."""
    client = _client(request)
    if not holder.unauthenticated_reads.enter(client, config.server.max_unauthenticated_body_reads):
        raise BadRequest("too many unauthenticated requests in progress; retry shortly", 503)
    try:
        return await read_request_body(request, config)
    finally:
        holder.unauthenticated_reads.leave(client)


async def answer_vapi(runtime: Runtime, request: Request, holder: Runtime | Tenants) -> Response:
    """One Vapi server message to `runtime` (the app's, or the tenant's its path names)."""
    config = runtime.config
    auth_settings = config.auth
    if runtime.insecure and not auth_settings.configured:
        auth_settings = type(auth_settings)(insecure=True)
    # A shared secret or bearer token is checked before a byte of the body is read; only HMAC needs it.
    result = authenticate_headers(auth_settings, headers=request.headers)
    body = b""
    try:
        if result is None:
            body = await read_unauthenticated(request, config, holder)
            # HMAC payloads may sign the URL: the public one Vapi called, not the one seen behind a load
            # balancer. Building request.url costs more than the rest of authentication: only when signed.
            url = ""
            if auth_settings.hmac is not None and "{url}" in auth_settings.hmac.payload_format:
                url = config.server.public_url + config.server.path if config.server.public_url else str(request.url)
            result = authenticate(
                auth_settings, method=request.method, url=url, headers=request.headers, body=body, now=time.time()
            )
        elif result.ok:
            body = await read_request_body(request, config)
    except BadRequest as exc:
        return json_response({"error": exc.reason}, exc.status_code, close=result is None)
    if not result.ok:
        runtime.metrics.assistant_requests.labels("unauthorised", result.reason).inc()
        logger.warning("unauthorised request", extra={"fields": {"reason": result.reason, "client": _client(request)}})
        # Closed: whatever of the body is still coming is not worth reading.
        return json_response({"error": "unauthorized"}, 401, close=True)
    try:
        message = parse_message(body)
    except BadRequest as exc:
        return json_response({"error": exc.reason}, exc.status_code)
    message_type = str(message["type"])
    runtime.metrics.server_messages.labels(message_type_label(message_type)).inc()
    assert runtime.service is not None
    with call_context(call_id_of(message)):  # every log line about this call, from any module
        if message_type == ASSISTANT_REQUEST:
            answer = await runtime.service.assistant_request(config, message)
            return Response(answer, media_type="application/json")
        if message_type == TOOL_CALLS:
            return json_response(await runtime.service.tool_calls(config, message))
    return json_response({})


async def answer_webhook(runtime: Runtime, request: Request, holder: Runtime | Tenants) -> Response:
    """One Nango webhook, checked with `runtime`'s signing keys and applied to its directory only."""
    config = runtime.config
    try:
        body = await read_unauthenticated(request, config, holder)  # the signature covers the body
    except BadRequest as exc:
        return json_response({"error": exc.reason}, exc.status_code, close=True)
    nango = config.nango
    keys = nango.webhook_signing_keys or ((nango.secret_key,) if nango.secret_key else ())
    assert runtime.directory is not None
    status, content = await handle_nango_webhook(
        body,
        request.headers,
        directory=runtime.directory,
        keys=keys,
        integration_id=nango.integration_ids(),
        user_tag=nango.user_tag,
        metrics=runtime.metrics,
    )
    return json_response(content, status)


def readiness(runtime: Runtime) -> dict[str, object]:
    """What /readyz tells about one runtime's config, Nango and shared state."""
    return {
        "config": {
            "file": runtime.config.file,
            "version": runtime.config.version,
            "users": len(runtime.config.users),
            "routes": len(runtime.config.routes),
        },
        "config_error": config_error_summary(runtime.config_error),
        "nango": runtime.directory.status() if runtime.directory is not None else None,
        "shared": runtime.cluster.status() if runtime.cluster is not None else None,
    }


async def livez(request: Request) -> Response:
    return json_response({"status": "ok"})


def http_client_for(*settings: NangoSettings) -> httpx.AsyncClient:
    """The one shared client: each wait as long as the most patient Nango environment allows."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(max(s.read_timeout for s in settings), connect=max(s.connect_timeout for s in settings)),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )


def create_app(
    config: Config,
    *,
    insecure: bool = False,
    metrics: Metrics | None = None,
    http_client: httpx.AsyncClient | None = None,
    config_path: str | None = None,
    fast_path: bool = True,
    redis: RedisSettings | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The ASGI app. `http_client` lets tests inject a transport; by default the app owns one.
    `fast_path=False` leaves out proxy.http.fastpath (tests compare the two). `redis`: the shared state of
    several replicas; by default the config's `redis` section, then `REDIS_URL` (neither: none). `clock`: what
    the Nango directory's caches and breaker count time with (tests move one by hand).
    An agency file's app is `proxy.agency.create_agency_app`."""
    redis_settings = redis if redis is not None else RedisSettings.from_config(config.redis, os.environ)
    runtime = Runtime(config=config, metrics=metrics or Metrics(), insecure=insecure, clock=clock)
    runtime.metrics.set_config_version(config.version)
    runtime.metrics.deadline.set(config.server.deadline_seconds)
    call_log = CallLog.for_logger(logging.getLogger(CALL_LOGGER))

    async def vapi(request: Request) -> Response:
        return await answer_vapi(runtime, request, runtime)

    async def nango_webhook(request: Request) -> Response:
        return await answer_webhook(runtime, request, runtime)

    async def readyz(request: Request) -> Response:
        ready = not runtime.draining and runtime.service is not None
        body: dict[str, object] = {
            "status": "ready" if ready else ("draining" if runtime.draining else "starting"),
            **readiness(runtime),
            # Whether uvicorn's protocol may answer warm calls itself (proxy.http.uvicorn_hooks).
            "lane": lane_status() if fast_path else "off",
        }
        return json_response(body, 200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def start(http: httpx.AsyncClient) -> None:
        runtime.start(http, call_log, redis_settings)

    def closed() -> None:
        call_log.flush()
        runtime.metrics.close()

    def lifespan(app: Starlette) -> contextlib.AbstractAsyncContextManager[dict[str, object]]:
        return serving_lifespan(app, runtime, http_client, [runtime.config.nango], start, closed, config_path)

    server = config.server
    app = FastPathApp(
        routes=[
            Route(server.path, vapi, methods=["POST"]),
            Route(server.webhook_path, nango_webhook, methods=["POST"]),
            Route("/livez", livez, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    if fast_path:
        app.add_fast_path(runtime, call_log, path=server.path)
    return app


@contextlib.asynccontextmanager
async def serving_lifespan(
    app: Starlette,
    holder: Runtime | Tenants,
    http_client: httpx.AsyncClient | None,
    nango: list[NangoSettings],
    start: Callable[[httpx.AsyncClient], None],
    closed: Callable[[], None],
    config_path: str | None,
) -> AsyncIterator[dict[str, object]]:
    """The lifespan of one business's app and of an agency's alike: the one shared httpx client (unless a
    test injects one), `start` with it, the file watched; then stopped in reverse, `closed` last."""
    owns_client = http_client is None
    http = http_client or http_client_for(*nango)
    start(http)
    if config_path is not None:
        holder.watcher = ConfigWatcher(config_path, holder)
        holder.background.append(await holder.watcher.start())
    try:
        yield lifespan_state(app, holder.metrics)
    finally:
        await holder.stop()
        if owns_client:
            await http.aclose()
        closed()


def lifespan_state(app: Starlette, metrics: Metrics) -> dict[str, object]:
    """The lifespan state reaches uvicorn's protocols too: the connection limits count into it, and the
    protocol answers warm calls through the fast path without an ASGI cycle (proxy.http.lane)."""
    state: dict[str, object] = {CONNECTION_REFUSALS: metrics.connections_refused}
    if isinstance(app, FastPathApp) and app.fast_path is not None:
        state[FAST_LANE] = app.fast_path
    return state


def config_error_summary(error: ConfigError | None) -> dict[str, object] | None:
    """What /readyz (unauthenticated) tells about an invalid file: that it is invalid, where, and a hash to
    tell one broken edit from the next. The messages stay in the logs and `check`: a value quoted in
    one could be anything, a secret included."""
    if error is None:
        return None
    locations = [f"{issue.file}:{issue.line}" if issue.line else issue.file for issue in error.issues]
    return {
        "errors": len(error.issues),
        "at": locations[:READYZ_ERROR_LOCATIONS],
        "hash": hashlib.sha256(str(error).encode()).hexdigest()[:12],
    }


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "-"
