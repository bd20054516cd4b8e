"""Generated inputs for the benchmark: a routing file of N users and the signed requests wrk sends.

User i is `u{i:06d}`, reached on the called number `+1650{2000000 + i:07d}` (any i < 8,000,000), and
in Nango owns the connection `conn-u{i:06d}` (see `fake_nango.py`, which derives the same names).
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from proxy.secret import Secret
from proxy.vapi.auth import HmacPlan, hmac_signature

ROOT = Path(__file__).resolve().parent.parent
PSTN_FIXTURE = ROOT / "tests" / "fixtures" / "vapi" / "assistant-request.pstn.json"

VAPI_SECRET = "bench-vapi-secret-4c1d9e"
HMAC_SECRET = "bench-hmac-key-7a2f0b"
NANGO_SECRET = "bench-nango-secret-key"
HMAC_PLAN = HmacPlan(secrets=(Secret(HMAC_SECRET),), tolerance_seconds=3600.0)

TEMPLATE = """\
templates:
  default:
    name: "{{business_name}} receptionist"
    firstMessage: "Thanks for calling {{business_name}}, this is {{user_name}}'s assistant. How can I help?"
    model:
      provider: openai
      model: gpt-4o
      temperature: 0.3
      messages:
        - role: system
          content: >-
            You are the friendly phone receptionist for {{user_name}} at {{business_name}}.
            Keep answers short: this is a phone call.
    voice: {provider: vapi, voiceId: Elliot}
    transcriber: {provider: deepgram, model: nova-3, language: en}
    endCallMessage: "Thanks for calling, goodbye!"
    maxDurationSeconds: 900
"""

TIMEZONES = ("America/New_York", "America/Los_Angeles", "Europe/London", "America/Chicago")


def user_id(i: int) -> str:
    return f"u{i:06d}"


def called_number(i: int) -> str:
    return f"+1650{2_000_000 + i:07d}"


def connection_id(i: int) -> str:
    return f"conn-{user_id(i)}"


@dataclass(frozen=True)
class RoutingOptions:
    users: int = 10_000
    fixed_ids: bool = False  # connection_id in the file: no Nango lookup at all
    nango_url: str = "http://127.0.0.1:9"
    index_refresh_seconds: float = 300.0  # 0: every cold user is one Nango request
    deadline_seconds: float = 4.0
    read_timeout: float = 2.5
    connect_timeout: float = 1.0
    # "flow": each user and route on one line, as a generator would write them; "block": one key per line,
    # as config.example.yaml and most hand-kept files are (about 1.7 times the lines to parse).
    style: str = "flow"


def routing_yaml(options: RoutingOptions) -> str:
    """The routing file. Users and routes are flow-style one-liners, as a generator would write them."""
    lines = [
        "version: 1",
        "server:",
        f"  deadline_seconds: {options.deadline_seconds}",
        "  shutdown_delay_seconds: 0",  # the benchmark stops its servers with SIGINT: no drain to wait for
        "auth:",
        '  vapi_secrets: ["${VAPI_SERVER_SECRET}"]',
        "  hmac:",
        '    secrets: ["${VAPI_HMAC_SECRET}"]',
        f"    tolerance_seconds: {HMAC_PLAN.tolerance_seconds}",
        "nango:",
        f"  base_url: {options.nango_url}",
        '  secret_key: "${NANGO_SECRET_KEY}"',
        f"  index_refresh_seconds: {options.index_refresh_seconds}",
        f"  read_timeout: {options.read_timeout}",
        f"  connect_timeout: {options.connect_timeout}",
        "timezone: America/New_York",
        "variables: {business_name: Bayview Health}",
        TEMPLATE.rstrip(),
        "fallbacks:",
        '  unknown_number: {action: reject, message: "This number is not in service."}',
        "  no_calendar: {action: take_message}",
        '  error: {action: transfer, number: "+1 415 555 0199"}',
        "users:",
    ]
    block = options.style == "block"
    for i in range(options.users):
        zone = TIMEZONES[i % len(TIMEZONES)]
        if block:
            lines += [f"  - id: {user_id(i)}", f'    name: "User {i}"', f"    timezone: {zone}"]
            if options.fixed_ids:
                lines.append(f"    connection_id: {connection_id(i)}")
        else:
            fixed = f", connection_id: {connection_id(i)}" if options.fixed_ids else ""
            lines.append(f'  - {{id: {user_id(i)}, name: "User {i}", timezone: {zone}{fixed}}}')
    lines.append("routes:")
    for i in range(options.users):
        if block:
            lines += [f'  - to: "{called_number(i)}"', f"    user: {user_id(i)}"]
        else:
            lines.append(f'  - {{to: "{called_number(i)}", user: {user_id(i)}}}')
    return "\n".join(lines) + "\n"


def environment() -> dict[str, str]:
    """What the routing file's ${...} references resolve to."""
    return {"VAPI_SERVER_SECRET": VAPI_SECRET, "VAPI_HMAC_SECRET": HMAC_SECRET, "NANGO_SECRET_KEY": NANGO_SECRET}


def request_body(i: int, fixture: dict[str, object]) -> bytes:
    """The PSTN fixture, called on user i's number, with a distinct call id."""
    body = copy.deepcopy(fixture)
    message = body["message"]
    assert isinstance(message, dict)
    message["phoneNumber"]["number"] = called_number(i)
    message["phoneNumber"]["id"] = f"pn-{i:06d}"  # unrouted: the call is routed by its called number
    message["call"]["phoneNumberId"] = f"pn-{i:06d}"
    message["call"]["id"] = f"0198c3a1-5e2f-7d41-9b8e-{i:012d}"
    return orjson.dumps(body)


def write_requests(path: Path, users: list[int], *, auth: str, url: str) -> None:
    """One request per line for `bench/assistant_request.lua`: header lines, a blank tab, the body.

    Format per line: `name: value<TAB>name: value<TAB><TAB>body` (compact JSON never holds a raw tab).
    HMAC signatures carry the time they were made; the routing file accepts them for an hour.
    """
    fixture = json.loads(PSTN_FIXTURE.read_text())
    timestamp = str(int(time.time()))
    with path.open("wb") as out:
        for i in users:
            body = request_body(i, fixture)
            headers = ["Content-Type: application/json"]
            if auth == "hmac":
                signature = hmac_signature(HMAC_PLAN, Secret(HMAC_SECRET), body=body, timestamp=timestamp, url=url)
                headers += [f"X-Signature: {signature}", f"X-Timestamp: {timestamp}"]
            else:
                headers.append(f"X-Vapi-Secret: {VAPI_SECRET}")
            out.write("\t".join(headers).encode() + b"\t\t" + body + b"\n")


def user_order(users: int, *, subset: int | None = None, seed: int = 7) -> list[int]:
    """Every user once, shuffled (or the first `subset` of them), in the order wrk cycles through."""
    order = list(range(users if subset is None else min(subset, users)))
    random.Random(seed).shuffle(order)
    return order
