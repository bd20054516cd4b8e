"""The routing YAML -> one validated, immutable `Config` snapshot (types in `proxy.snapshot`).

Declare (the YAML an admin edits) is kept apart from materialise (`load_config`): a snapshot is
built completely, or refused with every issue located by file, line and key path, and only then
swapped in. Nothing in a snapshot is mutated after load.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path as FilePath
from types import MappingProxyType
from typing import get_args
from zoneinfo import ZoneInfo

from proxy.numbers import normalize_number
from proxy.routing import KeyEntry, RouteKeys, build_routing_table, route_key
from proxy.schema import Section
from proxy.settings import read_auth, read_nango, read_server
from proxy.slots import CalendarSettings, WorkingHours
from proxy.snapshot import (
    DEFAULT_CALENDAR_INSTRUCTIONS,
    DEFAULT_TAKE_MESSAGE_INSTRUCTIONS,
    CalendarPlan,
    Config,
    Fallback,
    FallbackAction,
    FallbackKind,
    Fallbacks,
    Route,
    ServerSettings,
    ToolDeclaration,
    User,
)
from proxy.yamlsource import ConfigError, ConfigIssue, Document, Path, parse_document

__all__ = [
    "DEFAULT_CALENDAR_INSTRUCTIONS",
    "DEFAULT_TAKE_MESSAGE_INSTRUCTIONS",
    "CalendarPlan",
    "Config",
    "ConfigError",
    "Fallback",
    "FallbackKind",
    "Fallbacks",
    "Route",
    "ServerSettings",
    "User",
    "load_config",
    "parse_config",
]

FALLBACK_KINDS: tuple[FallbackKind, ...] = get_args(FallbackKind)
FALLBACK_ACTIONS: tuple[str, ...] = get_args(FallbackAction)

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


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError listing every issue, each located."""
    file = os.fspath(path)
    return parse_config(read_config_text(file), file, os.environ if environ is None else environ)


def read_config_text(file: str) -> str:
    try:
        return FilePath(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(file, None, (), f"cannot read: {exc.__class__.__name__}: {exc}")]) from None


