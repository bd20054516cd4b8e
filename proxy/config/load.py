"""The routing YAML (and the files it includes) -> one validated, immutable `Config` snapshot.

Declare (`proxy.config.models`) is kept apart from materialise (here): a snapshot is built completely, or
refused with every issue located by file, line and key path, and only then swapped in. Loading never
lets any other exception out: whatever goes wrong is a `ConfigError`, so every caller (serve, check, a
reload) treats it as an invalid file and the running config keeps serving.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Mapping
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from proxy.config.checks import (
    Report,
    build_routing_table,
    calendar_layer,
    fallbacks,
    lone_surrogates,
    proxy_mode_needs_nango,
    tag_routing,
    tool_server,
    warn_legacy,
    zone,
)
from proxy.config.entries import Context, Entries, EntryModels, entries, texts
from proxy.config.fastyaml import read as read_with_rapidyaml
from proxy.config.files import config_version, current_version, expand_includes, read_config_text
from proxy.config.models import AuthSettings, ConfigFile, IncludedFile, NangoSettings, RouteModel, UserModel
from proxy.config.restart import keep_running_redis, keep_running_values
from proxy.config.snapshot import AgencyFile, CalendarPlan, Config, Fallbacks, Route, TenantScope
from proxy.config.validate import INVALID, Validator, decode_hook, did_you_mean
from proxy.config.yamlsource import ConfigError, ConfigIssue, Document, parse_document

__all__ = [
    "ConfigBuilder",
    "config_version",
    "current_version",
    "expand_includes",
    "load_config",
    "parse_config",
    "read_config_text",
]

# Where a `${VAR}` holds a secret that only `serve` needs: `check` and `resolve` warn when it is unset.
SECRET_PATHS = (
    ("auth", "vapi_secrets"),
    ("auth", "bearer", "tokens"),
    ("auth", "hmac", "secrets"),
    ("nango", "secret_key"),
    ("nango", "webhook_signing_keys"),
    ("redis", "url"),
)
MAX_INCLUDED_FILES = 1000
# Sections an agency file sets once for every tenant (proxy.config.tenants): a tenant's own file may not.
DEPLOYMENT_SECTIONS = ("server", "redis")


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    secrets_optional: bool = False,
    running: Config | None = None,
    fast: bool = False,
) -> Config:
    """Read and validate a config file and its includes. Raises ConfigError listing every issue, each located.

    `fast`: for one-shot commands (check, resolve), read with `proxy.config.fastyaml` where it provably
    gives the same result: a third of the CPU, but rapidyaml's tree adds to the peak memory, which a
    server reloading under a pod's memory limit does not want."""
    file = os.fspath(path)
    return parse_config(
        read_config_text(file),
        file,
        os.environ if environ is None else environ,
        secrets_optional=secrets_optional,
        running=running,
        fast=fast,
    )


def parse_config(
    text: str,
    file: str,
    environ: Mapping[str, str],
    *,
    secrets_optional: bool = False,
    running: Config | None = None,
    fast: bool = False,
    tenant: TenantScope | None = None,
) -> Config:
    """`secrets_optional`: an unset secret variable is a warning (check, resolve), not an error (serve).
    `running`: the config being served; restart-only settings keep its values (see `proxy.config.restart`).
    `fast`: see `load_config`. `tenant`: the file is this tenant's of an agency file."""
    with _collector_paused():
        try:
            if fast and (document := read_with_rapidyaml(text, file, environ)) is not None:
                try:
                    return ConfigBuilder(document, text, environ, secrets_optional, fast=True, tenant=tenant).build(
                        running
                    )
                except AgencyFile:
                    raise
                except ConfigError:
                    pass  # every issue is reported from the walker's reading, with its line
            models = EntryModels(running)
            document = parse_document(text, file, environ, entry_sink=models)
            if not models.seen(document):  # read by the node walker: any earlier attempt's issues are void
                models = EntryModels(running)
            return ConfigBuilder(document, text, environ, secrets_optional, models, tenant=tenant).build(running)
        except ConfigError:
            raise
        except RecursionError:
            raise ConfigError([ConfigIssue(file, None, (), "nested too deeply to load")]) from None
        except Exception as exc:  # a bug must not take the running config down: report it as an invalid file
            message = f"could not be loaded ({type(exc).__name__}); please report this as a bug"
            raise ConfigError([ConfigIssue(file, None, (), message)]) from exc


