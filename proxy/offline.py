"""The commands that read the config file alone, with no network: `check` (validate and summarise every tenant)
and `resolve` (which route and answer a call would get)."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import TYPE_CHECKING

from proxy.config import Agency, Config, ConfigError, load_deployment
from proxy.config.redis import redis_url_location
from proxy.numbers import normalize_number

# Each command imports what it needs: `check` of a large file should not pay for the server, httpx and
# asyncio (a tenth of its CPU budget).
if TYPE_CHECKING:
    from proxy.config.snapshot import Match


def _print_errors(path: str, exc: ConfigError) -> None:
    for issue in exc.issues:
        print(f"error: {issue}", file=sys.stderr)
    for warning in exc.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    shown = f", {len(exc.warnings)} warning(s)" if exc.warnings else ""
    print(f"{path}: {len(exc.issues)} error(s){shown}; not loaded", file=sys.stderr)


def _warn(config: Config) -> None:
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def load_deployment_or_report(path: str, *, one_shot: bool = False) -> Config | Agency | None:
    """`one_shot`: for commands that load once and never authenticate anything (check, resolve): an unset
    secret variable is a warning, not an error, and the faster reading may be used (see `load_config`)."""
    try:
        return load_deployment(path, secrets_optional=one_shot, fast=one_shot)
    except ConfigError as exc:
        _print_errors(path, exc)
        return None


def load_config_or_report(path: str, tenant: str | None = None, *, one_shot: bool = False) -> Config | None:
    """One business's config: the file's, or with an agency file the `tenant`'s."""
    loaded = load_deployment_or_report(path, one_shot=one_shot)
    if isinstance(loaded, Agency):
        if tenant is None:
            print(
                f"error: {path} is an agency file: give --tenant (one of {', '.join(loaded.sources)})", file=sys.stderr
            )
            return None
        if tenant in loaded.errors:
            _print_errors(path, loaded.errors[tenant])
            return None
        if tenant not in loaded.tenants:
            print(f"error: no tenant {tenant!r} in {path} (tenants: {', '.join(loaded.sources)})", file=sys.stderr)
            return None
        return loaded.tenants[tenant]
    if loaded is not None and tenant is not None:
        print(f"error: --tenant {tenant}: {path} has no tenants (it is one business's config)", file=sys.stderr)
        return None
    return loaded


def cmd_check(args: argparse.Namespace) -> int:
    loaded = load_deployment_or_report(args.config, one_shot=True)
    if loaded is None:
        return 1
    if isinstance(loaded, Agency):
        return _check_agency(loaded, args)
    config = loaded
    _warn(config)
    _check_summary(config)
    if not config.auth.configured:
        print("warning: no authentication configured: `serve` refuses to start without --insecure", file=sys.stderr)
    if config.redis.url is not None:
        print(f"shared state: Redis at {redis_url_location(str(config.redis.url))}")
        if not config.nango.secret_key:
            # proxy.shared.signing: what replicas share is signed with a key derived from the Nango secret key.
            print("warning: redis without nango.secret_key: the replicas share no routing", file=sys.stderr)
    if args.nango:
        import asyncio

        from proxy.admin import check_nango, run_with_client

        return asyncio.run(run_with_client(config, lambda client: check_nango(config, client)))
    return 0


def _check_summary(config: Config) -> None:
    modes = sorted({route.calendar.mode for route in config.routes})
    name = f"tenant {config.tenant} ({config.file})" if config.tenant is not None else config.file
    print(
        f"{name}: ok (version {config.version}, {len(config.users)} users, {len(config.routes)} routes, "
        f"calendar modes: {', '.join(modes) or '-'})"
    )
    if config.nango.integrations:
        listed = ", ".join(f"{i.id} ({i.provider})" for i in config.nango.integrations)
        note = "; Microsoft users are always served in calendar mode proxy" if config.nango.has_microsoft() else ""
        print(f"nango integrations: {listed}{note}")
    if (tags := config.nango.tag_routing) is not None:
        keys = ", ".join(f"{role}={key}" for role, key in tags.keys)
        if config.nango.secret_key is None:
            # What `serve` does with this file in this environment: no Nango client, so no tag is ever read.
            print(f"tag routing: off: nango.secret_key is empty, so no line is routed by connection tags ({keys})")
        else:
            print(f"tag routing: on ({keys}); tagged lines are routed after YAML rules, before a YAML default")