def config_version(text: str) -> str:
    """The `Config.version` that `text` would load as: a hash of the file's content."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_config(text: str, file: str, environ: Mapping[str, str], *, fast_paths: bool = True) -> Config:
    """`fast_paths=False` builds every user and route through the general readers (tests compare both)."""
    with _collector_paused():
        document = parse_document(text, file, environ)
        builder = _Builder(document, config_version(text))
        builder.fast = fast_paths
        return builder.build()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """A load allocates up to millions of objects that all survive: the cyclic collector would scan them
    over and over while they are built (a third of the load time for 100,000 users) and find nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Builder:
    def __init__(self, document: Document, version: str) -> None:
        self.document = document
        self.version = version
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []
        self._plans: dict[tuple[int, ...], CalendarPlan] = {}
        self.tool_server: Mapping[str, object] | None = None
        self.default_timezone = ZoneInfo("UTC")
        # The fast paths below build the common flat user or route without a Section each; anything
        # else they leave to the general readers, which also report every error. Tests turn them off
        # to check that both build the same snapshot.
        self.fast = True
        self._zones: dict[str, ZoneInfo] = {}

    def build(self) -> Config:
        top = Section(self.document, self.issues, (), self.document.data)
        version = top.integer("version", 1, minimum=1, maximum=1)
        del version
        server = read_server(top.section("server"))
        auth = read_auth(top.section("auth"))
        nango = read_nango(top.section("nango"))
        timezone = top.zone("timezone", "UTC")
        variables = self.variables(top, "variables")
        templates = self.templates(top)
        default_template = top.text("default_template", "default")
        if templates and default_template not in templates:
            top.error(top.at("default_template"), f"names no template (known: {', '.join(sorted(templates))})")
        fallbacks = self.fallbacks(top.section("fallbacks"), Fallbacks(), templates)
        global_calendar, self.tool_server = self.global_calendar(top.section("calendar"), server)
        self.default_timezone = timezone
        users_raw: list[tuple[Path, object] | None] = list(top.items("users"))
        routes_raw: list[tuple[Path, object] | None] = list(top.items("routes"))
        top.finish()
        # From here the entries are read once each: let each parsed entry go as soon as it is built, so a
        # large file does not hold its whole parsed tree and its whole snapshot in memory at once.
        top.data.clear()
        users: dict[str, User] = {}
        user_layers: dict[str, tuple[Mapping[str, object], Fallbacks]] = {}
        for path, raw in _consume(users_raw):
            if not (self.fast and self.flat_user(raw, templates, fallbacks, users, user_layers)):
                self.user(Section(self.document, self.issues, path, raw), templates, fallbacks, users, user_layers)
        routes: list[Route] = []
        no_layers = (global_calendar, _NO_LAYER)
        for path, raw in _consume(routes_raw):
            route = self.flat_route(raw, path, users, user_layers, default_template, variables, no_layers)
            if route is None:
                section = Section(self.document, self.issues, path, raw)
                route = self.route(section, users, user_layers, templates, default_template, variables, global_calendar)
            if route is not None:
                routes.append(route)
        tool_server = self.tool_server
        unauthenticated = tool_server is not None and not (
            tool_server.get("credentialId") or tool_server.get("headers")
        )
        if unauthenticated and any(route.calendar.mode == "proxy" for route in routes):
            # The tools' server object is how Vapi authenticates its tool calls to us.
            self.warnings.append(
                self.document.issue(
                    ("calendar", "tool_server"),
                    "has no credentialId or headers: Vapi's tool calls will carry no authentication "
                    "and be refused (401); set credentialId to your Vapi custom credential",
                )
            )
        for route in routes:
            if route.calendar.mode == "proxy" and self.tool_server is None:
                self.issues.append(
                    self.document.issue(
                        ("calendar",),
                        f"{route.name} uses calendar mode proxy: set "
                        "server.public_url or calendar.tool_server.url so Vapi can reach the tools",
                    )
                )
        table, conflicts = build_routing_table(routes)
        for conflict in conflicts:
            self.issues.append(self.document.issue(conflict.path, conflict.message))
        if self.issues:
            raise ConfigError(sorted(self.issues, key=lambda issue: issue.line or 0))
        return Config(
            file=self.document.file,
            version=self.version,
            server=server,
            auth=auth,
            nango=nango,
            timezone=timezone,
            variables=variables,
            templates=templates,
            default_template=default_template,
            fallbacks=fallbacks,
            users=users,
            routes=tuple(routes),
            routing=table,
            warnings=tuple(self.warnings),
            calendar=self.calendar_plan((global_calendar,)),
        )

    def variables(self, s: Section, key: str) -> dict[str, str]:
        result: dict[str, str] = {}
        for name, value in s.mapping(key).items():
            if isinstance(value, dict | list) or value is None:
                s.error((*s.at(key), name), "must be a plain value")
            else:
                result[name] = (
                    value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
                )
        return result

    def templates(self, top: Section) -> dict[str, Mapping[str, object]]:
        templates: dict[str, Mapping[str, object]] = {}
        for name, body in top.mapping("templates").items():
            path = ("templates", name)
            if not isinstance(body, dict):
                top.error(path, "must be a mapping of Vapi assistant fields")
                continue
            self.warn_legacy(path, body)
            templates[name] = body
        if not templates:
            top.error(("templates",), "define at least one assistant template")
        return templates

    def warn_legacy(self, path: Path, assistant: Mapping[str, object]) -> None:
        if not assistant:
            return
        for keys, advice in LEGACY_ASSISTANT_KEYS.items():
            node: object = assistant
            for key in keys:
                node = node.get(key) if isinstance(node, Mapping) else None
            if node is not None:
                where = (*path, *keys)
                self.warnings.append(self.document.issue(where, f"legacy key Vapi rejects; {advice}"))

    def fallbacks(self, s: Section, base: Fallbacks, templates: Mapping[str, object]) -> Fallbacks:
        chosen: dict[str, Fallback] = {}
        for kind in FALLBACK_KINDS:
            if not s.has(kind):
                continue
            f = s.section(kind)
            action = f.text("action", required=True)
            f.choice("action", action, FALLBACK_ACTIONS)
            message, template = f.text("message"), f.optional_str("template")
            number_raw = f.optional_str("number")
            number = normalize_number(number_raw) if number_raw else None
            if number_raw and number is None:
                f.error(f.at("number"), f"is not a phone number: {number_raw!r}")
            if action == "transfer" and number_raw is None:
                f.error(f.at("number"), "is required for action transfer")
            if action == "reject" and not message.strip():
                f.error(f.at("message"), "is required for action reject: Vapi speaks it before hanging up")
            if template is not None and template not in templates:
                f.error(f.at("template"), f"names no template: {template!r}")
            f.finish()
            chosen[kind] = Fallback(action, message, number, template)  # type: ignore[arg-type]
        s.finish()
        return replace(base, **chosen) if chosen else base

    # -- calendar ---------------------------------------------------------------------------------

    def calendar_layer(self, s: Section) -> dict[str, object]:
        """The calendar keys one level (global, user, route) sets, validated; merged later."""
        layer: dict[str, object] = {}
        if not s.present:
            return layer
        if s.has("mode"):
            layer["mode"] = s.text("mode")
            s.choice("mode", str(layer["mode"]), ("native", "proxy"))
        if s.has("declare"):
            layer["declare"] = s.text("declare")
            s.choice("declare", str(layer["declare"]), get_args(ToolDeclaration))
        if s.has("tool_ids"):
            layer["tool_ids"] = tuple(value for _, value in s.str_list("tool_ids"))
        for key in ("instructions", "calendar_id"):
            if s.has(key):
                layer[key] = s.text(key)
        bounds = {
            "slot_minutes": (5, 480),
            "buffer_minutes": (0, 240),
            "max_slots": (1, 20),
            "horizon_days": (1, 366),
            "min_notice_minutes": (0, 10_080),
            "search_ahead_days": (0, 60),
        }
        for key, (low, high) in bounds.items():
            if s.has(key):
                layer[key] = s.integer(key, low, minimum=low, maximum=high)
        if s.has("working_hours"):
            try:
                layer["working_hours"] = WorkingHours.parse(s.mapping("working_hours"))
            except ValueError as exc:
                s.error(s.at("working_hours"), str(exc))
        return layer

    def global_calendar(
        self, s: Section, server: ServerSettings
    ) -> tuple[dict[str, object], Mapping[str, object] | None]:
        layer = self.calendar_layer(s)
        tool_server: Mapping[str, object] | None = s.mapping("tool_server") or None
        if tool_server is not None and not isinstance(tool_server.get("url"), str):
            s.error((*s.at("tool_server"), "url"), "is required: the URL Vapi sends tool-calls to")
        if tool_server is None and server.public_url is not None:
            tool_server = {"url": server.public_url + server.path}
        s.finish()
        return layer, tool_server

    def calendar_plan(self, layers: tuple[Mapping[str, object], ...]) -> CalendarPlan:
        # Most users set nothing of their own: share one plan object between them.
        key = tuple(id(layer) for layer in layers if layer)
        plan = self._plans.get(key)
        if plan is None:
            merged: dict[str, object] = {}
            for layer in layers:
                merged.update(layer)
            settings_keys = (
                "mode",
                "calendar_id",
                "working_hours",
                "slot_minutes",
                "buffer_minutes",
                "max_slots",
                "horizon_days",
                "min_notice_minutes",
                "search_ahead_days",
            )
            settings = CalendarSettings(**{k: merged[k] for k in settings_keys if k in merged})  # type: ignore[arg-type]
            plan = CalendarPlan(
                settings=settings,
                declare=merged.get("declare", "inline"),  # type: ignore[arg-type]
                tool_ids=merged.get("tool_ids", ()),  # type: ignore[arg-type]
                instructions=str(merged.get("instructions", DEFAULT_CALENDAR_INSTRUCTIONS)),
                tool_server=self.tool_server if settings.mode == "proxy" else None,
            )
            self._plans[key] = plan
        return plan

    def overrides(self, s: Section, templates: Mapping[str, object]) -> _Overrides:
        template = s.optional_str("template")
        if template is not None and template not in templates:
            s.error(s.at("template"), f"names no template: {template!r}")
        assistant = s.mapping("assistant")
        if assistant:
            self.warn_legacy(s.at("assistant"), assistant)
        # Most users and routes set neither: one shared empty mapping each, not 200,000 empty dicts.
        return _Overrides(
            template,
            assistant or _NOTHING,
            self.variables(s, "variables") or _NO_VARIABLES,
            self.calendar_layer(s.section("calendar")) if s.has("calendar") else _NO_LAYER,
        )

    # -- users and routes -------------------------------------------------------------------------

    def user(
        self,
        s: Section,
        templates: Mapping[str, object],
        fallbacks: Fallbacks,
        users: dict[str, User],
        layers: dict[str, tuple[Mapping[str, object], Fallbacks]],
    ) -> None:
        user_id = s.text("id", required=True)
        name = s.text("name", required=True)
        timezone = s.zone("timezone", "UTC") if s.has("timezone") else self.default_timezone
        connection_id = s.optional_str("connection_id")
        nango_user_id = s.text("nango_user_id", user_id)
        email = s.optional_str("email")
        own = self.overrides(s, templates)
        own_fallbacks = (
            self.fallbacks(s.section("fallbacks"), fallbacks, templates) if s.has("fallbacks") else fallbacks
        )
        s.finish()
        if not user_id:
            return
        if user_id in users:
            s.error(s.at("id"), f"duplicate user id {user_id!r}")
            return
        users[user_id] = User(
            id=user_id,
            name=name,
            timezone=timezone,
            connection_id=connection_id,
            nango_user_id=nango_user_id,
            email=email,
            template=own.template,
            assistant=own.assistant,
            variables=own.variables,
        )
        layers[user_id] = (own.calendar, own_fallbacks)

    def flat_user(
        self,
        raw: object,
        templates: Mapping[str, object],
        fallbacks: Fallbacks,
        users: dict[str, User],
        layers: dict[str, tuple[Mapping[str, object], Fallbacks]],
    ) -> bool:
        """A user of plain, valid strings and no overrides, built directly; False leaves it to `user`."""
        flat = _flat_strings(raw, _FLAT_USER_KEYS)
        if flat is None or "id" not in flat or "name" not in flat or flat["id"] in users:
            return False
        timezone = self.default_timezone
        if "timezone" in flat:
            zone = self._zones.get(flat["timezone"])
            if zone is None:
                try:
                    zone = self._zones[flat["timezone"]] = ZoneInfo(flat["timezone"])
                except Exception:
                    return False
            timezone = zone
        template = flat.get("template")
        if template is not None and template not in templates:
            return False
        user_id = flat["id"]
        users[user_id] = User(
            id=user_id,
            name=flat["name"],
            timezone=timezone,
            connection_id=flat.get("connection_id"),
            nango_user_id=flat.get("nango_user_id", user_id),
            email=flat.get("email"),
            template=template,
            assistant=_NOTHING,
            variables=_NO_VARIABLES,
        )
        layers[user_id] = (_NO_LAYER, fallbacks)
        return True

    def flat_route(
        self,
        raw: object,
        path: Path,
        users: Mapping[str, User],
        user_layers: Mapping[str, tuple[Mapping[str, object], Fallbacks]],
        default_template: str,
        variables: Mapping[str, str],
        no_layers: tuple[Mapping[str, object], Mapping[str, object]],
    ) -> Route | None:
        """A route of plain, valid strings and no overrides, built directly; None leaves it to `route`."""
        flat = _flat_strings(raw, _FLAT_ROUTE_KEYS) if self.fast else None
        if flat is None or (user := users.get(flat.get("user", ""))) is None:
            return None
        entries: list[KeyEntry] = []
        for key in ("to", "phone_number_id", "from"):
            if key in flat:
                value = flat[key].strip() if key == "phone_number_id" else route_key(flat[key])
                if not value:
                    return None
                entries.append(KeyEntry(key, value, (*path, key)))
        if not entries:
            return None
        user_calendar, fallbacks = user_layers[user.id]
        return Route(
            name=flat.get("name") or _route_label(path),
            user=user,
            keys=RouteKeys(tuple(entries), False, ()),
            template=user.template or default_template,
            overrides=(user.assistant,) if user.assistant else (),
            variables={**variables, **user.variables} if user.variables else variables,
            calendar=self.calendar_plan((no_layers[0], user_calendar, no_layers[1])),
            fallbacks=fallbacks,
        )

    def route(
        self,
        s: Section,
        users: Mapping[str, User],
        user_layers: Mapping[str, tuple[Mapping[str, object], Fallbacks]],
        templates: Mapping[str, object],
        default_template: str,
        variables: Mapping[str, str],
        global_calendar: Mapping[str, object],
    ) -> Route | None:
        name = s.text("name") or _route_label(s.path)
        user_id = s.text("user", required=True)
        entries: list[KeyEntry] = []
        for yaml_key, kind in (("to", "to"), ("phone_number_id", "phone_number_id"), ("from", "from")):
            for path, raw in s.str_list(yaml_key):
                value = raw.strip() if kind == "phone_number_id" else route_key(raw)
                if not value:
                    s.error(path, f"is not a phone number or SIP URI: {raw!r}")
                    continue
                entries.append(KeyEntry(kind, value, path))  # type: ignore[arg-type]
        is_default = s.flag("default", False)
        own = self.overrides(s, templates)
        user = users.get(user_id)
        if user_id and user is None:
            s.error(s.at("user"), f"names no user: {user_id!r}")
        if not (entries or is_default or s.has("to") or s.has("phone_number_id") or s.has("from")):
            s.error(s.path, "needs at least one of to, phone_number_id, from, or default: true")
        base_fallbacks = user_layers[user_id][1] if user is not None else Fallbacks()
        fallbacks = (
            self.fallbacks(s.section("fallbacks"), base_fallbacks, templates) if s.has("fallbacks") else base_fallbacks
        )
        s.finish()
        if user is None:
            return None
        user_calendar = user_layers[user_id][0]
        return Route(
            name=name,
            user=user,
            keys=RouteKeys(tuple(entries), is_default, s.at("default") if is_default else ()),
            template=own.template or user.template or default_template,
            overrides=tuple(layer for layer in (user.assistant, own.assistant) if layer),
            # Shared, not copied, when neither the user nor the route adds any: 100,000 routes, one dict.
            variables={**variables, **user.variables, **own.variables}
            if user.variables or own.variables
            else variables,
            calendar=self.calendar_plan((global_calendar, user_calendar, own.calendar)),
            fallbacks=fallbacks,
        )


