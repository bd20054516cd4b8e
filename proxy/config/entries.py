"""Users and routes: each entry validated against its model, then resolved against the global sections
into the snapshot's `User` and `Route` (with their calendar plans, fallbacks and variables merged).

Entries are read one at a time and released as they are built: a file of 100,000 users never holds its
whole parsed tree and its whole snapshot in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from proxy.config.calendar import CalendarSettings
from proxy.config.checks import Report, calendar_layer, check_template, fallbacks, warn_legacy, zone
from proxy.config.models import RouteModel, UserModel
from proxy.config.snapshot import (
    DEFAULT_CALENDAR_INSTRUCTIONS,
    CalendarPlan,
    Config,
    Fallbacks,
    KeyEntry,
    Route,
    RouteKeys,
    User,
)
from proxy.config.validate import INVALID, Validator, did_you_mean
from proxy.config.yamlsource import ConfigIssue, Document, Path
from proxy.numbers import E164_PATTERN, route_key

__all__ = ["Context", "Entries", "EntryModels", "entries", "texts"]

_NOTHING: Mapping[str, Any] = MappingProxyType({})
_NO_VARIABLES: Mapping[str, str] = MappingProxyType({})
_NO_LAYER: Mapping[str, object] = MappingProxyType({})
_CALENDAR_SETTINGS = frozenset(CalendarSettings.__dataclass_fields__)


@dataclass(frozen=True)
class Context:
    """What every user and route is read against: the file's global sections."""

    templates: Mapping[str, Mapping[str, object]]
    default_template: str
    variables: Mapping[str, str]
    fallbacks: Fallbacks
    timezone: ZoneInfo
    calendar: Mapping[str, object]


@dataclass(frozen=True)
class _Overrides:
    """What a user or a route may set over the global config."""

    template: str | None
    assistant: Mapping[str, Any]
    variables: Mapping[str, str]
    calendar: Mapping[str, object]


_NO_OVERRIDES = _Overrides(None, _NOTHING, _NO_VARIABLES, _NO_LAYER)


class EntryModels:
    """An `EntrySink`: each user and route entry becomes its model as soon as it is parsed (or INVALID, its
    issues recorded in its document), so a large file never holds all its entries as parsed dicts."""

    def __init__(self, running: Config | None = None) -> None:
        self.broken_users: set[str] = set()
        self.issues: list[ConfigIssue] = []
        self.validators: dict[int, Validator] = {}  # by id() of the documents seen
        # On a reload, an entry's strings that did not change are replaced by the running snapshot's own
        # objects, so the parsed copies are freed at once: for 100,000 users ~30 MB less at a reload's peak.
        self.running_users: Mapping[str, User] = running.users if running is not None else {}
        self.running_routes: dict[str, Route] = {route.name: route for route in running.routes} if running else {}
        self.zones: dict[str, str] = {}  # a few time zones, named 100,000 times

    def seen(self, document: Document) -> bool:
        return id(document) in self.validators

    def __call__(self, document: Document, name: str, index: int, raw: object) -> object:
        if raw is INVALID or isinstance(raw, UserModel | RouteModel):
            return raw  # converted (and reported) while the file was parsed
        validator = self.validators.get(id(document))
        if validator is None:
            validator = self.validators[id(document)] = Validator(document, self.issues)
        kind = UserModel if name == "users" else RouteModel
        model = validator.convert(raw, kind, (name, index))
        if model is INVALID and kind is UserModel and isinstance(raw, dict) and isinstance(raw.get("id"), str | int):
            # Its routes are not reported again as naming no user: the user's own error says it all.
            self.broken_users.add(str(raw["id"]))
        if isinstance(model, UserModel):
            return self.shared_user(model)
        if isinstance(model, RouteModel) and self.running_routes:
            return self.shared_route(model, index)
        return model

    def shared_user(self, model: UserModel) -> UserModel:
        changes: dict[str, object] = {}
        if model.timezone is not None and len(self.zones) < 1000:
            changes["timezone"] = self.zones.setdefault(model.timezone, model.timezone)
        old = self.running_users.get(model.id)
        if old is not None:
            changes["id"] = old.id
            for field in ("name", "connection_id", "nango_user_id", "email"):
                if getattr(model, field) == getattr(old, field):
                    changes[field] = getattr(old, field)
        return msgspec.structs.replace(model, **changes) if changes else model

    def shared_route(self, model: RouteModel, index: int) -> RouteModel:
        old = self.running_routes.get(model.name or f"routes[{index}]")
        if old is None:
            return model
        changes: dict[str, object] = {}
        if model.user == old.user.id:
            changes["user"] = old.user.id
        for entry in old.keys.entries:
            field = "caller" if entry.kind == "from" else entry.kind
            if getattr(model, field) == entry.value:
                changes[field] = entry.value
        return msgspec.structs.replace(model, **changes) if changes else model


