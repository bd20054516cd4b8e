"""The assistant-request path, top to bottom: route the call, find the calendar, build the answer.

HTTP lives in `proxy.app`; this module turns a checked Vapi message into the JSON Vapi gets back.
Whatever happens in here, the caller gets something Vapi can use: an assistant, a transfer, or a
spoken error, always inside the configured deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx
import orjson

from proxy.calendar.abuse import CallCounts
from proxy.calendar.google import GoogleCalendar
from proxy.calendar.locks import LocalUserLocks, UserLocks
from proxy.calendar.microsoft import MicrosoftCalendar
from proxy.calendar.provider import CalendarProvider
from proxy.config import Config, Fallback, FallbackKind, Route
from proxy.config.calendar import CalendarSettings
from proxy.config.providers import ProviderKind
from proxy.config.snapshot import InboundCall, Match, Rule
from proxy.logs import CALL_LOGGER, CallLog
from proxy.metrics import Metrics
from proxy.nango.client import RequestGate
from proxy.nango.directory import ConnectionDirectory, Lookup
from proxy.nango.lines import LineMatch, route_source, tagged_route
from proxy.secret import Secret
from proxy.vapi.assistant import LAST_RESORT_ERROR, calendar_assistant, fallback_answer, proxied
from proxy.vapi.messages import call_line, inbound_call
from proxy.vapi.tools import CalendarContext, answer_tool_calls, failed_results, not_served_results, owns_any

# Vapi waits 20 s for a tool by default (server.timeoutSeconds); answer well inside that.
TOOL_CALLS_TIMEOUT_SECONDS = 10.0

# Time kept back from the deadline for building and sending the answer after the lookup returns.
BUILD_MARGIN_SECONDS = 0.1

logger = logging.getLogger(CALL_LOGGER)

Json = dict[str, object]


@dataclass(frozen=True)
class Resolution:
    """Where a call's answer came from; `resolve` prints it and the call log records it."""

    body: bytes
    outcome: str
    reason: str
    call: InboundCall
    match: Match | None
    connection_source: str | None = None
    connection_detail: str = ""
    # Where a route made from Nango connection tags came from (empty for YAML routes).
    route_source: str = ""
    # The calendar API of the connection ("google", "microsoft"); empty when no connection was found.
    provider: str = ""

    @property
    def answer(self) -> Json:
        """The JSON Vapi gets, decoded (for `resolve` and tests; the app sends `body` as it is)."""
        decoded: Json = orjson.loads(self.body)
        return decoded

    @property
    def rule(self) -> str:
        return f"{self.match.route.name} ({self.match.rule})" if self.match is not None else "-"


def _outcome(fallback: Fallback) -> str:
    """The metric/log outcome of a fallback (the calendar assistant itself is "assistant")."""
    return {"take_message": "take_message", "transfer": "transfer"}.get(fallback.action, "rejected")