_FLAT_USER_KEYS = frozenset({"id", "name", "timezone", "connection_id", "nango_user_id", "email", "template"})
_FLAT_ROUTE_KEYS = frozenset({"user", "name", "to", "phone_number_id", "from"})


def _flat_strings(raw: object, allowed: frozenset[str]) -> dict[str, str] | None:
    """`raw` if it is a mapping of allowed keys to non-empty strings, else None."""
    if type(raw) is not dict:
        return None
    for key, value in raw.items():
        if key not in allowed or type(value) is not str or not value:
            return None
    return raw


def _consume(entries: list[tuple[Path, object] | None]) -> Iterator[tuple[Path, object]]:
    """Yield the entries in order, dropping the list's reference to each as it is taken."""
    for index, entry in enumerate(entries):
        entries[index] = None
        if entry is not None:
            yield entry


@dataclass(frozen=True)
class _Overrides:
    """What a user or a route may set over the global config."""

    template: str | None
    assistant: Mapping[str, object]
    variables: Mapping[str, str]
    calendar: Mapping[str, object]


_NOTHING: Mapping[str, object] = MappingProxyType({})
_NO_VARIABLES: Mapping[str, str] = MappingProxyType({})
_NO_LAYER: Mapping[str, object] = MappingProxyType({})


def _route_label(path: Path) -> str:
    return f"routes[{path[-1]}]" if path else "route"