class Entries:
    """Builds users, then routes, recording issues in `report`."""

    def __init__(
        self,
        report: Report,
        context: Context,
        tool_server: Mapping[str, object] | None,
        running: Config | None = None,
        models: EntryModels | None = None,
    ) -> None:
        self.report = report
        self.context = context
        # A reload shares every user and route that did not change with the running snapshot: while it
        # loads, the process holds one snapshot plus the changes, not two snapshots.
        self.running_users: Mapping[str, User] = running.users if running is not None else {}
        self.tool_server = tool_server
        self.users: dict[str, User] = {}
        # The calendar layer and fallbacks of users who set their own (the others use `no_layers`).
        self.layers: dict[str, tuple[Mapping[str, object], Fallbacks]] = {}
        self.no_layers: tuple[Mapping[str, object], Fallbacks] = (_NO_LAYER, context.fallbacks)
        self.plans: dict[tuple[int, ...], CalendarPlan] = {}
        # Users whose entry is invalid: routes naming them are not reported again as naming no user.
        self.models = models or EntryModels(running)
        self.running_routes: dict[str, Route] = self.models.running_routes
        if running is not None and not self.running_routes:
            self.running_routes = {route.name: route for route in running.routes}
        self.broken_users = self.models.broken_users
        self.base_plan = self.calendar_plan((context.calendar,))
        if running is not None and running.calendar == self.base_plan:
            self.base_plan = self.plans[_plan_key((context.calendar,))] = running.calendar

    def overrides(
        self, document: Document, path: Path, entry: UserModel | RouteModel, templates: Mapping[str, object]
    ) -> _Overrides:
        if entry.template is None and not entry.assistant and not entry.variables and entry.calendar is None:
            return _NO_OVERRIDES  # most users and routes set none: one shared object, not 200,000
        report = self.report
        check_template(entry.template, templates, report, document, (*path, "template"))
        warn_legacy(entry.assistant, report, document, (*path, "assistant"))
        return _Overrides(
            entry.template,
            entry.assistant or _NOTHING,
            texts(entry.variables) if entry.variables else _NO_VARIABLES,
            calendar_layer(entry.calendar, report, document, (*path, "calendar")) if entry.calendar else _NO_LAYER,
        )

    def user(
        self,
        document: Document,
        path: Path,
        raw: object,
    ) -> None:
        model = raw if isinstance(raw, UserModel) else self.models(document, "users", int(path[-1]), raw)
        if not isinstance(model, UserModel):
            return
        report, context, users = self.report, self.context, self.users
        timezone: ZoneInfo | None = context.timezone
        if model.timezone is not None:
            # A few zones, named 100,000 times: the path is built only for a name not looked up yet.
            timezone = report.zones.get(model.timezone) or zone(model.timezone, report, document, (*path, "timezone"))
        own = self.overrides(document, path, model, context.templates)
        own_fallbacks = context.fallbacks
        if model.fallbacks is not None:
            own_fallbacks = fallbacks(
                model.fallbacks, context.fallbacks, context.templates, report, document, (*path, "fallbacks")
            )
        if model.id in users:
            report.error(document, (*path, "id"), f"duplicate user id {model.id!r}")
            return
        if timezone is None:
            self.broken_users.add(model.id)
            return
        user = User(
            model.id,
            model.name,
            timezone,
            model.connection_id or None,
            model.nango_user_id or model.id,
            model.email or None,
            own.template,
            own.assistant,
            own.variables,
        )
        old = self.running_users.get(model.id) if self.running_users else None
        users[model.id] = old if old is not None and old == user else user
        if own.calendar is not _NO_LAYER or own_fallbacks is not context.fallbacks:
            self.layers[model.id] = (own.calendar, own_fallbacks)

    def route(
        self,
        document: Document,
        path: Path,
        raw: object,
    ) -> Route | None:
        model = raw if isinstance(raw, RouteModel) else self.models(document, "routes", int(path[-1]), raw)
        if not isinstance(model, RouteModel):
            return None
        report, context, users = self.report, self.context, self.users
        to = model.to
        if type(to) is str and model.phone_number_id is None and model.caller is None:
            # Most routes: one called number, most often written in E.164 already (one regex, no calls).
            key = to if _E164(to) else route_key(to)
            keys = [KeyEntry("to", key, (*path, "to"))] if key else self.keys(document, path, model)
        else:
            keys = self.keys(document, path, model)
        own = self.overrides(document, path, model, context.templates)
        user = users.get(model.user)
        if user is None and model.user in self.broken_users:
            return None
        if user is None:
            hint = did_you_mean(model.user, list(users)) if len(users) < 10_000 else ""
            report.error(document, (*path, "user"), f"names no user: {model.user!r}{hint}")
            return None
        user_calendar, user_fallbacks = self.layers.get(user.id, self.no_layers)
        route_fallbacks = user_fallbacks
        if model.fallbacks is not None:
            route_fallbacks = fallbacks(
                model.fallbacks, user_fallbacks, context.templates, report, document, (*path, "fallbacks")
            )
        variables = context.variables
        if user.variables or own.variables:
            variables = {**variables, **user.variables, **own.variables}
        if user.assistant or own.assistant:
            overrides = tuple(layer for layer in (user.assistant, own.assistant) if layer)
        else:
            overrides = ()
        if user_calendar or own.calendar:
            plan = self.calendar_plan((context.calendar, user_calendar, own.calendar))
        else:
            plan = self.base_plan
        name = model.name or f"routes[{path[-1]}]"
        route_keys = RouteKeys(tuple(keys), model.default, (*path, "default") if model.default else (), document.file)
        old = self.running_routes.get(name) if self.running_routes else None
        if old is not None and old.keys == route_keys:
            # A global edit rebuilds every route: its name and keys at least stay the running ones.
            name, route_keys = old.name, old.keys
        route = Route(  # positional: built 100,000s of times
            name,
            user,
            route_keys,
            own.template or user.template or context.default_template,
            overrides,
            variables,
            plan,
            route_fallbacks,
        )
        if old is not None and _same_route(old, route):
            return old
        return route

    def keys(self, document: Document, path: Path, model: RouteModel) -> list[KeyEntry]:
        """Every key a route answers to, each with where it is written; issues for those that are no key."""
        report = self.report
        keys: list[KeyEntry] = []
        for yaml_key, value in (("to", model.to), ("phone_number_id", model.phone_number_id), ("from", model.caller)):
            if value is None:
                continue
            many = isinstance(value, list)
            for index, written in enumerate(value if isinstance(value, list) else (value,)):
                where = (*path, yaml_key, index) if many else (*path, yaml_key)
                key = written.strip() if yaml_key == "phone_number_id" else route_key(written)
                if not key:
                    shown = document.show(where, written)
                    report.error(document, where, f"is not a phone number or SIP URI: {shown}")
                    continue
                keys.append(KeyEntry(yaml_key, key, where))  # type: ignore[arg-type]
        if model.to is None and model.phone_number_id is None and model.caller is None and not model.default:
            report.error(document, path, "needs at least one of to, phone_number_id, from, or default: true")
        return keys

    def calendar_plan(self, layers: tuple[Mapping[str, object], ...]) -> CalendarPlan:
        # Most users set nothing of their own: share one plan object between them.
        key = _plan_key(layers)
        plan = self.plans.get(key)
        if plan is None:
            merged: dict[str, object] = {}
            for layer in layers:
                merged.update(layer)
            settings = CalendarSettings(**{k: v for k, v in merged.items() if k in _CALENDAR_SETTINGS})  # type: ignore[arg-type]
            plan = CalendarPlan(
                settings=settings,
                declare=merged.get("declare", "inline"),  # type: ignore[arg-type]
                tool_ids=merged.get("tool_ids", ()),  # type: ignore[arg-type]
                instructions=str(merged.get("instructions", DEFAULT_CALENDAR_INSTRUCTIONS)),
                tool_server=self.tool_server if settings.mode == "proxy" else None,
            )
            self.plans[key] = plan
        return plan


def _plan_key(layers: tuple[Mapping[str, object], ...]) -> tuple[int, ...]:
    return tuple([id(layer) for layer in layers if layer])


def _same_route(old: Route, new: Route) -> bool:
    """`new` would answer every call exactly as `old` does (the shared parts are the same objects)."""
    return (
        old.user is new.user
        and old.calendar is new.calendar
        and old.fallbacks is new.fallbacks
        and old.variables is new.variables
        and old.template == new.template
        and old.keys == new.keys
        and old.overrides == new.overrides
    )


_E164 = E164_PATTERN.fullmatch


def texts(values: Mapping[str, object]) -> dict[str, str]:
    """Template variables as the text they are filled in as (YAML true -> "true")."""
    return {
        name: value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in values.items()
    }


def entries(document: Document, key: str, raw: object, report: Report) -> Iterator[tuple[Path, object]]:
    """The entries of a users or routes list, each released from the list as it is taken."""
    if raw is None:
        return
    if not isinstance(raw, list):
        report.error(document, (key,), "must be a list")
        return
    for index in range(len(raw)):
        entry, raw[index] = raw[index], None
        yield (key, index), entry
