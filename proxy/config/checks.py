"""What no schema can say: checks across keys and entries, each issue located.

Routes naming users, numbers and ids claimed twice, fallbacks and their numbers, calendar layers that
only make sense merged. Pure functions of model instances; issues go to the `Report` they are given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from msgspec import UNSET

from proxy.config.calendar import WorkingHours
from proxy.config.models import (
    CalendarLayer,
    FallbackModel,
    FallbacksModel,
    NangoSettings,
    ServerSettings,
    WorkingHoursModel,
)
from proxy.config.snapshot import Fallback, Fallbacks, Route, RoutingTable
from proxy.config.tags import tag_key_problem
from proxy.config.validate import did_you_mean
from proxy.config.yamlsource import ConfigIssue, Document, Path, format_path
from proxy.numbers import normalize_number

__all__ = [
    "Report",
    "build_routing_table",
    "calendar_layer",
    "fallbacks",
    "proxy_mode_needs_nango",
    "tool_server",
    "zone",
]

LEGACY_ASSISTANT_KEYS = {
    ("serverUrl",): "use server.url",
    ("serverUrlSecret",): "use server.credentialId",
    ("endCallFunctionEnabled",): "add an endCall tool to model.tools",
    ("dialKeypadFunctionEnabled",): "add a dtmf tool to model.tools",
    ("forwardingPhoneNumber",): "add a transferCall tool to model.tools",
    ("functions",): "use model.tools",
    ("model", "systemPrompt"): "use a system message in model.messages",
    ("model", "functions"): "use model.tools",
}


@dataclass
class Report:
    """Issues and warnings of one load, each made by the document it is about."""

    issues: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)
    zones: dict[str, ZoneInfo] = field(default_factory=dict)  # names already looked up in this load

    def error(self, document: Document, path: Path, message: str) -> None:
        if message.startswith("environment variable") or not document.explained_by_unset(path):
            self.issues.append(document.issue(path, message))

    def warn(self, document: Document, path: Path, message: str) -> None:
        self.warnings.append(document.issue(path, message))


def zone(name: str, report: Report, document: Document, path: Path) -> ZoneInfo | None:
    found = report.zones.get(name)
    if found is not None:
        return found
    try:
        found = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        hint = did_you_mean(name, sorted(available_timezones())) if len(name) < 64 else ""
        shown = document.show(path, name)
        report.error(document, path, f"unknown IANA timezone {shown}{hint} (e.g. America/New_York)")
        return None
    report.zones[name] = found
    return found


def calendar_layer(layer: CalendarLayer | None, report: Report, document: Document, path: Path) -> dict[str, object]:
    """The keys one calendar level sets, ready to merge over the level above."""
    result: dict[str, object] = {}
    if layer is None:
        return result
    for name in CalendarLayer.__struct_fields__:
        value = getattr(layer, name)
        if value is None:
            continue
        if name == "working_hours":
            value = _working_hours(value, report, document, (*path, "working_hours"))
            if value is None:
                continue
        elif name == "tool_ids":
            value = (value,) if isinstance(value, str) else tuple(value)
        result[name] = value
    return result


def _working_hours(model: WorkingHoursModel, report: Report, document: Document, path: Path) -> WorkingHours | None:
    raw: dict[str, Any] = {}
    for name in WorkingHoursModel.__struct_fields__:
        value = getattr(model, name)
        if value is not UNSET:
            raw[name] = value
    try:
        return WorkingHours.parse(raw)
    except ValueError as exc:
        report.error(document, path, str(exc).removeprefix("working_hours."))
        return None


def fallbacks(
    model: FallbacksModel | None,
    base: Fallbacks,
    templates: Mapping[str, object],
    report: Report,
    document: Document,
    path: Path,
) -> Fallbacks:
    if model is None:
        return base
    chosen: dict[str, Fallback] = {}
    for kind in FallbacksModel.__struct_fields__:
        entry: FallbackModel | None = getattr(model, kind)
        if entry is not None:
            chosen[kind] = _fallback(entry, templates, report, document, (*path, kind))
    return replace(base, **chosen) if chosen else base


def _fallback(
    entry: FallbackModel, templates: Mapping[str, object], report: Report, document: Document, path: Path
) -> Fallback:
    number = normalize_number(entry.number) if entry.number else None
    if entry.number and number is None:
        shown = document.show((*path, "number"), entry.number)
        report.error(document, (*path, "number"), f"is not a phone number: {shown}")
    if entry.action == "transfer" and entry.number is None:
        report.error(document, (*path, "number"), "is required for action transfer")
    if entry.action == "reject" and not entry.message.strip():
        report.error(document, (*path, "message"), "is required for action reject: Vapi speaks it before hanging up")
    if entry.template is not None and entry.template not in templates:
        report.error(document, (*path, "template"), _no_template(entry.template, templates))
    return Fallback(entry.action, entry.message, number, entry.template)


def _no_template(name: str, templates: Mapping[str, object]) -> str:
    return f"names no template: {name!r}{did_you_mean(name, list(templates))}"


def check_template(
    name: str | None, templates: Mapping[str, object], report: Report, document: Document, path: Path
) -> None:
    if name is not None and name not in templates:
        report.error(document, path, _no_template(name, templates))


def warn_legacy(assistant: Mapping[str, object] | None, report: Report, document: Document, path: Path) -> None:
    if not assistant:
        return
    for keys, advice in LEGACY_ASSISTANT_KEYS.items():
        node: object = assistant
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is not None:
            report.warn(document, (*path, *keys), f"legacy key Vapi rejects; {advice}")


@dataclass(frozen=True)
class Conflict:
    path: Path
    message: str
    document: Document | None = None


def tag_routing(nango: NangoSettings, report: Report, document: Document) -> None:
    routing = nango.tag_routing
    if routing is None:
        return
    path: Path = ("nango", "tag_routing")
    for role, key in routing.keys:
        if (problem := tag_key_problem(key)) is not None:
            report.error(document, (*path, f"{role}_tag"), problem)
    if routing.number_tag is None and routing.phone_number_id_tag is None:
        report.error(
            document, path, "set number_tag or phone_number_id_tag (the tag keys that carry a user's Vapi line)"
        )


def tool_server(
    written: Mapping[str, object] | None, server: ServerSettings, report: Report, document: Document
) -> Mapping[str, object] | None:
    """The Vapi server object proxy mode's tools call: `calendar.tool_server` as written, its `url` by default
    `<server.public_url><server.path>` (so setting only `credentialId` is enough); None when there is neither."""
    path: Path = ("calendar", "tool_server", "url")
    default = server.public_url + server.path if server.public_url is not None else None
    if written is None:
        return {"url": default} if default is not None else None
    credential = written.get("credentialId")
    if credential is not None and not (isinstance(credential, str) and credential):
        report.error(document, ("calendar", "tool_server", "credentialId"), "must be the id of a Vapi credential")
    url = written.get("url")
    if url is None:
        if default is None:
            message = "is required unless server.public_url is set: the URL Vapi sends tool-calls to"
            report.error(document, path, message)
            return written
        return {"url": default, **{key: value for key, value in written.items() if key != "url"}}
    if not (isinstance(url, str) and url.startswith(("https://", "http://"))):
        report.error(document, path, f"must be an http(s) URL, got {document.show(path, url)}")
    return written


def proxy_mode_needs_nango(nango: NangoSettings, proxied: list[Route], report: Report, document: Document) -> None:
    """Proxy mode's tools read and write Google Calendar through Nango's proxy, fixed connection_id or not:
    without the secret key every tool call would tell the caller the calendar is not connected."""
    if nango.secret_key is not None:
        return
    path: Path = ("nango", "secret_key")
    routes = f"{proxied[0].name} and {len(proxied) - 1} more use" if len(proxied) > 1 else f"{proxied[0].name} uses"
    message = (
        f"is empty, but {routes} calendar mode proxy, whose tools reach Google Calendar through Nango "
        "(a fixed connection_id too): set it (NANGO_SECRET_KEY), or use calendar mode native"
    )
    if document.explained_by_unset(path):
        report.warn(document, path, message)  # check, resolve: the unset variable is a warning there too
    else:
        report.error(document, path, message)


def build_routing_table(
    routes: Iterable[Route], documents: Mapping[int, Document] | None = None
) -> tuple[RoutingTable, list[Conflict]]:
    """Index routes by every key they answer to; two routes claiming the same key is a conflict.

    `documents` maps `id(route)` to the file a route came from, when it is not the main one."""
    by_caller_on_line: dict[tuple[str, str], Route] = {}
    by_caller: dict[str, Route] = {}
    by_phone_number_id: dict[str, Route] = {}
    by_to: dict[str, Route] = {}
    default: Route | None = None
    conflicts: list[Conflict] = []
    where = documents or {}

    def claimed(index: dict[Any, Route], label: str, key: Any, route: Route, path: Path) -> bool:
        """Put `route` in `index` under `key`, unless another route has it (a conflict). No separate map of
        owners: for 100,000 routes that was 15 MB more at the peak of every load."""
        owner = index.setdefault(key, route)
        if owner is route:
            return True
        shown = "/".join(key) if isinstance(key, tuple) else key
        other = where.get(id(owner))
        place = f"{other.file}: " if other is not None and other is not where.get(id(route)) else ""
        message = f"{label} {shown} is already routed by {place}{format_path(_path_of(owner, label, key))}"
        conflicts.append(Conflict(path, message, where.get(id(route))))
        return False

    indexes = {"from": by_caller, "phone_number_id": by_phone_number_id, "to": by_to}
    for route in routes:
        keys = route.keys
        entries = keys.entries
        if len(entries) > 1 and any(entry.kind == "from" for entry in entries):
            callers = keys.of("from")
            lines = [entry for entry in entries if entry.kind != "from"]
            if lines:
                for caller in callers:
                    for line in lines:
                        claimed(by_caller_on_line, "from+line", (caller.value, line.value), route, caller.path)
                continue
        for entry in entries:
            claimed(indexes[entry.kind], entry.kind, entry.value, route, entry.path)
        if keys.is_default:
            if default is not None:
                message = f"a second default route ({default.name} is one)"
                conflicts.append(Conflict(keys.default_path, message, where.get(id(route))))
            else:
                default = route
    return RoutingTable(by_caller_on_line, by_caller, by_phone_number_id, by_to, default), conflicts


def _path_of(route: Route, label: str, key: Any) -> Path:
    """Where `route` claims `key` (for "from+line", the caller's entry)."""
    kind, value = ("from", key[0]) if label == "from+line" else (label, key)
    return next((entry.path for entry in route.keys.entries if entry.kind == kind and entry.value == value), ())


# YAML's escapes of a UTF-16 surrogate (`"\ud83d"`, `"\U0000DC00"`): read one at a time, they give a lone
# surrogate, which is no text: JSON encoders refuse it, so every answer naming it would fail.
_SURROGATE_ESCAPE = re.compile(r"\\(?:u|U0000)[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogates(document: Document, text: str) -> list[ConfigIssue]:
    """An issue for each string (or key) of `document`, read from `text`, that holds a lone surrogate; looked
    for only when the text escapes one."""
    if not _SURROGATE_ESCAPE.search(text):
        return []
    issues: list[ConfigIssue] = []
    message = "holds a lone UTF-16 surrogate (an escape such as \\ud83d): write the character itself or \\U0001F600"

    def visit(value: object, path: Path) -> None:
        if isinstance(value, str):
            if _SURROGATE.search(value):
                issues.append(document.issue(path, message))
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and _SURROGATE.search(key):
                    issues.append(document.issue(path, message))
                visit(item, (*path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                visit(item, (*path, index))

    visit(document.data, ())
    return issues
