"""Agency mode: one file naming many tenants, each a whole config of its own (routing, templates,
fallbacks, calendar, Vapi authentication, Nango environment), inline or in a file of its own.

```yaml
server: {public_url: https://calls.example.com}   # the deployment's: every tenant shares the listener
redis: {url: "${REDIS_URL}"}                      # optional; each tenant's keys under its own prefix
tenants:
  acme: {file: tenants/acme.yaml}                 # a routing file as for one business, minus server/redis
  bobs-plumbing:                                  # or inline
    auth: {vapi_secrets: "${BOBS_VAPI_SECRET}"}
    templates: {...}
```

A tenant is one `Config` with `tenant` set and its server paths its own (`<server.path>/<id>`,
`<server.webhook_path>/<id>`). Tenants are checked one by one: an invalid tenant is reported in
`Agency.errors` and the others load; a reload keeps the invalid tenant's running config (proxy.reload).
A file tenant whose files are unchanged is not read again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

import msgspec
import orjson

from proxy.config.files import config_version, current_version, read_config_text
from proxy.config.load import ConfigBuilder, parse_config
from proxy.config.models import RedisSection, ServerSettings
from proxy.config.restart import keep_running_server
from proxy.config.snapshot import AgencyFile, Config, TenantScope
from proxy.config.validate import INVALID, Validator, did_you_mean
from proxy.config.yamlsource import ConfigError, ConfigIssue, Document, Path

__all__ = ["MAX_TENANTS", "TENANT_ID", "Agency", "TenantSource", "load_deployment"]

# Lower-case letters, digits and inner dashes: safe in a URL path, a Redis key and a metric label as is.
TENANT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MAX_TENANTS = 1000
AGENCY_KEYS = ("version", "server", "redis", "tenants")
S = TypeVar("S", ServerSettings, RedisSection)


@dataclass(frozen=True)
class TenantSource:
    """Where a tenant's config is: its own file, or inline in the agency file (`file` None)."""

    id: str
    file: str | None


@dataclass(frozen=True)
class Agency:
    """The deployment an agency file describes. `tenants` holds every tenant that loaded; `errors` every
    one that did not (with a running config, a reload keeps serving it)."""

    file: str
    version: str
    server: ServerSettings
    redis: RedisSection
    tenants: Mapping[str, Config]
    errors: Mapping[str, ConfigError] = field(default_factory=dict)
    sources: Mapping[str, TenantSource] = field(default_factory=dict)
    restart_needed: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Agency(file={self.file!r}, tenants={sorted(self.tenants)}, errors={sorted(self.errors)})"

    def without_unauthenticated(self, message: str) -> Agency:
        """This agency with each tenant that has no Vapi authentication moved to `errors`: served, it would
        answer every call 401 (`serve` and a reload refuse it, `--insecure` aside)."""
        refused = {tenant: config for tenant, config in self.tenants.items() if not config.auth.configured}
        if not refused:
            return self
        errors = dict(self.errors)
        for tenant, config in refused.items():
            errors[tenant] = ConfigError([ConfigIssue(config.file, None, ("tenants", tenant, "auth"), message)])
        tenants = {tenant: config for tenant, config in self.tenants.items() if tenant not in refused}
        return replace(self, tenants=tenants, errors=errors)

    @property
    def issues(self) -> list[ConfigIssue]:
        """Every tenant's issues, tenant by tenant (what `check` lists)."""
        return [issue for tenant in sorted(self.errors) for issue in self.errors[tenant].issues]


def load_deployment(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    secrets_optional: bool = False,
    running: Config | Agency | None = None,
    fast: bool = False,
) -> Config | Agency:
    """A config file: one business's `Config`, or an `Agency` when it holds `tenants`. Raises ConfigError
    for an invalid single config or an invalid agency file itself; an invalid tenant is in `Agency.errors`."""
    file = os.fspath(path)
    environ = os.environ if environ is None else environ
    text = read_config_text(file)
    try:
        single = running if isinstance(running, Config) else None
        return parse_config(text, file, environ, secrets_optional=secrets_optional, running=single, fast=fast)
    except AgencyFile as found:
        previous = running if isinstance(running, Agency) else None
        return _AgencyBuilder(found.document, text, environ, secrets_optional, fast).build(previous)


