"""The admin commands that talk to Nango: connect-link, connections, assign, numbers (see docs/onboarding.md)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from proxy.config import Config, ConfigError, read_config_text
from proxy.config.yamlsource import Path, format_path, parse_document
from proxy.numbers import mask_number

# The CLI builds its parser from this module for every command: the Nango client (httpx, asyncio) is
# imported only by the commands that talk to Nango, so `check` does not pay for it.
if TYPE_CHECKING:
    from proxy.nango.client import Connection, NangoClient
    from proxy.nango.index import ConnectionIndex

__all__ = ["add_commands", "add_tenant_option", "check_nango", "run_with_client", "yaml_location"]

Loader = Callable[[str, str | None], Config | None]  # (file, tenant of an agency file) -> the config


async def run_with_client(config: Config, work: Callable[[NangoClient], Awaitable[int]]) -> int:
    import httpx

    from proxy.metrics import Metrics
    from proxy.nango.client import NangoClient, NangoError
    from proxy.nango.onboarding import OnboardingError

    if config.nango.secret_key is None:
        print("error: nango.secret_key is empty: set NANGO_SECRET_KEY", file=sys.stderr)
        return 1
    async with httpx.AsyncClient() as http:
        client = NangoClient(http, config.nango, Metrics())
        try:
            return await work(client)
        except (NangoError, OnboardingError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1


async def _index(client: NangoClient) -> ConnectionIndex:
    from proxy.nango.index import ConnectionIndex

    index = ConnectionIndex()
    async for page in client.list_connections_pages():
        for conn in page:
            index.add(conn)
    return index


async def connect_link(config: Config, args: argparse.Namespace, client: NangoClient) -> int:
    from proxy.nango.onboarding import create_connect_session, routing_tags

    user = config.users.get(args.user)
    lines = routing_tags(config.nango.tag_routing, args.number, args.phone_number_id)
    if user is None and not lines:
        print(f"error: no user {args.user!r} in {config.file}; give --number to onboard by tags", file=sys.stderr)
        return 1
    integration = args.integration or config.nango.integration_id
    if integration not in config.nango.integration_ids():
        known = ", ".join(config.nango.integration_ids())
        print(f"error: {integration!r} is not one of the config's Nango integrations ({known})", file=sys.stderr)
        return 1
    user_tag = user.nango_user_id if user is not None else args.user
    name = args.name or (user.name if user is not None else None)
    email = args.email or (user.email if user is not None else None)
    session = await create_connect_session(client, user_tag, email, name, lines, integration)
    print(session.connect_link)
    print(f"integration {integration} ({config.nango.kind_of(integration)})", file=sys.stderr)
    print(f"expires at {session.expires_at}; send this link to {name or args.user}", file=sys.stderr)
    return 0


async def connections(config: Config, args: argparse.Namespace, client: NangoClient) -> int:
    from proxy.nango.client import pick_connection
    from proxy.nango.index import ConnectionIndex

    by_user: dict[str, list[Connection]] = {}
    index = ConnectionIndex()
    async for page in client.list_connections_pages():
        for found_connection in page:
            index.add(found_connection)
            if found_connection.user_id is not None:
                by_user.setdefault(found_connection.user_id, []).append(found_connection)
    missing = 0
    for user in config.users.values():
        found = by_user.get(user.nango_user_id, [])
        usable = pick_connection(found)
        kind = "-"
        if user.connection_id is not None:
            state, detail = "fixed", user.connection_id
        elif usable is not None:
            state, detail = "connected", usable.connection_id
            kind = config.nango.kind_of(usable.integration, usable.provider)
        elif found:
            state, detail = "error", f"{found[0].connection_id} needs reconnecting"
            missing += 1
        else:
            tenant = f" --tenant {config.tenant}" if config.tenant is not None else ""
            state, detail = "missing", f"run: vapi-calendar-proxy connect-link{tenant} --user {user.id}"
            missing += 1
        print(f"{user.id}\t{user.name}\t{state}\t{detail}\t{kind}")
    total = len(config.users)
    if config.nango.tag_routing is not None:
        tagged = _tag_routed_users(config, index)
        for user_id, (conn, lines) in sorted(tagged.items()):
            name = conn.route.name if conn.route is not None and conn.route.name else user_id
            state, detail = "connected", conn.connection_id
            if not conn.healthy:
                state, detail = "error", f"{conn.connection_id} needs reconnecting"
                missing += 1
            kind = config.nango.kind_of(conn.integration, conn.provider)
            print(f"{user_id}\t{name}\t{state}\t{detail} (tags: {', '.join(lines)})\t{kind}")
        total += len(tagged)
        print(f"{total - missing}/{total} users can book ({len(tagged)} routed by connection tags)", file=sys.stderr)
        _print_conflicts(index)
    else:
        print(f"{total - missing}/{total} users can book", file=sys.stderr)
    return 0


def _tag_routed_users(config: Config, index: ConnectionIndex) -> dict[str, tuple[Connection, list[str]]]:
    """Users that only connection tags route (a YAML user is listed as such): user -> (the connection that
    routes their lines, those lines)."""
    yaml_users = {user.nango_user_id for user in config.users.values()}
    tagged: dict[str, tuple[Connection, list[str]]] = {}
    for kind in ("to", "phone_number_id"):
        for value in sorted(index.lines(kind)):
            conn = index.line(kind, value)
            if conn is None or conn.user_id in yaml_users:
                continue
            tagged.setdefault(conn.user_id or conn.connection_id, (conn, []))[1].append(value)
    return tagged


def _print_conflicts(index: ConnectionIndex) -> int:
    conflicts = list(index.conflicts())
    for conflict in conflicts:
        losers = ", ".join(c.connection_id for c in conflict.losers)
        print(
            f"conflict: {conflict.kind} {conflict.value} is claimed by {conflict.winner.connection_id} (routes it) "
            f"and {losers}; fix with: vapi-calendar-proxy assign",
            file=sys.stderr,
        )
    return len(conflicts)


async def numbers(config: Config, args: argparse.Namespace, client: NangoClient) -> int:
    if config.nango.tag_routing is None:
        print("error: nango.tag_routing is not configured: no line is routed by tags", file=sys.stderr)
        return 1
    index = await _index(client)
    lines = sorted(
        (kind, value, conn)
        for kind in ("to", "phone_number_id")
        for value, conn in ((v, index.line(kind, v)) for v in index.lines(kind))
        if conn is not None
    )
    # The file too: routes from several files (include:) share names like routes[0].
    yaml_lines: dict[tuple[str, str], str] = {
        (entry.kind, entry.value): f"{route.name} ({route.keys.file or config.file})"
        for route in config.routes
        for entry in route.keys.entries
    }
    for kind, value, conn in lines:
        state = "ok" if conn.healthy else "needs reconnecting"
        shadow = yaml_lines.get((kind, value))
        if shadow is not None:
            state = f"shadowed by YAML {shadow}"
        provider = config.nango.kind_of(conn.integration, conn.provider)
        print(f"{kind}\t{value}\t{conn.connection_id}\t{conn.user_id or '-'}\t{state}\t{provider}")
    conflicts = _print_conflicts(index)
    print(f"{_counted(len(lines), 'line')} routed by tags, {conflicts} conflict(s)", file=sys.stderr)
    return 0


def _counted(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def yaml_location(config: Config, path: Path, file: str = "") -> str:
    """file:line (key path) of a key of `file`, one of the config's files (by default its main file)."""
    file = file or config.file
    try:
        document = parse_document(read_config_text(file), file, os.environ)
        if config.tenant is not None and isinstance(document.data, dict) and "tenants" in document.data:
            path = ("tenants", config.tenant, *path)  # a tenant inline in the agency file
        line = document.line_of(path)
    except ConfigError:
        line = None
    return f"{file}:{line or '?'} ({format_path(path)})"