def _check_agency(agency: Agency, args: argparse.Namespace) -> int:
    """Every tenant checked; every error of every tenant listed, each with its file and line."""
    for tenant, config in agency.tenants.items():
        _warn(config)
        _check_summary(config)
        if not config.auth.configured:
            print(f"error: tenant {tenant}: no Vapi authentication configured (auth)", file=sys.stderr)
    for issue in agency.issues:
        print(f"error: {issue}", file=sys.stderr)
    unauthenticated = [tenant for tenant, config in agency.tenants.items() if not config.auth.configured]
    if agency.redis.url is not None:
        print(f"shared state: Redis at {redis_url_location(str(agency.redis.url))}, a key prefix per tenant")
    failed = len(agency.errors) + len(unauthenticated)
    print(f"{agency.file}: {len(agency.sources) - failed}/{len(agency.sources)} tenants ok")
    if failed:
        return 1
    if args.nango:
        import asyncio

        from proxy.admin import check_nango, run_with_client

        worst = 0
        for config in agency.tenants.values():
            print(f"tenant {config.tenant}:")
            worst = max(worst, asyncio.run(run_with_client(config, functools.partial(check_nango, config))))
        return worst
    return 0


async def _with_service(config: Config, message: dict[str, object]) -> dict[str, object]:
    import httpx

    from proxy.metrics import Metrics
    from proxy.nango.client import NangoClient
    from proxy.nango.directory import ConnectionDirectory
    from proxy.vapi.service import CallService

    metrics = Metrics()
    async with httpx.AsyncClient() as http:
        client = NangoClient(http, config.nango, metrics) if config.nango.secret_key else None
        directory = ConnectionDirectory(client, config.nango, metrics)
        service = CallService(directory, metrics, http=http)
        resolution = await service.resolve(config, message)
        await directory.aclose()
    route = resolution.match.route if resolution.match is not None else None
    warnings = []
    if route is not None and route.calendar.mode == "proxy" and config.nango.secret_key is None:
        warnings.append(
            "calendar mode proxy without nango.secret_key: the tools reach Google Calendar through Nango, so every "
            "tool call of this call would answer that the calendar is not connected"
        )
    return {
        "rule": resolution.rule,
        "route_source": resolution.route_source or _yaml_source(config, resolution.match),
        "user": route.user.id if route is not None else None,
        # A Microsoft calendar is always served in proxy mode (Vapi's native calendar tools are Google's).
        "calendar_mode": (
            "proxy" if resolution.provider == "microsoft" else route.calendar.mode if route is not None else None
        ),
        "provider": resolution.provider or None,
        "connection_source": resolution.connection_source,
        "connection_detail": resolution.connection_detail or None,
        "outcome": resolution.outcome,
        "reason": resolution.reason,
        "response": resolution.answer,
        "warnings": warnings,
    }


def resolve_message(to: str | None, caller: str | None, phone_number_id: str | None) -> dict[str, object]:
    """A minimal assistant-request message, shaped like Vapi's, for the given call."""
    call: dict[str, object] = {"id": "resolve-cli", "type": "inboundPhoneCall"}
    message: dict[str, object] = {"type": "assistant-request", "call": call}
    if to is not None or phone_number_id is not None:
        phone_number: dict[str, object] = {}
        if to is not None:
            phone_number["number" if normalize_number(to) else "sipUri"] = to
        if phone_number_id is not None:
            phone_number["id"] = phone_number_id
            call["phoneNumberId"] = phone_number_id
        message["phoneNumber"] = phone_number
    if caller is not None:
        message["customer"] = {"number" if normalize_number(caller) else "sipUri": caller}
    return message


def _yaml_source(config: Config, match: Match | None) -> str | None:
    """Where a YAML route's matching key sits: file:line (key path)."""
    from proxy.admin import yaml_location

    if match is None:
        return None
    keys = match.route.keys
    kind = {"from+to": "from", "from+phone_number_id": "from"}.get(match.rule, match.rule)
    path = keys.default_path if match.rule == "default" else next((e.path for e in keys.entries if e.kind == kind), ())
    return yaml_location(config, path, keys.file)


def cmd_resolve(args: argparse.Namespace) -> int:
    config = load_config_or_report(args.config, args.tenant, one_shot=True)
    if config is None:
        return 1
    if args.to is None and args.phone_number_id is None and args.caller is None:
        print("error: give at least one of --to, --phone-number-id, --from", file=sys.stderr)
        return 2
    _warn(config)
    import asyncio

    import orjson

    report = asyncio.run(_with_service(config, resolve_message(args.to, args.caller, args.phone_number_id)))
    if args.response_only:
        report = report["response"]  # type: ignore[assignment]
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