class _AgencyBuilder:
    def __init__(
        self, document: Document, text: str, environ: Mapping[str, str], secrets_optional: bool, fast: bool
    ) -> None:
        self.document = document
        self.text = text
        self.environ = environ
        self.secrets_optional = secrets_optional
        self.fast = fast
        self.issues: list[ConfigIssue] = []

    def build(self, running: Agency | None) -> Agency:
        document = self.document
        data = document.data
        assert isinstance(data, dict)  # parse_config found `tenants` in it
        for key in data:
            if key not in AGENCY_KEYS:
                hint = did_you_mean(str(key), list(AGENCY_KEYS))
                self.issues.append(document.issue((key,), f"unknown key{hint}: set it in each tenant's config"))
        validator = Validator(document, self.issues)
        server = self.section(validator, data, "server", ServerSettings)
        redis = self.section(validator, data, "redis", RedisSection)
        if data.get("version", 1) != 1:
            self.issues.append(document.issue(("version",), "must be 1"))
        tenants_raw = data.get("tenants")
        if not isinstance(tenants_raw, dict) or not tenants_raw:
            self.issues.append(document.issue(("tenants",), "must be a mapping of tenant ids to their configs"))
            tenants_raw = {}
        elif len(tenants_raw) > MAX_TENANTS:
            self.issues.append(document.issue(("tenants",), f"holds more than {MAX_TENANTS} tenants"))
        for tenant in tenants_raw:
            if not isinstance(tenant, str) or TENANT_ID.fullmatch(tenant) is None:
                message = "is not a tenant id: lower-case letters, digits and inner dashes, at most 63"
                self.issues.append(document.issue(("tenants", str(tenant)), message))
        # Issues in a tenant's part are that tenant's; anything else refuses the whole file.
        self.issues += [issue for issue in document.issues if issue.path[:1] != ("tenants",) or len(issue.path) < 2]
        if self.issues:
            raise ConfigError(self.issues)
        restart_needed: tuple[str, ...] = ()
        if running is not None:
            server, restart_needed = keep_running_server(running.server, server)
        tenants: dict[str, Config] = {}
        errors: dict[str, ConfigError] = {}
        sources: dict[str, TenantSource] = {}
        for tenant, raw in tenants_raw.items():
            scope = TenantScope(
                tenant,
                msgspec.structs.replace(
                    server, path=f"{server.path.rstrip('/')}/{tenant}", webhook_path=f"{server.webhook_path}/{tenant}"
                ),
                redis,
                document.file,
            )
            previous = running.tenants.get(tenant) if running is not None else None
            if previous is not None and (previous.server != scope.server or previous.redis != redis):
                previous = None  # a deployment setting changed: the tenant is built again around it
            try:
                source, config = self.tenant(scope, raw, previous)
            except ConfigError as exc:
                errors[tenant] = exc
                sources[tenant] = self.source_of(tenant, raw)
                continue
            sources[tenant] = source
            tenants[tenant] = config
        return Agency(
            file=document.file,
            version=config_version(self.text),
            server=server,
            redis=redis,
            tenants=tenants,
            errors=errors,
            sources=sources,
            restart_needed=restart_needed,
        )

    def section(self, validator: Validator, data: dict[str, object], name: str, model: type[S]) -> S:
        value = data.get(name)
        converted = validator.convert(value, model, (name,)) if value is not None else INVALID
        return model() if converted is INVALID else converted

    def source_of(self, tenant: str, raw: object) -> TenantSource:
        if isinstance(raw, dict) and isinstance(raw.get("file"), str):
            base = os.path.dirname(os.path.abspath(self.document.file))
            return TenantSource(tenant, os.path.abspath(os.path.join(base, raw["file"])))
        return TenantSource(tenant, None)

    def tenant(self, scope: TenantScope, raw: object, previous: Config | None) -> tuple[TenantSource, Config]:
        path: Path = ("tenants", scope.id)
        if not isinstance(raw, dict):
            message = "must be a mapping: {file: <path>} or the tenant's config inline"
            raise ConfigError([self.document.issue(path, message)])
        source = self.source_of(scope.id, raw)
        if "file" in raw:
            extra = [key for key in raw if key != "file"]
            if extra or source.file is None:
                message = "a tenant in its own file has only `file` (a path relative to this file)"
                raise ConfigError([self.document.issue((*path, str(extra[0]) if extra else "file"), message)])
            if (
                previous is not None
                and previous.files[:1] == (source.file,)
                and current_version(previous) == (previous.version)
            ):
                return source, previous  # its files are unchanged: not read again
            text = read_config_text(source.file)
            config = parse_config(
                text,
                source.file,
                self.environ,
                secrets_optional=self.secrets_optional,
                running=previous,
                fast=self.fast,
                tenant=scope,
            )
            return source, config
        within = Within(self.document, path, raw)
        # Its version: a hash of its part of the file, so an edit to another tenant leaves it unchanged.
        text = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS, default=str).decode()
        unchanged = previous is not None and previous.file == self.document.file and not raw.get("include")
        if unchanged and previous is not None and previous.version == config_version(text):
            return source, previous
        config = build_config(
            within, text, self.environ, scope, secrets_optional=self.secrets_optional, running=previous
        )
        return source, config


def build_config(
    document: Document,
    text: str,
    environ: Mapping[str, str],
    tenant: TenantScope,
    *,
    secrets_optional: bool = False,
    running: Config | None = None,
) -> Config:
    """A tenant's config from its part of the agency file; `text` is what its version hashes."""
    try:
        return ConfigBuilder(document, text, environ, secrets_optional, tenant=tenant).build(running)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError([document.issue((), "nested too deeply to load")]) from None
    except Exception as exc:  # as parse_config: a bug is an invalid tenant, not a crash
        message = f"could not be loaded ({type(exc).__name__}); please report this as a bug"
        raise ConfigError([document.issue((), message)]) from exc


class Within(Document):
    """The part of a document under `prefix`, as a document of its own: paths relative to the part,
    issues located (and named) by their place in the whole file."""

    def __init__(self, whole: Document, prefix: Path, data: object) -> None:
        size = len(prefix)
        super().__init__(
            file=whole.file,
            data=data,
            expanded={path[size:]: text for path, text in whole.expanded.items() if path[:size] == prefix},
            secrets_seen=whole.secrets_seen,
            unset=[(path[size:], name) for path, name in whole.unset if path[:size] == prefix],
            issues=[issue for issue in whole.issues if issue.path[:size] == prefix],
        )
        self.whole = whole
        self.prefix = prefix

    def line_of(self, path: Path) -> int | None:
        return self.whole.line_of(self.prefix + path)

    def issue(self, path: Path, message: str) -> ConfigIssue:
        return ConfigIssue(self.file, self.line_of(path), self.prefix + path, self.scrub(message))
