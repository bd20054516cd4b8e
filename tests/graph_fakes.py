"""Microsoft Graph v1.0 calendars behind Nango's proxy for tests: `FakeGraph`, a calendar that validates requests
as Graph does, and `make_outlook`, a client.

Graph's rules the fake enforces (https://learn.microsoft.com/en-us/graph/api/resources/event and the pages of
calendarView, create event, update event, delete event, extended properties, throttling):
- every request body is an `event` as msgraph-sdk's generated model declares it: parsed with the model and
  written back, it must come out the same (an unknown field, a misspelt enum value or a wrong nesting is a 400);
- `calendarView` needs `startDateTime` and `endDateTime`, returns occurrences (a recurring series expanded) and
  single events overlapping the window, pages by `$top` (default 10) with an absolute `@odata.nextLink`;
- times come back in the zone `Prefer: outlook.timezone` names, else UTC, as `2026-03-03T14:00:00.0000000`;
  Nango forwards a header only as `Nango-Proxy-<Name>`: a plain `Prefer` never reaches Graph, so it is ignored;
- a POST repeating a `transactionId` of a live event answers with that event instead of a second one;
- single-value extended properties are returned only through `$expand=singleValueExtendedProperties($filter=...)`
  and found with `$filter=singleValueExtendedProperties/Any(ep: ep/id eq '...' and ep/value eq '...')`;
- DELETE removes the event (a second DELETE is 404 ErrorItemNotFound); PATCH answers the whole event;
- errors are `{"error": {"code", "message", "innerError"}}`; throttling is 429 with `Retry-After` (seconds);
- Nango's proxy needs `Connection-Id` and `Provider-Config-Key` headers.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import respx
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from kiota_serialization_json.json_serialization_writer_factory import JsonSerializationWriterFactory
from msgraph.generated.models.event import Event as GraphEvent

from proxy.calendar.microsoft import MicrosoftCalendar
from proxy.calendar.windowszones import zone_named
from proxy.metrics import Metrics
from proxy.nango.client import RequestGate
from proxy.secret import Secret
from tests.helpers import longest_chain
from tests.nango_fakes import BASE_URL, SECRET_KEY

OUTLOOK_INTEGRATION = "outlook-calendar"
NEW_YORK = ZoneInfo("America/New_York")
ROOT = f"{BASE_URL}/proxy/v1.0"
_CALENDAR = r"^/proxy/v1\.0/me/(calendar|calendars/[^/]+)"
_ANY = re.compile(
    r"singleValueExtendedProperties/Any\(ep: ep/id eq '(?P<id>[^']+)' and ep/value eq '(?P<v>(?:[^']|'')*)'\)"
)
_EXPAND = re.compile(r"singleValueExtendedProperties\(\$filter=(?P<ids>.+)\)")


def make_outlook(
    http: httpx.AsyncClient,
    metrics: Metrics | None = None,
    timeout: float = 5.0,
    timezone: ZoneInfo = NEW_YORK,
    gate: RequestGate | None = None,
    sleep: Callable[[float], Any] | None = None,
) -> MicrosoftCalendar:
    extra = {"sleep": sleep} if sleep is not None else {}
    return MicrosoftCalendar(
        http,
        nango_base_url=BASE_URL + "/",
        secret_key=Secret(SECRET_KEY),
        integration_id=OUTLOOK_INTEGRATION,
        timeout=timeout,
        timezone=timezone,
        metrics=metrics,
        gate=gate,
        **extra,
    )


def graph_error(status: int, code: str, message: str, retry_after: int | None = None) -> httpx.Response:
    inner = {"date": "2026-03-02T16:00:00", "request-id": "3f1a", "client-request-id": "3f1a"}
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return httpx.Response(
        status, json={"error": {"code": code, "message": message, "innerError": inner}}, headers=headers
    )


def not_found() -> httpx.Response:
    return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")


class Invalid(Exception):
    """A request Graph would refuse with 400."""


# Enum-typed fields of the bodies the proxy sends: their values matter to the model, other strings do not.
_ENUMS = frozenset({"showAs", "contentType", "type", "importance", "sensitivity"})


def check_event_body(body: object) -> None:
    """Raise Invalid unless msgraph-sdk's `event` model reads `body` and writes it back unchanged.

    The model's verdict depends on keys, nesting and enum values only, so it is asked once per shape (kiota
    builds each model's field table anew per object, a tenth of a second per event)."""
    if not isinstance(body, dict):
        raise Invalid("Empty Payload. JSON content expected.")
    _check_shape(json.dumps(_shape(body), sort_keys=True))


