"""`vapi-calendar-proxy` (and `python -m proxy`): serve, check, resolve, connect-link, connections."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxy import __version__
from proxy.admin import add_commands, add_tenant_option
from proxy.config import Agency
from proxy.offline import cmd_check, cmd_resolve, load_config_or_report, load_deployment_or_report


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy.server import serve
    from proxy.startup import StartupListener

    # One worker: the port opens first, so probes get /livez 200 and /readyz 503 while a large file loads.
    try:
        listener = StartupListener(args.host, args.port) if args.workers == 1 else None
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    config = load_deployment_or_report(args.config)
    if isinstance(config, Agency):
        config = _servable_agency(config, args)
    elif config is not None and not config.auth.configured and not args.insecure:
        print(
            "error: no Vapi authentication configured (auth.vapi_secrets, auth.bearer or auth.hmac); "
            "refusing to start. For local experiments only, pass --insecure.",
            file=sys.stderr,
        )
        config = None
    if config is None:
        if listener is not None:
            listener.close()
        return 1
    from proxy.logs import configure_logging
    from proxy.reload import release_memory

    release_memory(collect=True)
    configure_logging(args.log_format, args.log_level.upper())
    return serve(
        config,
        host=args.host,
        port=args.port,
        workers=args.workers,
        insecure=args.insecure,
        log_format=args.log_format,
        log_level=args.log_level.upper(),
        listener=listener,
    )


def _servable_agency(agency: Agency, args: argparse.Namespace) -> Agency | None:
    """An agency starts only with every tenant valid and authenticated (a reload may later keep one
    tenant's last good config; at start there is none), and in one worker process per replica."""
    from proxy.reload import NO_AUTH

    if not args.insecure:
        agency = agency.without_unauthenticated(NO_AUTH)
    if agency.errors:
        for issue in agency.issues:
            print(f"error: {issue}", file=sys.stderr)
        print(f"{agency.file}: {len(agency.errors)} tenant(s) invalid; not started", file=sys.stderr)
        return None
    if args.workers > 1:
        print("error: an agency file is served by one worker per replica: scale with replicas", file=sys.stderr)
        return None
    return agency


def cmd_schema(args: argparse.Namespace) -> int:
    from proxy.config.schema import json_schema_text

    sys.stdout.write(json_schema_text())
    return 0


DESCRIPTION = """\
A Vapi server URL: answers each inbound call's assistant-request with the assistant of the user the
call is for, carrying that user's Google Calendar (a Nango connection)."""

EPILOG = """\
examples:
  vapi-calendar-proxy serve --config config.yaml --host 0.0.0.0 --port 8080
  vapi-calendar-proxy check --config config.yaml
  vapi-calendar-proxy resolve --config config.yaml --to "+1 415 555 0100"

Secrets come from the environment (${VAR} in the config), e.g. VAPI_SERVER_SECRET, NANGO_SECRET_KEY.
"command --help" shows a command's options."""

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _port(text: str) -> int:
    port = _integer(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535)")
    return port


def _positive(text: str) -> int:
    number = _integer(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return number


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _version() -> str:
    return f"%(prog)s {__version__} (Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vapi-calendar-proxy",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    serve = commands.add_parser("serve", help="run the proxy", description="Run the proxy (an ASGI server).")
    serve.add_argument("--config", required=True, metavar="FILE", help="routing YAML file (reloaded when it changes)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 in a container (default: %(default)s)"
    )
    serve.add_argument("--port", type=_port, default=8080, help="TCP port to listen on (default: %(default)s)")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="worker processes, each with its own cache and Nango index; keep 1 in Kubernetes (default: %(default)s)",
    )
    serve.add_argument("--insecure", action="store_true", help="allow running with no authentication (local only)")
    serve.add_argument(
        "--log-format",
        choices=("json", "text"),
        default="json",
        help="json: one object a line, for log pipelines; text: for people (default: %(default)s)",
    )
    serve.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default="info",
        help="least severe level logged (default: %(default)s)",
    )
    serve.set_defaults(handler=cmd_serve)

    check = commands.add_parser(
        "check",
        help="validate a config file; exit 1 with located errors",
        description="Validate a config file exactly as serve and a reload would; exit 1 listing every error.",
    )
    check.add_argument("--config", required=True, metavar="FILE", help="routing YAML file")
    check.add_argument(
        "--nango",
        action="store_true",
        help="also list where routes come from in Nango (connection tags), YAML shadowing and conflicts",
    )
    check.set_defaults(handler=cmd_check)

    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of the config file (for editors)",
        description="Print the JSON Schema of the routing file: editors validate and complete against it.",
    )
    schema.set_defaults(handler=cmd_schema)

    resolve = commands.add_parser(
        "resolve",
        help="print the answer a call would get, and which rule matched",
        description="Print the answer a call would get, the rule that matched and where the connection id came from.",
    )
    resolve.add_argument("--config", required=True, metavar="FILE", help="routing YAML file")
    resolve.add_argument("--to", metavar="NUMBER", help="called number, any common format (or a SIP URI)")
    resolve.add_argument("--from", dest="caller", metavar="NUMBER", help="caller's number")
    resolve.add_argument("--phone-number-id", metavar="ID", help="Vapi phoneNumberId of the called line")
    resolve.add_argument("--response-only", action="store_true", help="print only the JSON Vapi would receive")
    add_tenant_option(resolve)
    resolve.set_defaults(handler=cmd_resolve)

    add_commands(commands, load_config_or_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