class CallService:
    """Answers assistant-requests; each call names the config snapshot it runs against."""

    def __init__(
        self,
        directory: ConnectionDirectory,
        metrics: Metrics,
        *,
        http: httpx.AsyncClient,
        gate: RequestGate | None = None,
        locks: UserLocks | None = None,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.perf_counter,
        call_log: CallLog | None = None,
    ) -> None:
        self.directory = directory
        self.metrics = metrics
        self.http = http
        # Google requests share the Nango lookups' cap and time budget (they go through Nango's proxy too).
        self.gate = gate
        self.locks: UserLocks = locks if locks is not None else LocalUserLocks()
        self.counts = CallCounts()  # what a call may do only so often (proxy.calendar.abuse)
        # Public: the fast path (proxy.http.fastpath) fills its answers' clock variables from the same clock.
        self.wall_clock = wall_clock
        self._clock = clock
        self.call_log = call_log or CallLog(logger, None)

    async def connection_for(self, route: Route, timeout: float, line: LineMatch | None = None) -> Lookup:
        user = route.user
        if user.connection_id is not None:
            self.metrics.cache_events.labels("fixed").inc()
            return Lookup(user.connection_id, "fixed")
        if line is not None:
            # The connection whose tags claim the line is the calendar: no second lookup.
            return self.directory.answer(line.connection, line.source)  # type: ignore[arg-type]
        return await self.directory.lookup(user.nango_user_id, timeout=timeout)

    def provider_of(self, config: Config, lookup: Lookup) -> tuple[str, ProviderKind]:
        """The integration and calendar API of a lookup's connection: Nango's record when the lookup has it or
        the index knows the id (a stale one), else the default integration's (a fixed `connection_id`)."""
        nango = config.nango
        conn = lookup.connection
        if conn is None and lookup.connection_id is not None:
            conn = self.directory.index.connection(lookup.connection_id)
        if conn is not None and conn.integration:
            return conn.integration, nango.kind_of(conn.integration, conn.provider)
        return nango.integration_id, nango.kind_of(nango.integration_id)

    def calendar_for(self, config: Config, integration: str, kind: ProviderKind, tz: ZoneInfo) -> CalendarProvider:
        """The provider module for a connection's calendar API, through Nango's proxy."""
        settings = config.nango
        common = {
            "nango_base_url": settings.base_url,
            "secret_key": settings.secret_key or Secret("unset"),
            "integration_id": integration,
            "timeout": settings.read_timeout * 2,
            "metrics": self.metrics,
            "gate": self.gate,
        }
        if kind == "microsoft":
            return MicrosoftCalendar(self.http, timezone=tz, **common)  # type: ignore[arg-type]
        return GoogleCalendar(self.http, **common)  # type: ignore[arg-type]

    async def route(self, config: Config, call: InboundCall, timeout: float) -> tuple[Match | None, LineMatch | None]:
        """YAML rules first; then, before a YAML default, the line's Nango connection tags (tag routing)."""
        match = config.routing.match(call)
        lines = self.directory.lines
        if lines is None or (match is not None and match.rule != "default"):
            return match, None
        line = await lines.find(call, timeout=timeout)
        if line is None:
            return match, None
        rule: Rule = "phone_number_id" if line.kind == "phone_number_id" else "to"
        return Match(tagged_route(config, line), rule), line

    async def resolve(self, config: Config, message: Json) -> Resolution:
        """Decide the answer for one assistant-request. Never raises."""
        started = self._clock()
        now = datetime.fromtimestamp(self.wall_clock(), UTC)
        call = inbound_call(message)
        match: Match | None = None
        try:
            remaining = config.server.deadline_seconds - BUILD_MARGIN_SECONDS
            match, line = await self.route(config, call, max(remaining, 0.0))
            if match is None:
                fallback = config.fallbacks.unknown_number
                answer = fallback_answer(config, fallback, None, now)
                return Resolution(answer, _outcome(fallback), "unknown_number", call, None)
            route = match.route
            source = route_source(line) if line is not None else ""
            remaining = config.server.deadline_seconds - (self._clock() - started) - BUILD_MARGIN_SECONDS
            lookup = await self.connection_for(route, max(remaining, 0.0), line)
            if lookup.connection_id is not None:
                _, api = self.provider_of(config, lookup)
                served = route if api == "google" else proxied(config, route)
                if served is not None:
                    answer = calendar_assistant(config, served, lookup.connection_id, now)
                    return Resolution(answer, "assistant", "ok", call, match, lookup.source, lookup.detail, source, api)
                detail = "a Microsoft calendar needs calendar mode proxy: no tool server is configured"
                answer = fallback_answer(config, route.fallbacks.error, route, now)
                outcome = _outcome(route.fallbacks.error)
                return Resolution(answer, outcome, "error", call, match, lookup.source, detail, source, api)
            kind: FallbackKind = "no_calendar" if lookup.source in ("negative", "unhealthy") else "error"
            fallback = route.fallbacks.get(kind)
            answer = fallback_answer(config, fallback, route, now)
            return Resolution(answer, _outcome(fallback), kind, call, match, lookup.source, lookup.detail, source)
        except Exception:
            logger.exception(
                "assistant-request failed; answering with the error fallback",
                extra={"fields": {"call_id": call.call_id}},
            )
            return self._error_resolution(config, call, match, now)

    def _error_resolution(self, config: Config, call: InboundCall, match: Match | None, now: datetime) -> Resolution:
        route = match.route if match is not None else None
        fallback = (route.fallbacks if route is not None else config.fallbacks).error
        try:
            return Resolution(
                fallback_answer(config, fallback, route, now), _outcome(fallback), "error", call, match, "error"
            )
        except Exception:
            logger.exception("error fallback failed too", extra={"fields": {"call_id": call.call_id}})
            return Resolution(orjson.dumps({"error": LAST_RESORT_ERROR}), "rejected", "error", call, match, "error")

    async def assistant_request(self, config: Config, message: Json) -> bytes:
        started = self._clock()
        resolution = await self.resolve(config, message)
        elapsed = self._clock() - started
        self.metrics.assistant_requests.labels(resolution.outcome, resolution.reason).inc()
        self.metrics.assistant_request_latency.observe(elapsed)
        call = resolution.call
        route = resolution.match.route if resolution.match is not None else None
        line = call_line(
            (call.call_id, call.to, call.phone_number_id, call.caller),
            rule=resolution.rule,
            user=route.user.id if route is not None else None,
            connection=resolution.connection_source,
            provider=resolution.provider or None,
            outcome=resolution.outcome,
            reason=resolution.reason,
            elapsed=elapsed,
        )
        self.call_log.info("assistant-request", line)
        return resolution.body

    async def tool_calls(self, config: Config, message: Json) -> Json:
        """Calendar tools in proxy mode. The user comes from the message's own call, through the same
        routing, so any replica can serve any call without remembering the assistant-request.
        Never raises: whatever breaks becomes a speakable error for each tool call."""
        try:
            if not owns_any(message):
                # Vapi sends a call here only when this is the tool's server: nobody else will answer it.
                logger.info("tool-calls for tools this proxy does not serve", extra={"fields": {}})
                return await not_served_results(message)
            return await self._tool_calls(config, message)
        except Exception:
            logger.exception("tool-calls failed; answering with a speakable error")
            return failed_results(message)

    async def _tool_calls(self, config: Config, message: Json) -> Json:
        started = self._clock()
        call = inbound_call(message)
        match, line = await self.route(config, call, config.server.deadline_seconds)
        route = match.route if match is not None else None
        connection_id: str | None = None
        integration, kind = config.nango.integration_id, config.nango.kind_of(config.nango.integration_id)
        if route is not None:
            lookup = await self.connection_for(route, config.server.deadline_seconds, line)
            integration, kind = self.provider_of(config, lookup)
            # A Google user in native mode has Vapi's own tools: these calls are not for that user's calendar.
            if route.calendar.mode == "proxy" or kind != "google":
                connection_id = lookup.connection_id
        ctx = CalendarContext(
            user_id=route.user.id if route is not None else "",
            user_name=route.user.name if route is not None else "",
            timezone=route.user.timezone if route is not None else config.timezone,
            connection_id=connection_id if config.nango.secret_key is not None else None,
            settings=route.calendar.settings if route is not None else CalendarSettings(),
            # Bookings are idempotent per call id: a message without one must not share "-" with others.
            call_id=call.call_id if call.call_id != "-" else _tool_call_key(message),
            caller_number=call.caller,
        )
        calendar = self.calendar_for(config, integration, kind, ctx.timezone)
        remaining = TOOL_CALLS_TIMEOUT_SECONDS - (self._clock() - started)
        answer = await answer_tool_calls(
            message,
            ctx,
            calendar,
            self.metrics,
            now=datetime.fromtimestamp(self.wall_clock(), UTC),
            timeout=remaining,
            max_calls=config.server.max_tool_calls,
            locks=self.locks,
            counts=self.counts,
        )
        logger.info(
            "tool-calls",
            extra={
                "fields": {
                    "call_id": call.call_id,
                    "user": ctx.user_id or None,
                    "rule": f"{match.route.name} ({match.rule})" if match is not None else "-",
                    # The state the tools acted on, named as vapi_proxy_tool_calls_total counts it.
                    "calendar": calendar_state(ctx),
                    "provider": kind if connection_id else None,
                    "latency_ms": round((self._clock() - started) * 1000, 2),
                }
            },
        )
        return answer


def calendar_state(ctx: CalendarContext) -> str:
    """What the tools found: no route, no usable connection (none found, or no Nango key to reach it), or one."""
    if not ctx.user_id:
        return "no_route"
    return "connected" if ctx.connection_id is not None else "not_connected"


def _tool_call_key(message: Json) -> str:
    calls = message.get("toolCallList")
    first = calls[0] if isinstance(calls, list) and calls else None
    tool_call_id = first.get("id") if isinstance(first, dict) else None
    return f"tool-call-{tool_call_id}" if isinstance(tool_call_id, str) and tool_call_id else "unknown-call"