def _shape(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    if isinstance(value, str) and key not in _ENUMS:
        return "x"
    return value


@functools.cache
def _check_shape(text: str) -> None:
    body = json.loads(text)
    node = JsonParseNodeFactory().get_root_parse_node("application/json", json.dumps(body).encode())
    parsed = node.get_object_value(GraphEvent)
    unknown = _unknown_fields(parsed)
    if unknown:
        raise Invalid(f"The property '{unknown[0]}' does not exist on type 'microsoft.graph.event'.")
    writer = JsonSerializationWriterFactory().get_serialization_writer("application/json")
    writer.write_object_value(None, parsed)
    again = _without_odata_type(json.loads(writer.get_serialized_content()))
    if again != body:
        raise Invalid(f"Invalid event payload: {body!r} reads back as {again!r}")


def warm_models() -> None:
    """Build kiota's model tables once (seconds of pydantic work on first use), so no test's first request
    to the fake stalls the event loop past a tool call's deadline."""
    check_event_body({"subject": "warm", "start": {"dateTime": "2026-03-03T14:00:00", "timeZone": "UTC"}})


def _unknown_fields(model: object) -> list[str]:
    """Fields a model did not declare (kiota keeps them in `additional_data`), at any depth."""
    found = [k for k in getattr(model, "additional_data", None) or {} if k != "@odata.type"]
    for value in vars(model).values() if hasattr(model, "__dict__") else ():
        for item in value if isinstance(value, list) else [value]:
            if hasattr(item, "additional_data"):
                found += _unknown_fields(item)
    return found


def _without_odata_type(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_odata_type(v) for k, v in value.items() if k != "@odata.type"}
    if isinstance(value, list):
        return [_without_odata_type(v) for v in value]
    return value


def _read(value: dict[str, str]) -> datetime:
    zone = zone_named(value.get("timeZone", "UTC"))
    if zone is None:
        raise Invalid(f"A valid TimeZone value must be specified: {value.get('timeZone')!r}")
    try:
        moment = datetime.fromisoformat(value["dateTime"])
    except (KeyError, ValueError):
        raise Invalid("Cannot convert the literal to the expected type 'Edm.DateTime'") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)