async def check_nango(config: Config, client: NangoClient) -> int:
    """`check --nango`: where each route comes from. YAML routes by file:line; lines routed by connection
    tags by Nango connection id and tag; YAML routes that shadow a tagged line; conflicts. 1 on a conflict."""
    routing = config.nango.tag_routing
    print(f"yaml: {len(config.routes)} routes from {config.file}")
    if routing is None:
        print("tags: tag routing off (nango.tag_routing)")
        return 0
    index = await _index(client)
    tags = {"to": routing.number_tag, "phone_number_id": routing.phone_number_id_tag}
    yaml_keys = {
        (entry.kind, entry.value): (entry.path, route.keys.file)
        for route in config.routes
        for entry in route.keys.entries
    }
    routed = shadowed = 0
    for kind in ("to", "phone_number_id"):
        for value in sorted(index.lines(kind)):
            conn = index.line(kind, value)
            assert conn is not None
            source = f"nango connection {conn.connection_id}, tag {tags[kind]}={value}"
            if (kind, value) in yaml_keys:
                shadowed += 1
                print(f"shadowed: {kind} {value}: {yaml_location(config, *yaml_keys[kind, value])} wins over {source}")
            else:
                routed += 1
    conflicts = _print_conflicts(index)
    print(
        f"tags: {_counted(routed, 'line')} routed by Nango connection tags, {shadowed} shadowed by YAML, "
        f"{conflicts} conflict(s)"
    )
    return 1 if conflicts else 0