def _all_at_once(entries: object, model: type[UserModel] | type[RouteModel]) -> object:
    """The users or routes of a file, each as its model, converted in one call (a sixth of the time of one
    call each); if any is invalid, the raw entries, converted (and reported) one by one."""
    if not isinstance(entries, list):
        return entries
    try:
        return msgspec.convert(entries, list[model], dec_hook=decode_hook)  # type: ignore[valid-type]
    except msgspec.ValidationError:
        return entries


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """A load allocates up to millions of objects that all survive: the cyclic collector would scan them
    over and over while they are built and find nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class ConfigBuilder:
    def __init__(
        self,
        document: Document,
        text: str,
        environ: Mapping[str, str],
        secrets_optional: bool,
        models: EntryModels | None = None,
        *,
        fast: bool = False,
        tenant: TenantScope | None = None,
    ) -> None:
        self.tenant = tenant
        self.models = models or EntryModels()
        self.fast = fast
        self.main = document
        self.text = text
        self.environ = environ
        self.secrets_optional = secrets_optional
        self.report = Report(issues=[*document.issues, *lone_surrogates(document, text)])
        self.plans: dict[tuple[int, ...], CalendarPlan] = {}
        self.tool_server: Mapping[str, object] | None = None
        self.nango = NangoSettings()
        self.broken_users: set[str] = set()

    def build(self, running: Config | None) -> Config:
        report = self.report
        document = self.main
        data = document.data if document.data is not None else {}
        if not isinstance(data, dict):
            raise ConfigError([document.issue((), "must be a mapping of sections (version, auth, templates, ...)")])
        if "tenants" in data and self.tenant is None:
            raise AgencyFile(document)
        if self.tenant is not None:
            for key in DEPLOYMENT_SECTIONS:
                if key in data:
                    where = self.tenant.agency_file
                    report.error(
                        document, (key,), f"is set for every tenant in the agency file ({where}), not per tenant"
                    )
                    del data[key]
        users_raw = data.pop("users", None)
        routes_raw = data.pop("routes", None)
        top = self.top(data)
        server, nango, redis = top["server"], top["nango"], top["redis"]
        if self.tenant is not None:
            server, redis = self.tenant.server, self.tenant.redis
        tag_routing(nango, report, document)
        restart_needed: tuple[str, ...] = ()
        if running is not None:
            server, nango, restart_needed = keep_running_values(running, server, nango)
            redis, waiting = keep_running_redis(running, redis)
            restart_needed += waiting
        auth_section = top["auth"]
        auth = AuthSettings(
            shared_secrets=auth_section.vapi_secrets, bearer=auth_section.bearer, hmac=auth_section.hmac
        )
        templates: dict[str, Mapping[str, object]] = top["templates"]
        for name, body in templates.items():
            warn_legacy(body, report, document, ("templates", name))
        default_template: str = top["default_template"]
        if templates and default_template not in templates:
            report.error(document, ("default_template",), f"names no template (known: {', '.join(sorted(templates))})")
        timezone = zone(top["timezone"], report, document, ("timezone",)) or ZoneInfo("UTC")
        base_fallbacks = fallbacks(top["fallbacks"], Fallbacks(), templates, report, document, ("fallbacks",))
        global_calendar = top["calendar"]
        global_layer = calendar_layer(global_calendar, report, document, ("calendar",))
        self.tool_server = tool_server(global_calendar.tool_server, server, report, document)
        self.nango = nango
        self.unset_variables(document)

        sources = [(document, users_raw, routes_raw)]
        files = [document.file]
        for included in self.includes(top["include"]):
            files.append(included.file)
            sources.append(self.included(included))
        if self.fast:
            sources = [
                (source, _all_at_once(users, UserModel), _all_at_once(raw, RouteModel))
                for source, users, raw in sources
            ]
        variables = top["variables"]
        if running is not None:
            # The same objects as the running snapshot's when unchanged, so unchanged routes can be shared.
            variables = running.variables if variables == running.variables else variables
            base_fallbacks = running.fallbacks if base_fallbacks == running.fallbacks else base_fallbacks
        context = Context(templates, default_template, variables, base_fallbacks, timezone, global_layer)
        builder = Entries(report, context, self.tool_server, running, self.models)
        for source, raw, _ in sources:
            for path, entry in entries(source, "users", raw, report):
                builder.user(source, path, entry)
        routes: list[Route] = []
        origin: dict[int, Document] = {}
        for source, _, raw in sources:
            for path, entry in entries(source, "routes", raw, report):
                route = builder.route(source, path, entry)
                if route is not None:
                    routes.append(route)
                    if source is not document:
                        origin[id(route)] = source
        if any(plan.mode == "proxy" for plan in builder.plans.values()):  # every route's plan is one of these
            self.proxy_mode_checks(routes)
        if nango.has_microsoft() and self.tool_server is None:
            report.error(
                document,
                ("nango", "integrations"),
                "users of a microsoft integration are always served in calendar mode proxy: set server.public_url "
                "or calendar.tool_server.url so Vapi can reach the tools",
            )
        table, conflicts = build_routing_table(routes, origin)
        for conflict in conflicts:
            report.error(conflict.document or document, conflict.path, conflict.message)
        report.issues.extend(self.models.issues)
        if report.issues:

            def order(issue: ConfigIssue) -> tuple[bool, int]:
                return issue.file != document.file, issue.line or 0

            raise ConfigError(sorted(report.issues, key=order), sorted(report.warnings, key=order))
        return Config(
            file=document.file,
            version=config_version(self.text, *self.included_texts),
            server=server,
            auth=auth,
            nango=nango,
            timezone=timezone,
            variables=context.variables,
            templates=templates,
            default_template=default_template,
            fallbacks=base_fallbacks,
            users=builder.users,
            routes=tuple(routes),
            routing=table,
            warnings=tuple(report.warnings),
            files=tuple(files),
            include_patterns=self.include_patterns,
            restart_needed=restart_needed,
            calendar=builder.calendar_plan((global_layer,)),
            tool_server=self.tool_server,
            redis=redis,
            tenant=self.tenant.id if self.tenant is not None else None,
        )

    def top(self, data: dict[str, object]) -> dict[str, Any]:
        """Every top-level section but users and routes, each converted on its own so one bad section
        leaves the others checked (and their defaults standing in)."""
        validator = Validator(self.main, self.report.issues)
        fields = {info.encode_name: info for info in msgspec.structs.fields(ConfigFile)}
        for key in data:
            if key not in fields:
                self.report.error(self.main, (key,), f"unknown key{did_you_mean(str(key), list(fields))}")
        top: dict[str, Any] = {}
        for name, info in fields.items():
            if name in ("users", "routes"):
                continue
            value: Any = INVALID
            if name in data and data[name] is not None:
                value = validator.convert(data[name], info.type, (name,))
            elif info.required:
                self.report.error(self.main, (name,), "is required")
            if value is INVALID:
                if info.default is not msgspec.NODEFAULT:
                    value = info.default
                elif info.default_factory is not msgspec.NODEFAULT:
                    value = info.default_factory()
                else:
                    value = {}
            top[name] = value
        top["variables"] = texts(top["variables"])
        return top

    def unset_variables(self, document: Document) -> None:
        for path, name in document.unset:
            secret = any(path[: len(prefix)] == prefix for prefix in SECRET_PATHS)
            if secret and self.secrets_optional:
                self.report.warn(document, path, f"environment variable {name} is not set (serve needs it)")
            else:
                self.report.error(document, path, f"environment variable {name} is not set")

    # -- includes ---------------------------------------------------------------------------------

    included_texts: list[str]
    include_patterns: tuple[str, ...]

    def includes(self, patterns: list[str]) -> Iterator[Document]:
        self.included_texts = []
        self.include_patterns = tuple(patterns)
        seen = {os.path.abspath(self.main.file)}
        for index, pattern in enumerate(patterns):
            path = ("include", index)
            names = expand_includes(self.main.file, (pattern,))
            if not names:
                self.report.warn(self.main, path, f"{pattern!r} matches no file")
            for name in names:
                if name in seen:
                    continue
                seen.add(name)
                if len(seen) > MAX_INCLUDED_FILES:
                    self.report.error(self.main, path, f"includes more than {MAX_INCLUDED_FILES} files")
                    return
                try:
                    text = read_config_text(name)
                    fast = read_with_rapidyaml(text, name, self.environ) if self.fast else None
                    document = fast or parse_document(text, name, self.environ)
                except ConfigError as exc:
                    self.report.issues.extend(exc.issues)
                    continue
                self.included_texts.append(text)
                self.report.issues.extend([*document.issues, *lone_surrogates(document, text)])
                yield document

    def included(self, document: Document) -> tuple[Document, object, object]:
        data = document.data if document.data is not None else {}
        if not isinstance(data, dict):
            self.report.error(document, (), "must be a mapping with users and/or routes")
            return document, None, None
        for key in data:
            if key not in ("users", "routes"):
                hint = did_you_mean(str(key), list(IncludedFile.__struct_fields__))
                self.report.error(document, (key,), f"unknown key{hint}: an included file holds users and routes only")
        self.unset_variables(document)
        return document, data.get("users"), data.get("routes")

    # -- users and routes -------------------------------------------------------------------------
    def proxy_mode_checks(self, routes: list[Route]) -> None:
        proxied = [route for route in routes if route.calendar.mode == "proxy"]
        if not proxied:
            return
        proxy_mode_needs_nango(self.nango, proxied, self.report, self.main)
        tool_server = self.tool_server
        if tool_server is None:
            for route in proxied:
                self.report.error(
                    self.main,
                    ("calendar",),
                    f"{route.name} uses calendar mode proxy: set server.public_url or calendar.tool_server.url "
                    "so Vapi can reach the tools",
                )
        elif not (tool_server.get("credentialId") or tool_server.get("headers")):
            # The tools' server object is how Vapi authenticates its tool calls to us.
            self.report.warn(
                self.main,
                ("calendar", "tool_server"),
                "has no credentialId or headers: Vapi's tool calls will carry no authentication "
                "and be refused (401); set credentialId to your Vapi custom credential",
            )