def _window(params: httpx.QueryParams, name: str) -> datetime:
    text = params.get(name)
    if text is None:
        raise Invalid(
            "This request requires a time window specified by the query string parameters "
            "StartDateTime and EndDateTime."
        )
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class FakeGraph:
    """Graph calendars behind Nango's proxy, as respx routes keeping events in memory (see the module doc).

    Events are stored with UTC instants under `_start`/`_end`. `latency` delays every answer (a create stores
    its event halfway); `fail[op]` answers with that response or raises that exception (ops: view, list,
    insert, patch, delete); `throttle[op] = n` answers the next n requests of op with 429 and Retry-After 1.
    """

    def __init__(self, mock: respx.MockRouter, *, latency: float | Callable[[], float] = 0.0) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, httpx.Response | Exception] = {}
        self.throttle: dict[str, int] = {}
        self.latency = latency
        self.bodies: list[dict[str, Any]] = []
        self.log: list[tuple[str, float, float]] = []  # (op, sent, answered) on the loop's clock
        self.clock = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
        self._ids = itertools.count(1)
        self._router = mock
        host = BASE_URL.removeprefix("https://")
        self.view = mock.route(method="GET", host=host, path__regex=_CALENDAR + "/calendarView$").mock(
            side_effect=self._view
        )
        self.list = mock.route(method="GET", host=host, path__regex=_CALENDAR + "/events$").mock(side_effect=self._list)
        self.insert = mock.route(method="POST", host=host, path__regex=_CALENDAR + "/events$").mock(
            side_effect=self._insert
        )
        one = r"^/proxy/v1\.0/me/events/(?P<event_id>[^/]+)$"
        self.patch = mock.route(method="PATCH", host=host, path__regex=one).mock(side_effect=self._patch)
        self.delete = mock.route(method="DELETE", host=host, path__regex=one).mock(side_effect=self._delete)

    def add(
        self,
        start: datetime,
        end: datetime,
        *,
        show_as: str = "busy",
        all_day: bool = False,
        cancelled: bool = False,
        response: str = "organizer",
        kind: str = "singleInstance",
        marks: dict[str, str] | None = None,
        zone: str = "Eastern Standard Time",
    ) -> dict[str, Any]:
        """An event someone else made (or an occurrence of a series, `kind="occurrence"`)."""
        event_id = self._new_id()
        event = {
            "id": event_id,
            "subject": "Busy",
            "createdDateTime": self._stamp(),
            "isAllDay": all_day,
            "isCancelled": cancelled,
            "showAs": show_as,
            "type": kind,
            "responseStatus": {"response": response, "time": "0001-01-01T00:00:00Z"},
            "attendees": [],
            "_zone": zone,
            "_start": start.astimezone(UTC),
            "_end": end.astimezone(UTC),
            "_props": [{"id": k, "value": v} for k, v in (marks or {}).items()],
        }
        self.events[event_id] = event
        return event

    async def resolve(self, request: httpx.Request) -> httpx.Response:
        """Answer a request outside respx's patching (bench/fake_nango.py serves Graph over HTTP with it)."""
        try:
            return await self._router.async_handler(request)
        except Exception:  # no route: what Graph answers for a path it does not have
            return graph_error(400, "BadRequest", f"Unsupported segment type: {request.url.path}")

    def live(self) -> list[dict[str, Any]]:
        return list(self.events.values())

    def overlapping(self) -> list[tuple[str, str]]:
        """Pairs of busy events whose times overlap: double bookings."""
        spans = sorted((e["_start"], e["_end"], e["id"]) for e in self.live() if e["showAs"] != "free")
        return [(a, b) for i, (_, a_end, a) in enumerate(spans) for b_start, _, b in spans[i + 1 :] if b_start < a_end]

    def _new_id(self) -> str:
        return f"AAMkAGI2TG93AAA{next(self._ids):08d}="

    def _stamp(self) -> str:
        self.clock += timedelta(milliseconds=1)
        return self.clock.isoformat(timespec="microseconds").replace("+00:00", "0Z")

    async def _wait(self, share: float) -> None:
        delay = self.latency() if callable(self.latency) else self.latency
        await asyncio.sleep(delay * share)

    def in_sequence(self) -> int:
        return longest_chain(self.log)

    async def _serve(self, op: str, request: httpx.Request, work: Callable[[], httpx.Response]) -> httpx.Response:
        sent = asyncio.get_running_loop().time()
        try:
            return await self._answer(op, request, work)
        finally:
            self.log.append((op, sent, asyncio.get_running_loop().time()))

    async def _answer(self, op: str, request: httpx.Request, work: Callable[[], httpx.Response]) -> httpx.Response:
        await self._wait(0.5)
        if not request.headers.get("connection-id") or not request.headers.get("provider-config-key"):
            return httpx.Response(400, json={"error": {"code": "missing_connection_id", "message": "Missing"}})
        if self.throttle.get(op, 0) > 0:
            self.throttle[op] -= 1
            return graph_error(429, "TooManyRequests", "Application is over its MailboxConcurrency limit.", 1)
        failure = self.fail.get(op)
        if isinstance(failure, Exception):
            raise failure
        if failure is not None:
            return failure
        try:
            response = work()
        except Invalid as exc:
            return graph_error(400, "ErrorInvalidRequest", str(exc))
        await self._wait(0.5)
        return response

    def _shown(self, event: dict[str, Any], request: httpx.Request, expand: str | None) -> dict[str, Any]:
        """An event as Graph answers: times in the Prefer zone, properties only when expanded."""
        prefer = request.headers.get("nango-proxy-prefer", "")
        match = re.search(r'outlook\.timezone="([^"]+)"', prefer)
        name = match.group(1) if match else "UTC"
        zone = zone_named(name) or UTC

        def when(moment: datetime) -> dict[str, str]:
            local = moment.astimezone(zone).replace(tzinfo=None).isoformat(timespec="seconds")
            return {"dateTime": local + ".0000000", "timeZone": name}

        shown = {k: v for k, v in event.items() if not k.startswith("_")}
        shown |= {"start": when(event["_start"]), "end": when(event["_end"])}
        wanted = _EXPAND.fullmatch(expand or "")
        if wanted:
            ids = {i.lower() for i in re.findall(r"id eq '([^']+)'", wanted.group("ids"))}
            shown["singleValueExtendedProperties"] = [p for p in event["_props"] if p["id"].lower() in ids]
        return shown

    def _page(self, request: httpx.Request, items: list[dict[str, Any]]) -> httpx.Response:
        params = request.url.params
        top = int(params.get("$top", "10"))
        if not 1 <= top <= 1000:
            raise Invalid("Invalid $top value.")
        skip = int(params.get("$skip", "0"))
        page = [self._shown(e, request, params.get("$expand")) for e in items[skip : skip + top]]
        body: dict[str, Any] = {"@odata.context": f"{ROOT}/$metadata#events", "value": page}
        if skip + top < len(items):
            following = [(k, v) for k, v in params.multi_items() if k != "$skip"] + [("$skip", str(skip + top))]
            link = httpx.URL("https://graph.microsoft.com" + request.url.path.removeprefix("/proxy"), params=following)
            body["@odata.nextLink"] = str(link)
        return httpx.Response(200, json=body)

    async def _view(self, request: httpx.Request, **_: str) -> httpx.Response:
        def work() -> httpx.Response:
            low, high = _window(request.url.params, "startDateTime"), _window(request.url.params, "endDateTime")
            items = sorted(
                (e for e in self.events.values() if e["_start"] < high and e["_end"] > low),
                key=lambda e: (e["_start"], e["id"]),
            )
            return self._page(request, items)

        return await self._serve("view", request, work)

    async def _list(self, request: httpx.Request, **_: str) -> httpx.Response:
        def work() -> httpx.Response:
            wanted = request.url.params.get("$filter")
            match = _ANY.fullmatch(wanted or "")
            if wanted is not None and match is None:
                raise Invalid(f"Invalid filter clause: {wanted}")
            items = [
                e
                for e in self.events.values()
                if e["type"] in ("singleInstance", "seriesMaster")
                and (
                    match is None
                    or any(
                        p["id"].lower() == match.group("id").lower()
                        and p["value"] == match.group("v").replace("''", "'")
                        for p in e["_props"]
                    )
                )
            ]
            return self._page(request, sorted(items, key=lambda e: e["id"]))

        return await self._serve("list", request, work)

    async def _insert(self, request: httpx.Request, **_: str) -> httpx.Response:
        def work() -> httpx.Response:
            body = json.loads(request.content)
            check_event_body(body)
            self.bodies.append(body)
            start, end = _read(body["start"]), _read(body["end"])
            if end <= start:
                raise Invalid("The end time must be after the start time.")
            repeat = body.get("transactionId")
            for event in self.events.values():
                if repeat is not None and event.get("transactionId") == repeat:
                    return httpx.Response(201, json=self._shown(event, request, None))
            event = self.add(start, end, show_as=body.get("showAs", "busy"), zone=body["start"]["timeZone"])
            event |= {
                "subject": body.get("subject", ""),
                "body": body.get("body"),
                "attendees": body.get("attendees", []),
                "_props": body.get("singleValueExtendedProperties", []),
            }
            if repeat is not None:
                event["transactionId"] = repeat
            return httpx.Response(201, json=self._shown(event, request, None))

        return await self._serve("insert", request, work)

    async def _patch(self, request: httpx.Request, event_id: str) -> httpx.Response:
        def work() -> httpx.Response:
            event = self.events.get(event_id)
            if event is None:
                return not_found()
            changes = json.loads(request.content)
            check_event_body(changes)
            self.bodies.append(changes)
            start = _read(changes["start"]) if "start" in changes else event["_start"]
            end = _read(changes["end"]) if "end" in changes else event["_end"]
            if end <= start:
                raise Invalid("The end time must be after the start time.")
            event.update(_start=start, _end=end, lastModifiedDateTime=self._stamp())
            return httpx.Response(200, json=self._shown(event, request, None))

        return await self._serve("patch", request, work)

    async def _delete(self, request: httpx.Request, event_id: str) -> httpx.Response:
        def work() -> httpx.Response:
            if self.events.pop(event_id, None) is None:
                return not_found()
            return httpx.Response(204)

        return await self._serve("delete", request, work)


warm_models()