async def assign(config: Config, args: argparse.Namespace, client: NangoClient) -> int:
    from proxy.nango.onboarding import assign_line

    done = await assign_line(client, args.connection, args.number, args.phone_number_id)
    shown = ", ".join(f"{k}={mask_number(v) if v.startswith('+') else v}" for k, v in sorted(done.tags.items()))
    print(f"{done.connection_id}: {shown}")
    for other in done.moved_from:
        print(f"removed from {other}", file=sys.stderr)
    print(
        "other replicas see the change at their next index refresh (nango.index_refresh_seconds); "
        "Nango sends no webhook for tag changes",
        file=sys.stderr,
    )
    return 0


def _command(
    load: Loader, run: Callable[[Config, argparse.Namespace, NangoClient], Awaitable[int]]
) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        import asyncio

        config = load(args.config, args.tenant)
        if config is None:
            return 1
        return asyncio.run(run_with_client(config, lambda client: run(config, args, client)))

    return handler


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser], load: Loader) -> None:
    """Register the Nango admin commands on the CLI's subparsers."""
    link = commands.add_parser(
        "connect-link",
        help="create a Nango Connect link for a user to connect a calendar",
        description="Create a Nango Connect session for a user and print the link to send (needs NANGO_SECRET_KEY). "
        "With --number the session carries the routing tags: the user needs no YAML entry.",
    )
    link.add_argument("--config", required=True, metavar="FILE", help="routing YAML file")
    add_tenant_option(link)
    link.add_argument("--user", required=True, metavar="ID", help="user id (from the config, or new with --number)")
    _line_options(link)
    link.add_argument("--name", help="display name (tag end_user_display_name)")
    link.add_argument("--email", help="email (tag end_user_email)")
    link.add_argument(
        "--integration",
        metavar="ID",
        help="the Nango integration to connect through (one of nango.integrations; default: the first)",
    )
    link.set_defaults(handler=_command(load, connect_link))

    listing = commands.add_parser(
        "connections",
        help="list users and the state of their calendar connection",
        description="List every user of the config: connected, fixed, missing or in error in Nango; "
        "with tag routing, also lines claimed by more than one connection.",
    )
    listing.add_argument("--config", required=True, metavar="FILE", help="routing YAML file")
    add_tenant_option(listing)
    listing.set_defaults(handler=_command(load, connections))

    move = commands.add_parser(
        "assign",
        help="put a Vapi line on a connection (or move it there) by its tags",
        description="Read, merge and write the connection's Nango tags (PATCH replaces them all), then take the "
        "line off every other connection claiming it.",
    )
    move.add_argument("--config", required=True, metavar="FILE", help="routing YAML file")
    add_tenant_option(move)
    move.add_argument("--connection", required=True, metavar="ID", help="Nango connection id")
    _line_options(move)
    move.set_defaults(handler=_command(load, assign))

    owners = commands.add_parser(
        "numbers",
        help="list who owns which Vapi line by connection tags",
        description="List every line routed by connection tags: kind, value, connection, user, state; "
        "then the conflicts.",
    )
    owners.add_argument("--config", required=True, metavar="FILE", help="routing YAML file")
    add_tenant_option(owners)
    owners.set_defaults(handler=_command(load, numbers))


def add_tenant_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", metavar="ID", help="with an agency file: the tenant (its config, its Nango)")


def _line_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--number", metavar="E164", help="the Vapi number (tag nango.tag_routing.number_tag)")
    parser.add_argument(
        "--phone-number-id", metavar="ID", help="Vapi's phone-number id (tag nango.tag_routing.phone_number_id_tag)"
    )
